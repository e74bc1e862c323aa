"""Capture throughput against the bare forward pass, on the same tokens, in one run.

    .venv/bin/python scripts/bench_capture.py [--model SPEC] [--hook NAME ...] [--tokens N]

Model: --model if given, else the demo model at artifacts/demo/model if present, else a freshly
booted model of the default size (1 layer, d_model 128, d_mlp 512, context 128, vocab 4096).
Tokens: random ids, the same for every measurement.

Timed, each the best of --repeats interleaved runs over all the tokens:
  bare (stop_at_layer)  the forward pass with stop_at_layer = deepest hooked block + 1;
  bare (stop at hook)   the forward pass ended right after the last hooked activation, as capture does
                        (for a hook in the last block this skips the final norm and unembedding);
  capture to disk       interp.capture.capture_to_disk into a temporary folder: hooks, flattening,
                        NaN check, shards written, hashed and fsync-ed, manifests.
The ratio that matters is capture / bare (stop at hook): what capturing costs on top of the same pass.
CPU microseconds per token (all threads) are printed too: on a shared, loaded machine they show what
each step costs when wall time does not.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from interp.capture import ActivationHooks, capture_to_disk, plan_capture

DEMO_MODEL = Path("artifacts/demo/model")
DEFAULT_MODEL = dict(d_model=128, d_head=32, n_heads=4, n_layers=1, d_mlp=512, n_ctx=128, d_vocab=4096,
                     act_fn="gelu", normalization_type="LN", seed=0)


def load_bridge(spec: str | None):
    """(bridge, context_length, vocab size, description) for --model, the demo model or a fresh default one."""
    if spec is None and DEMO_MODEL.is_dir():
        spec = str(DEMO_MODEL)
    if spec is not None:
        from interp.model import load_model

        loaded = load_model(spec)
        return loaded.bridge, loaded.context_length, loaded.bridge.cfg.d_vocab, spec
    import transformer_lens.model_bridge.sources.native  # noqa: F401  (registers boot_native)
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_native(dict(DEFAULT_MODEL))
    return bridge, DEFAULT_MODEL["n_ctx"], DEFAULT_MODEL["d_vocab"], "fresh default-size model"


def cpu_seconds() -> float:
    """CPU time of this process so far, all threads, user + system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def best_times(fns: dict, repeats: int) -> dict[str, tuple[float, float]]:
    """(wall, CPU) seconds of the fastest of `repeats` runs of each fn; runs interleave so that load
    drifts hit all alike. CPU time counts every thread, so it shows the work a step adds even on a
    loaded machine, where wall time mostly shows the load."""
    best = {name: (float("inf"), float("inf")) for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            wall, cpu = time.perf_counter(), cpu_seconds()
            fn()
            run = (time.perf_counter() - wall, cpu_seconds() - cpu)
            best[name] = min(best[name], run)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model spec (default: demo model, else a fresh default-size one)")
    parser.add_argument("--hook", dest="hooks", action="append", default=None,
                        help="hook to capture; repeat for several (default: blocks.0.mlp.hook_post)")
    parser.add_argument("--tokens", type=int, default=2**17,
                        help="tokens per measurement (default 131072: four default shards of a 512-wide float32 hook)")
    parser.add_argument("--shard-tokens", type=int, default=None, help="tokens per shard (default: capture's default)")
    parser.add_argument("--batch-size", type=int, default=32, help="context windows per forward pass")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each measurement, interleaved; the best counts")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    hooks = args.hooks or ["blocks.0.mlp.hook_post"]

    torch.manual_seed(0)
    bridge, ctx, vocab, described = load_bridge(args.model)
    bridge.eval()
    n_windows = max(1, args.tokens // ctx)
    tokens = torch.randint(0, vocab, (n_windows, ctx))
    n_tokens = tokens.numel()
    plan = plan_capture(bridge, hooks, ctx)
    batches = list(tokens.split(args.batch_size))
    print(f"model: {described}; hooks: {', '.join(hooks)}; {n_tokens} tokens in batches of {args.batch_size} x {ctx}; "
          f"torch threads: {torch.get_num_threads()}")

    def bare_stop_at_layer() -> None:
        with torch.inference_mode():
            for batch in batches:
                bridge(batch, stop_at_layer=plan.stop_at_layer)

    def bare_stop_at_hook() -> None:  # the hooks only keep references: no copy, no write
        with ActivationHooks(bridge, plan.hook_names, plan.stop_at_layer) as hooked:
            for batch in batches:
                hooked.run(batch)

    def capture_once() -> None:
        with tempfile.TemporaryDirectory() as out:
            capture_to_disk(bridge, hooks, iter(tokens), out, total_tokens=n_tokens, model_id=described,
                            context_length=ctx, dtype=args.dtype, batch_size=args.batch_size,
                            tokens_per_shard=args.shard_tokens, progress=False)

    bare_stop_at_hook()  # warm-up: allocator, kernels
    seconds = best_times({"bare (stop_at_layer)": bare_stop_at_layer, "bare (stop at hook)": bare_stop_at_hook,
                          "capture to disk": capture_once}, args.repeats)
    rate = {name: n_tokens / wall for name, (wall, _) in seconds.items()}
    print(f"{'':22s} {'tokens/s':>12s} {'CPU us/token':>14s}")
    for name, (wall, cpu) in seconds.items():
        print(f"{name:22s} {rate[name]:12,.0f} {cpu / n_tokens * 1e6:14.1f}")
    print(f"capture / bare (stop at hook):    {rate['capture to disk'] / rate['bare (stop at hook)']:.3f}")
    print(f"capture / bare (stop_at_layer):   {rate['capture to disk'] / rate['bare (stop_at_layer)']:.3f}")
    print(f"load average over the last minute: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
