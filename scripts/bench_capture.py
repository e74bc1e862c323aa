"""Capture throughput against the bare forward pass, on the same tokens, in one run.

    .venv/bin/python scripts/bench_capture.py [--model SPEC] [--hook NAME ...] [--tokens N] [--threads T]

Model: --model if given, else the demo model at artifacts/demo/model if present, else a freshly
booted model of the default size (1 layer, d_model 128, d_mlp 512, context 128, vocab 4096).
Tokens: random ids, the same batches for every measurement.

Timed, in --repeats interleaved rounds after a warm-up (one bare pass and one small capture), each
round after the previous one's files are deleted, flushed (os.sync) and left half a second:
  bare (stop at hook)   the forward pass ended right after the last hooked activation, exactly as
                        capture runs it (same hooks, same early stop, same batches); nothing is kept;
  capture to disk       interp.activations.capture.capture_to_disk into a fresh folder: probe pass, hooks,
                        flattening, NaN/Inf check, shards streamed, hashed, fsync-ed and renamed,
                        manifests (deleting the folder afterwards is not timed);
  bare (stop_at_layer)  with --stop-at-layer: the forward pass with stop_at_layer = deepest hooked
                        block + 1 and no hooks, for comparison;
The ratio that matters is capture / bare (stop at hook) in tokens/s. Each round prints wall-clock
tokens/s and CPU microseconds per token, all threads and the main (forward) thread alone.

On a machine whose cores are all busy with other work, a process gets a fixed share of CPU time
however many threads it runs, so wall-clock tokens/s follow total CPU per token and the ratio tends
to bare CPU / capture CPU; hashing (sha256, about 3 ns per byte without SHA instructions) is then
the floor of what capture adds. With a core to spare, the writes thread (checking, hashing, writing)
runs beside the forward pass and the ratio tends to bare / main-thread CPU (with --threads 1).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from interp.activations.capture import capture_to_disk
from interp.activations.hooks import ActivationHooks, plan_capture

DEMO_MODEL = Path("artifacts/demo/model")
DEFAULT_MODEL = dict(
    d_model=128,
    d_head=32,
    n_heads=4,
    n_layers=1,
    d_mlp=512,
    n_ctx=128,
    d_vocab=4096,
    act_fn="gelu",
    normalization_type="LN",
    seed=0,
)


def load_bridge(spec: str | None):
    """(bridge, context_length, vocab size, description) for --model, the demo model or a fresh default one."""
    if spec is None and DEMO_MODEL.is_dir():
        spec = str(DEMO_MODEL)
    if spec is not None:
        from interp.model.transformer import load_model

        loaded = load_model(spec)
        return loaded.bridge, loaded.context_length, loaded.bridge.cfg.d_vocab, spec
    import transformer_lens.model_bridge.sources.native  # noqa: F401  (registers boot_native)
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_native(dict(DEFAULT_MODEL))
    return bridge, DEFAULT_MODEL["n_ctx"], DEFAULT_MODEL["d_vocab"], "fresh default-size model"


def process_cpu_seconds() -> float:
    """CPU time of this process so far, all threads, user + system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(fn) -> tuple[float, float, float]:
    """(wall, process CPU, main-thread CPU) seconds of one call of fn."""
    wall, cpu, main = time.perf_counter(), process_cpu_seconds(), time.thread_time()
    fn()
    return time.perf_counter() - wall, process_cpu_seconds() - cpu, time.thread_time() - main


def settle(seconds: float = 0.5) -> None:
    """Flush the file system and pause, so that the kernel's work on a deleted capture (write-back,
    discards) does not land in the next timed round."""
    os.sync()
    time.sleep(seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model spec (default: demo model, else a fresh default-size one)")
    parser.add_argument(
        "--hook",
        dest="hooks",
        action="append",
        default=None,
        help="hook to capture; repeat for several (default: blocks.0.mlp.hook_post)",
    )
    parser.add_argument(
        "--tokens",
        type=int,
        default=2**17 + 2**14,
        help="tokens per measurement (default 147456: four and a half default shards of a 512-wide "
        "float32 hook, so the last shard is a partial one)",
    )
    parser.add_argument("--shard-tokens", type=int, default=None, help="tokens per shard (default: capture's default)")
    parser.add_argument("--batch-size", type=int, default=32, help="context windows per forward pass")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds of every measurement")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--stop-at-layer", action="store_true", help="also time the bare pass with stop_at_layer")
    parser.add_argument("--out", type=Path, default=None, help="folder for the captures (default: a temporary one)")
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
    print(
        f"model: {described}; hooks: {', '.join(hooks)}; dtype {args.dtype}; {n_tokens} tokens in batches of "
        f"{args.batch_size} x {ctx}; torch intra-op threads: {torch.get_num_threads()}; {os.cpu_count()} CPUs"
    )

    def bare_stop_at_layer() -> None:
        with torch.inference_mode():
            for batch in batches:
                bridge(batch, stop_at_layer=plan.stop_at_layer)

    def bare_stop_at_hook() -> None:  # the hooks only keep references: no copy, no write
        with ActivationHooks(bridge, plan.hook_names, plan.stop_at_layer) as hooked:
            for batch in batches:
                hooked.run(batch)

    root = Path(tempfile.mkdtemp(prefix="bench_capture-", dir=args.out))
    out = root / "capture"

    def capture_once(windows: torch.Tensor = tokens) -> None:
        capture_to_disk(
            bridge,
            hooks,
            iter(windows),
            out,
            total_tokens=windows.numel(),
            model_id=described,
            context_length=ctx,
            dtype=args.dtype,
            batch_size=args.batch_size,
            tokens_per_shard=args.shard_tokens,
            progress=False,
        )

    fns = {"bare (stop at hook)": bare_stop_at_hook, "capture to disk": capture_once}
    if args.stop_at_layer:
        fns["bare (stop_at_layer)"] = bare_stop_at_layer
    try:
        bare_stop_at_hook()  # warm-up: allocator, kernels, writer threads, files
        capture_once(tokens[: 2 * args.batch_size])
        shutil.rmtree(out)
        settle()
        runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in fns}
        print(
            f"{'round':>5s} {'':22s} {'tokens/s':>10s} {'CPU us/tok':>11s} {'main thread':>12s} {'ratio':>7s} "
            f"{'load':>5s}"
        )
        for r in range(args.repeats):
            for name, fn in fns.items():
                runs[name].append(timed(fn))
                shutil.rmtree(out, ignore_errors=True)
                settle()
                wall, cpu, main_cpu = runs[name][-1]
                ratio = ""
                if name.startswith("capture"):
                    ratio = f"{runs['bare (stop at hook)'][-1][0] / wall:7.3f}"
                print(
                    f"{r:5d} {name:22s} {n_tokens / wall:10,.0f} {cpu / n_tokens * 1e6:11.1f} "
                    f"{main_cpu / n_tokens * 1e6:12.1f} {ratio:>7s} {os.getloadavg()[0]:5.1f}",
                    flush=True,
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)

    def rate(name: str, pick) -> float:
        return n_tokens / pick(wall for wall, _, _ in runs[name])

    def per_token(name: str, column: int) -> float:
        return min(run[column] for run in runs[name]) / n_tokens * 1e6

    print(
        f"\nover {args.repeats} rounds    {'best tok/s':>11s} {'median tok/s':>13s} {'min CPU us/tok':>15s} "
        f"{'min main us/tok':>16s}"
    )
    for name in fns:
        print(
            f"{name:22s} {rate(name, min):11,.0f} {rate(name, statistics.median):13,.0f} "
            f"{per_token(name, 1):15.1f} {per_token(name, 2):16.1f}"
        )
    bare, cap = "bare (stop at hook)", "capture to disk"
    round_ratios = [b[0] / c[0] for b, c in zip(runs[bare], runs[cap])]
    print(
        f"capture / bare (stop at hook), tokens/s: best {rate(cap, min) / rate(bare, min):.3f}, "
        f"median {rate(cap, statistics.median) / rate(bare, statistics.median):.3f}, "
        f"per round {', '.join(f'{x:.3f}' for x in round_ratios)}"
    )
    print(
        f"CPU per token, bare / capture: {per_token(bare, 1) / per_token(cap, 1):.3f} (what the ratio tends to when "
        f"every core is busy); bare / capture's main thread: {per_token(bare, 2) / per_token(cap, 2):.3f} (its "
        "estimate "
        f"with a core to spare for the writes thread; meaningful with --threads 1)"
    )
    if args.stop_at_layer:
        print(
            f"capture / bare (stop_at_layer), tokens/s: best {rate(cap, min) / rate('bare (stop_at_layer)', min):.3f}"
        )
    print(f"load average over the last minute: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
