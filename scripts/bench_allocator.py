"""Does glibc allocator tuning earn its place? The same work in fresh processes, interleaved, under
three allocator settings (they are process-wide, so each run is its own process):

    default      glibc as it comes
    keep-freed   large blocks from the heap and freed memory kept (sae.hardware.tune_allocator("keep"),
                 what the training commands apply)
    mmap-1MiB    every block of 1 MiB or more mapped and unmapped (tune_allocator("release"), what
                 `interp analyze` applies)
each set by the GLIBC_TUNABLES equivalent that sae.hardware.GLIBC_TUNABLES gives.

    .venv/bin/python scripts/bench_allocator.py [--rounds 3] [--steps 40] [--analysis-tokens 32768,131072]

Work: TopK training steps (d_in 256, d_sae 4096, k 32, batch 4096, synthetic activations; median
step time after warm-up) and, with --model and --sae (default: the demo's, when built), the analysis
pass at each token count (time, and peak RSS growth over the RSS after loading, which must not grow
with the token count). Prints each run and the ratios to `default` measured in this run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from sae.hardware import GLIBC_TUNABLES  # noqa: E402

SETTINGS = {"default": "", "keep-freed": GLIBC_TUNABLES["keep"], "mmap-1MiB": GLIBC_TUNABLES["release"]}

TRAIN_CHILD = r"""
import json, statistics, sys, time
import torch
from sae.architectures import build_sae
from sae.architectures.base import TrainState
from sae.hardware import resolve_selection_dtype
from sae.config import TrainConfig
steps = int(sys.argv[1])
torch.manual_seed(0)
sae = build_sae("topk", d_in=256, d_sae=4096, k=32)
opt = torch.optim.Adam(sae.parameters(), lr=1e-3, fused=True)
x = torch.randn(4096, 256)
state = TrainState(step=0, total_steps=steps, dead_mask=torch.zeros(4096, dtype=torch.bool),
                   selection_dtype=resolve_selection_dtype(TrainConfig(), torch.device("cpu")))
times = []
for step in range(steps):
    t = time.perf_counter()
    out = sae.train_step(x, state)
    out.total.backward()
    sae.after_backward()
    opt.step()
    sae.after_step()
    opt.zero_grad(set_to_none=True)
    times.append(time.perf_counter() - t)
print(json.dumps({"step_ms": 1000 * statistics.median(times[5:])}))
"""


def run(setting: str, argv: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if SETTINGS[setting]:
        env["GLIBC_TUNABLES"] = SETTINGS[setting]
    else:
        env.pop("GLIBC_TUNABLES", None)
    done = subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=40, help="TopK training steps per run")
    p.add_argument("--model", default=str(ROOT / "artifacts/demo/model"))
    p.add_argument("--sae", default=str(ROOT / "artifacts/demo/sae"))
    p.add_argument("--analysis-tokens", default="32768,131072", help="token counts of the analysis runs")
    args = p.parse_args()
    analysis = Path(args.model).is_dir() and Path(args.sae).is_dir()
    counts = [int(t) for t in args.analysis_tokens.split(",")] if analysis else []
    results: dict[str, dict[str, list[float]]] = {s: {} for s in SETTINGS}
    for r in range(args.rounds):
        for setting in SETTINGS:
            row = results[setting]
            step = run(setting, ["-c", TRAIN_CHILD, str(args.steps)])["step_ms"]
            row.setdefault("step_ms", []).append(step)
            line = f"round {r} {setting:<11} TopK step {step:7.1f} ms"
            for n in counts:
                out = run(
                    setting,
                    [str(ROOT / "scripts/bench_analysis.py"), "--child", "--model", args.model, "--sae", args.sae,
                     "--tokens", str(n)],
                )  # fmt: skip
                growth = out["peak_rss_mb"] - out["baseline_rss_mb"]
                row.setdefault(f"analyze_s@{n}", []).append(out["analyze_s"])
                row.setdefault(f"rss_growth_mb@{n}", []).append(growth)
                line += f" | analyze {n} tok {out['analyze_s']:6.1f} s, RSS +{growth:6.0f} MiB"
            print(line, flush=True)
    print("\nmedians (ratio to default in this run)")
    for setting, row in results.items():
        cells = []
        for key, values in row.items():
            median, base = statistics.median(values), statistics.median(results["default"][key])
            cells.append(f"{key} {median:.1f} ({median / base:.2f}x)")
        print(f"{setting:<11} " + "; ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
