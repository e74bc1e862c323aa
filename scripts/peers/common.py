"""Shared by the peer runners: arguments, the saved activations, step timing and the result file.

A runner trains one peer library's TopK SAE with that library's own trainer on the activations that
`scripts/bench_train.py` saved (safetensors: `train` [steps * batch, d_in], `heldout` [m, d_in]) and
writes JSON {tokens_per_s, seconds, steps, l0} plus the held-out reconstruction (safetensors
`x_hat`) so the benchmark computes every FVU with one formula. Runs in the peer's own environment:
imports only torch, safetensors and the peer library.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def parse_args(description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data", required=True, help="safetensors file with `train` and `heldout` activations")
    p.add_argument("--out", required=True, help="folder for result.json and heldout.safetensors")
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--d-sae", type=int, default=4096)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--warmup", type=int, default=20, help="steps left out of the timing")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    return args


Tensor = torch.Tensor


def load_activations(path: str) -> tuple[Tensor, Tensor]:
    tensors = load_file(path)
    return tensors["train"], tensors["heldout"]


class TimedBatches:
    """Re-iterable batches of the training activations; each pass over them records when the trainer
    asked for each batch (`times[i]`: request of batch i of the latest pass). With `cycle`, an
    iterator never ends (for trainers that pull extra batches, e.g. to estimate a norm)."""

    def __init__(self, train: Tensor, batch_size: int, cycle: bool = False):
        self.batches = list(train.split(batch_size))
        if self.batches and len(self.batches[-1]) < batch_size:
            self.batches.pop()
        self.cycle = cycle
        self.times: list[float] = []

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Tensor]:
        self.times = []
        i = 0
        while self.cycle or i < len(self.batches):
            self.times.append(time.perf_counter())
            yield self.batches[i % len(self.batches)]
            i += 1


def steady_rate(times: list[float], batch_size: int, warmup: int) -> tuple[float, float, int]:
    """(tokens/s, seconds, steps timed) from the request times of batches warmup .. last.

    Batch i is requested when step i - 1 has ended, so the steps between requests warmup and
    last are the timed ones."""
    if len(times) < warmup + 2:
        raise ValueError(f"only {len(times)} batches were read; need more than warmup + 1 = {warmup + 1}")
    steps = len(times) - 1 - warmup
    seconds = times[-1] - times[warmup]
    return steps * batch_size / seconds, seconds, steps


def write_result(
    out: str,
    name: str,
    rate: tuple[float, float, int],
    heldout: Tensor,
    reconstruct: Callable[[Tensor], tuple[Tensor, Tensor]],
    extra: dict | None = None,
) -> None:
    """Reconstruct the held-out set in chunks (x_hat and per-token L0) and write the result files."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    x_hats, l0s = [], []
    with torch.no_grad():
        for chunk in heldout.split(4096):
            x_hat, l0 = reconstruct(chunk)
            x_hats.append(x_hat.float())
            l0s.append(l0.float())
    save_file({"x_hat": torch.cat(x_hats).contiguous()}, str(folder / "heldout.safetensors"))
    tokens_per_s, seconds, steps = rate
    result = {
        "peer": name,
        "tokens_per_s": tokens_per_s,
        "seconds": seconds,
        "timed_steps": steps,
        "heldout_l0": torch.cat(l0s).mean().item(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        **(extra or {}),
    }
    (folder / "result.json").write_text(json.dumps(result, indent=2))
