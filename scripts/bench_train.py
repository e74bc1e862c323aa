"""Benchmark: this trainer's TopK against SAELens, sparsify and dictionary-learning on identical activations.

    .venv/bin/python scripts/bench_train.py [--acts DIR] [--peer-python /work/peers-venv/bin/python]

For each activation source (synthetic from a fixed seed; and a saved dataset with --acts) the same
`steps` training batches and held-out rows are saved once; this trainer runs in this process (with
its default selection_dtype, and also with float32 selection where the default is bfloat16), each
peer in its own environment (`--peer-python`) through `scripts/peers/<peer>_peer.py`, which drives
that library's own training loop. Reported per trainer: tokens/s after `warmup` steps, held-out
FVU = sum (x - x_hat)^2 / sum (x - mean x)^2 (the README's "Metrics") after the same number of steps, held-out L0,
and this trainer's speed ratio to each peer. Also: fp32 (and, where bfloat16 selection is the
default, bf16) matmul GFLOP/s measured here, and the fraction of the peak in the dtype of each
trainer's encoder product that the encoder forward (2 d_in d_sae FLOPs per token) represents.
--profile prints where the time of one step of this trainer goes.

On a GPU: `--device cuda [--autocast bfloat16]` trains this trainer there and measures the GPU's
bf16 matmul rate (best of a square 8192 product and the encoder-shaped one at this batch, d_in and
d_sae); the encoder share of that rate is reported as "% of bf16 peak" (peers keep their own devices).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
PEER_DIR = Path(__file__).resolve().parent / "peers"
sys.path.insert(0, str(PEER_DIR))
from common import TimedBatches, steady_rate  # noqa: E402  (shared with the peer runners)

from sae.architectures.base import TrainState  # noqa: E402
from sae.architectures.topk import TopKSAE  # noqa: E402
from sae.config import TopKConfig, TrainConfig  # noqa: E402
from sae.data import ActivationDataset  # noqa: E402
from sae.distributed import resolve_device  # noqa: E402
from sae.hardware import resolve_selection_dtype, tune_allocator  # noqa: E402
from sae.train import train_sae  # noqa: E402

PEERS = ("sparsify", "saelens", "dictionary_learning")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--acts", help="activation dataset folder: benchmark on it too (real activations)")
    p.add_argument("--peer-python", help="python of an environment with sae-lens, eai-sparsify, dictionary-learning")
    p.add_argument("--peers", default=",".join(PEERS), help="comma list of peers to run")
    p.add_argument("--steps", type=int, default=120, help="training steps of every trainer")
    p.add_argument(
        "--warmup", type=int, default=20, help="steps left out of the timing (>= this trainer's init batches)"
    )
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--d-in", type=int, default=256, help="width of the synthetic activations")
    p.add_argument("--d-sae", type=int, default=4096)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--heldout", type=int, default=32768, help="held-out tokens for the FVU")
    p.add_argument("--threads", type=int, default=None, help="torch threads for every trainer (default: torch's)")
    p.add_argument("--work", help="folder for the saved activations and peer outputs (default: a temp folder)")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--profile", action="store_true", help="print where one step of this trainer spends its time")
    p.add_argument("--skip-ours", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--device",
        default="auto",
        help="device of this trainer: auto (default: cuda when present), cpu, cuda or cuda:N",
    )
    p.add_argument(
        "--autocast",
        default="none",
        choices=["none", "bfloat16", "float16"],
        help="autocast dtype of this trainer's forward pass",
    )
    return p.parse_args()


# --- activations --------------------------------------------------------------------------------
def synthetic(n: int, d_in: int, seed: int, num_features: int = 16384, active: int = 32) -> torch.Tensor:
    """[n, d_in]: each row sums `active` draws (with replacement) from `num_features` fixed random unit
    directions with power-law frequencies (p_i ~ (i + 1)^-0.7) and magnitudes U[0.5, 1.5], plus an
    offset and 5% noise."""
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(num_features, d_in, generator=torch.Generator().manual_seed(12345))
    features /= features.norm(dim=1, keepdim=True)
    offset = 0.5 * torch.randn(d_in, generator=torch.Generator().manual_seed(54321))
    weights = torch.arange(1, num_features + 1, dtype=torch.float64) ** -0.7
    cdf = (weights.cumsum(0) / weights.sum()).float()
    rows = []
    for start in range(0, n, 8192):
        m = min(8192, n - start)
        idx = torch.searchsorted(cdf, torch.rand(m, active, generator=g)).clamp_max(num_features - 1)
        mags = 0.5 + torch.rand(m, active, generator=g)
        x = torch.nn.functional.embedding_bag(idx, features, per_sample_weights=mags, mode="sum")
        rows.append(x + offset + 0.05 * torch.randn(m, d_in, generator=g))
    return torch.cat(rows)


def real(path: str, args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `steps` shuffled batches of a dataset for training and the next rows for held-out."""
    dataset = ActivationDataset(path)
    need = args.steps * args.batch_size + args.heldout
    if dataset.num_tokens < need:
        print(f"note: {path} holds {dataset.num_tokens} tokens, fewer than the {need} asked for; batches repeat")
    stream = dataset.batches(args.batch_size, seed=0, epochs=None)
    train = torch.cat([next(stream) for _ in range(args.steps)])
    heldout = torch.cat([next(stream) for _ in range(math.ceil(args.heldout / args.batch_size))])[: args.heldout]
    return train, heldout


# --- measurements -------------------------------------------------------------------------------
def matmul_peak(threads: int | None, dtype: torch.dtype = torch.float32, repeats: int = 5) -> dict[str, float]:
    """Best GFLOP/s in `dtype` of a square 2048 matmul and of the encoder-shaped one (4096x256 @ 256x4096),
    written into a preallocated output (the rate of the arithmetic, not of fresh memory)."""
    if threads:
        torch.set_num_threads(threads)
    out = {}
    for name, (m, k, n) in {"square_2048": (2048, 2048, 2048), "encoder_shape": (4096, 256, 4096)}.items():
        a, b, c = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype), torch.empty(m, n, dtype=dtype)
        torch.mm(a, b, out=c)
        best = min(_timed(lambda a=a, b=b, c=c: torch.mm(a, b, out=c)) for _ in range(repeats))
        out[name] = 2 * m * k * n / best / 1e9
    out["peak"] = max(out.values())
    return out


def matmul_peak_cuda(device: torch.device, args: argparse.Namespace, repeats: int = 10) -> dict[str, float]:
    """Best bf16 TFLOP/s on the GPU of a square 8192 matmul and of the encoder-shaped one
    (batch x d_in @ d_in x d_sae), timed with CUDA events after a warm-up."""
    out = {}
    shapes = {"square_8192": (8192, 8192, 8192), "encoder_shape": (args.batch_size, args.d_in, args.d_sae)}
    for name, (m, k, n) in shapes.items():
        a = torch.randn(m, k, device=device, dtype=torch.bfloat16)
        b = torch.randn(k, n, device=device, dtype=torch.bfloat16)
        for _ in range(3):
            a @ b
        times = []
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            a @ b
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end) / 1e3)
        out[name] = 2 * m * k * n / min(times) / 1e12
    out["peak"] = max(out.values())
    return out


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def fvu(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    x, x_hat = x.double(), x_hat.double()
    return ((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()).item()


def run_ours(train: torch.Tensor, heldout: torch.Tensor, args: argparse.Namespace, selection: str) -> dict:
    """This trainer with TrainConfig.selection_dtype = `selection` (auto: its default)."""
    timer = TimedBatches(train, args.batch_size)
    cfg = TrainConfig(
        batch_size=args.batch_size,
        steps=len(timer),
        checkpoint_every=0,
        log_every=10**9,
        device=args.device,
        autocast=args.autocast,
        selection_dtype=selection,
    )
    init_batches = math.ceil(cfg.init_tokens / args.batch_size)  # read ahead before the first step
    if args.warmup < init_batches:
        raise SystemExit(
            f"--warmup must be at least {init_batches}: this trainer reads its first {init_batches} "
            "batches before step 0 (activation scale and b_dec)"
        )
    config = TopKConfig(d_in=train.shape[1], d_sae=args.d_sae, k=args.k)
    sae = train_sae([("topk", config)], timer, cfg, None, progress=False)[0]
    with torch.no_grad():
        device = sae.W_enc.device
        x_hat = torch.cat([sae(c.to(device)).cpu() for c in heldout.split(4096)])
        l0 = (
            torch.cat([(sae.encode(c.to(device)) != 0).sum(-1).cpu() for c in heldout.split(4096)])
            .float()
            .mean()
            .item()
        )
    tokens_per_s, seconds, steps = steady_rate(timer.times, args.batch_size, args.warmup)
    used = resolve_selection_dtype(cfg, resolve_device(cfg.device))
    used = str(used or getattr(torch, cfg.dtype)).removeprefix("torch.")
    label = f"monosemantic ({'default: ' if selection == 'auto' else ''}{used} selection)"
    return {
        "trainer": label,
        "selection_dtype": used,
        "default": selection == "auto",
        "tokens_per_s": tokens_per_s,
        "seconds": seconds,
        "timed_steps": steps,
        "heldout_fvu": fvu(heldout, x_hat),
        "heldout_l0": l0,
    }


def run_peer(name: str, data: Path, heldout: torch.Tensor, args: argparse.Namespace) -> dict:
    out = data.parent / f"{data.stem}-{name}"
    cmd = [
        args.peer_python,
        str(PEER_DIR / f"{name}_peer.py"),
        "--data",
        str(data),
        "--out",
        str(out),
        "--batch-size",
        str(args.batch_size),
        "--d-sae",
        str(args.d_sae),
        "--k",
        str(args.k),
        "--warmup",
        str(args.warmup),
    ] + (["--threads", str(args.threads)] if args.threads else [])
    done = subprocess.run(cmd, cwd=PEER_DIR, capture_output=True, text=True)
    if done.returncode != 0:
        return {
            "trainer": name,
            "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}",
        }
    result = json.loads((out / "result.json").read_text())
    x_hat = load_file(str(out / "heldout.safetensors"))["x_hat"]
    return {"trainer": f"{name} {result.pop('version')}", **result, "heldout_fvu": fvu(heldout, x_hat)}


def profile_step(args: argparse.Namespace, d_in: int) -> None:
    """Per-op CPU time of a few of this trainer's TopK steps (forward, backward, Adam, decoder upkeep)."""
    from torch.profiler import ProfilerActivity, profile

    if args.threads:
        torch.set_num_threads(args.threads)
    sae = TopKSAE(TopKConfig(d_in=d_in, d_sae=args.d_sae, k=args.k))
    opt = torch.optim.Adam(sae.parameters(), lr=1e-4, fused=True)
    x = synthetic(args.batch_size, d_in, seed=7)
    x = x * math.sqrt(d_in / x.pow(2).sum(1).mean().item())
    dead = torch.zeros(args.d_sae, dtype=torch.bool)
    selection = resolve_selection_dtype(TrainConfig(), torch.device("cpu"))  # the trainer's default here
    phases = {"forward (train_step)": 0.0, "backward": 0.0, "decoder projection": 0.0, "adam": 0.0, "renormalise": 0.0}

    def step(record: bool) -> None:
        marks = [time.perf_counter()]
        out = sae.train_step(x, TrainState(step=0, total_steps=10, dead_mask=dead, selection_dtype=selection))
        marks.append(time.perf_counter())
        out.total.backward()
        marks.append(time.perf_counter())
        sae.after_backward()
        marks.append(time.perf_counter())
        opt.step()
        marks.append(time.perf_counter())
        sae.after_step()
        opt.zero_grad(set_to_none=True)
        marks.append(time.perf_counter())
        if record:
            for name, a, b in zip(phases, marks, marks[1:]):
                phases[name] += (b - a) * 1e3

    for _ in range(3):
        step(False)
    runs = 5
    for _ in range(runs):
        step(True)
    total = sum(phases.values())
    print(
        f"\nwhere one step goes (batch {args.batch_size}, d_in {d_in}, d_sae {args.d_sae}, k {args.k}, "
        f"selection {selection or torch.float32}; mean of {runs}):"
    )
    for name, ms in phases.items():
        print(f"  {name:24s} {ms / runs:8.1f} ms  {100 * ms / total:5.1f}%")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            step(False)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))


# --- report ---------------------------------------------------------------------------------
def report(source: str, rows: list[dict], peaks: dict, d_in: int, args: argparse.Namespace) -> None:
    """The table of one source. 'default/peer' is the speed ratio of this trainer's default row to each
    other row; the encoder's share is of the fp32 peak, or of the bf16 peak for a bfloat16 selection
    product on the CPU (on CUDA, `peak` is already the GPU's bf16 rate)."""
    ours = next((r for r in rows if r.get("default")), None)
    flops_per_token = 2 * d_in * args.d_sae
    print(
        f"\n{source}: d_in {d_in}, d_sae {args.d_sae}, k {args.k}, batch {args.batch_size}, "
        f"{args.steps} steps ({args.warmup} untimed), {args.heldout} held-out tokens"
    )
    print(
        f"  {'trainer':44s} {'tokens/s':>10s} {'default/peer':>13s} {'held-out FVU':>13s} {'L0':>6s} "
        f"{'encoder % of peak':>18s}"
    )
    for r in rows:
        if "error" in r:
            print(f"  {r['trainer']:44s} failed: {r['error']}")
            continue
        ratio = "" if r is ours or ours is None else f"{ours['tokens_per_s'] / r['tokens_per_s']:.2f}x"
        bf16_peak = r.get("selection_dtype") == "bfloat16" and "bf16" in peaks
        peak = peaks["bf16"]["peak"] if bf16_peak else peaks["peak"]
        share = 100 * r["tokens_per_s"] * flops_per_token / (peak * 1e9)
        print(
            f"  {r['trainer']:44s} {r['tokens_per_s']:10,.0f} {ratio:>13s} {r['heldout_fvu']:13.4f} "
            f"{r['heldout_l0']:6.1f} {share:13.1f}% {'bf16' if bf16_peak else 'fp32':>4s}"
        )
    exact = next((r for r in rows if r.get("selection_dtype") and not r.get("default") and "error" not in r), None)
    if exact is not None:
        others = [r for r in rows if "selection_dtype" not in r and "error" not in r]
        print(
            f"  {exact['trainer']} / peer: "
            + ", ".join(f"{r['trainer']} {exact['tokens_per_s'] / r['tokens_per_s']:.2f}x" for r in others)
        )


def main() -> None:
    args = parse_args()
    peers = [p for p in args.peers.split(",") if p] if args.peer_python else []
    unknown = sorted(set(peers) - set(PEERS))
    if unknown:
        raise SystemExit(f"unknown peer(s) {unknown}; choose from {list(PEERS)}")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_train-"))
    work.mkdir(parents=True, exist_ok=True)
    tune_allocator("keep")  # this trainer runs as under `sae train`
    print(f"torch {torch.__version__}, threads {args.threads or torch.get_num_threads()}; work folder {work}")
    peak = matmul_peak(args.threads)
    print(
        f"fp32 matmul: {peak['square_2048']:.1f} GFLOP/s (2048^3), {peak['encoder_shape']:.1f} GFLOP/s "
        f"(4096x256 @ 256x4096); peak {peak['peak']:.1f}"
    )
    device = resolve_device(args.device)
    if device.type == "cuda":
        gpu = matmul_peak_cuda(device, args)
        print(
            f"{torch.cuda.get_device_name(device)} bf16 matmul: {gpu['square_8192']:.1f} TFLOP/s (8192^3), "
            f"{gpu['encoder_shape']:.1f} TFLOP/s ({args.batch_size}x{args.d_in} @ {args.d_in}x{args.d_sae}); "
            f"the '% of peak' column below is of {gpu['peak']:.1f} TFLOP/s bf16"
        )
        peak = {**peak, "cuda_bf16_tflops": gpu, "peak": gpu["peak"] * 1e3}

    bf16_default = resolve_selection_dtype(TrainConfig(device=args.device), device) is not None
    if bf16_default and device.type == "cpu":
        peak["bf16"] = matmul_peak(args.threads, torch.bfloat16)
        print(
            f"bf16 matmul (the default selection product here): {peak['bf16']['square_2048']:.1f} GFLOP/s (2048^3), "
            f"{peak['bf16']['encoder_shape']:.1f} GFLOP/s (encoder shape); peak {peak['bf16']['peak']:.1f}"
        )
    sources = {
        "synthetic": lambda: (
            synthetic(args.steps * args.batch_size, args.d_in, seed=0),
            synthetic(args.heldout, args.d_in, seed=1),
        )
    }
    if args.acts:
        sources[f"real ({args.acts})"] = lambda: real(args.acts, args)
    results = {"matmul_gflops": peak, "args": vars(args), "sources": {}}
    for source, make in sources.items():
        train, heldout = make()
        data = work / f"{source.split()[0]}.safetensors"
        save_file({"train": train.contiguous(), "heldout": heldout.contiguous()}, str(data))
        rows = []
        if not args.skip_ours:
            for selection in ("auto", "float32") if bf16_default else ("auto",):
                print(f"[{source}] monosemantic, selection_dtype {selection} ...", flush=True)
                rows.append(run_ours(train, heldout, args, selection))
        for peer in peers:
            print(f"[{source}] {peer} ...", flush=True)
            rows.append(run_peer(peer, data, heldout, args))
        report(source, rows, peak, train.shape[1], args)
        results["sources"][source] = rows
    if args.profile:
        profile_step(args, args.d_in)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
