"""Data-parallel training with torch.distributed: which process this is, the collectives the
trainer needs, and the launcher behind `sae train --nproc N`.

    torchrun --nproc_per_node N -m sae train --acts DIR ...     (or: sae train --nproc N --acts DIR ...)

Every rank holds a whole copy of each SAE and its optimizer. A global batch of G rows is split into
W equal local batches of G / W rows (rank r reads rows [r G/W, (r+1) G/W) of global batch g: see
sae.data.BatchStream). Per step and SAE, in `sae.train`:

- each rank's loss is a mean over its local batch; after backward the gradients are summed over
  ranks and divided by W (`average_gradients`), so every rank holds the gradient of the mean over
  the global batch. This happens before `after_backward`, so the decoder projection, clipping, Adam
  and `after_step` see the same gradient on every rank and the weights stay equal with no broadcast;
- fired counts are summed over ranks: the dead-latent counters, hence AuxK's dead mask, agree;
- floating-point buffers are averaged over ranks after the step (`average_buffers_`);
- dead-latent resampling (relu) draws from the all-gathered global batch with the RNG every rank
  shares, so every rank picks the same inputs for the same latents;
- the activation scale and b_dec come from the all-gathered first global batches;
- the logged loss terms, L0 and FVU are those of the global batch.

Per local batch rather than global (identical to one process when W = 1): BatchTopK and Matryoshka
keep the k * n largest activations of each rank's n = G / W rows, and their inference threshold
is the running average of the mean over ranks of each rank's smallest kept activation; JumpReLU with
`l0_target` penalises the mean over ranks of (L0_rank / l0_target - 1)^2. Everything else
(TopK, ReLU, JumpReLU without target, Gated) is a mean of per-token terms, so W ranks reproduce one
process with the same global batch up to float summation order.

Only rank 0 writes files (log, checkpoints, SAEs). A checkpoint's data position is that of the
global batch stream, the same on every rank, so a run resumes on any number of ranks.

A dictionary split across ranks (each rank owning d_sae / W latents, with a distributed top-k) would
replace `average_gradients` with per-shard updates; every collective the trainer uses is a method
of `Ranks`, so such a mode is a second `Ranks`-like object, not a change to the training loop.

Backends: nccl when the SAEs train on CUDA (one GPU per rank: cuda:LOCAL_RANK), gloo on CPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass(frozen=True)
class Ranks:
    """Which process of a data-parallel job this is (rank 0 of 1 without torch.distributed).

    Every collective is a no-op for one rank, so the trainer calls them unconditionally."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0  # this machine's index of the process: its GPU under CUDA

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def local_batch(self, batch_size: int) -> int:
        if batch_size % self.world_size:
            raise ValueError(
                f"batch_size {batch_size} is not divisible by the {self.world_size} ranks; "
                f"use a multiple of {self.world_size}"
            )
        return batch_size // self.world_size

    # --- collectives (all ranks must call them in the same order) ---------------------------
    def sum_(self, tensor: Tensor) -> Tensor:
        """In place: the elementwise sum of `tensor` over ranks. Returns it."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def max_(self, tensor: Tensor) -> Tensor:
        """In place: the elementwise maximum of `tensor` over ranks. Returns it."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor

    def average_gradients(self, params: Sequence[nn.Parameter]) -> None:
        """Every parameter's .grad becomes the mean of the ranks' gradients.

        A parameter with no gradient on some rank counts as zero there; one with no gradient on
        any rank keeps None (so the optimizer skips it, as it would in one process)."""
        if not self.distributed or not params:
            return
        device = params[0].device
        has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=device)
        self.max_(has_grad)
        pending = []
        for p, anywhere in zip(params, has_grad.tolist()):
            if not anywhere:
                continue
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            pending.append((p.grad, dist.all_reduce(p.grad, op=dist.ReduceOp.SUM, async_op=True)))
        for grad, work in pending:
            work.wait()
            grad.div_(self.world_size)

    def average_buffers_(self, module: nn.Module) -> None:
        """Floating-point buffers become their mean over ranks; others take rank 0's value."""
        if not self.distributed:
            return
        for buffer in module.buffers():
            if buffer.is_floating_point():
                self.sum_(buffer.data).div_(self.world_size)
            else:
                dist.broadcast(buffer.data, src=0)

    def broadcast_(self, module: nn.Module) -> None:
        """In place: every parameter and buffer of `module` becomes rank 0's."""
        if self.distributed:
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=0)

    def gather_rows(self, x: Tensor) -> Tensor:
        """Local rows [n, d] of every rank -> [W n, d] in rank order (the global batch)."""
        if not self.distributed:
            return x
        parts = [torch.empty_like(x) for _ in range(self.world_size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    def max_code(self, code: int, device: torch.device) -> int:
        """The largest of the ranks' integer status codes (0: all well)."""
        if not self.distributed:
            return code
        return int(self.max_(torch.tensor([code], dtype=torch.int64, device=device)).item())

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


SINGLE_PROCESS = Ranks()  # rank 0 of 1: no torch.distributed


def environment_ranks() -> Ranks:
    """Ranks from the variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK); one rank without them."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return SINGLE_PROCESS
    return Ranks(rank=int(os.environ["RANK"]), world_size=world_size, local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(name: str, ranks: Ranks = SINGLE_PROCESS) -> torch.device:
    """torch device of `--device`: auto (cuda when present, else cpu), cpu, cuda or cuda:N.

    With several ranks, auto and cuda mean cuda:LOCAL_RANK (one GPU per process)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"--device {name} asks for a GPU but this torch ({torch.__version__}) sees no CUDA device; "
                "use --device cpu (or auto), or install a CUDA build of torch"
            )
        if ranks.distributed:
            if device.index is not None:
                raise ValueError(
                    f"--device {name} pins one GPU, but this job has {ranks.world_size} processes; "
                    "give --device cuda (or auto) and each rank uses GPU LOCAL_RANK"
                )
            device = torch.device("cuda", ranks.local_rank)
        elif device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device.index >= torch.cuda.device_count():
            raise ValueError(
                f"--device {name}: GPU {device.index} does not exist; this machine has "
                f"{torch.cuda.device_count()} (cuda:0 .. cuda:{torch.cuda.device_count() - 1})"
            )
    elif device.type != "cpu":
        if device.type == "mps" and torch.backends.mps.is_available():
            return device
        raise ValueError(f"--device {name}: use auto, cpu, cuda or cuda:N")
    return device


def start(device_name: str) -> tuple[Ranks, torch.device]:
    """Join the process group torchrun describes (nccl for CUDA, gloo for CPU) and pick the device.

    Without torchrun's variables: one rank, no process group."""
    ranks = environment_ranks()
    device = resolve_device(device_name, ranks)
    if ranks.distributed and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
    return ranks, device


def stop() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_initialized():
        dist.destroy_process_group()


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run `python -m sae train ARGV` as `nproc` processes on this machine through torch.distributed.run
    (torchrun); returns its exit status."""
    if nproc < 1:
        raise ValueError(f"--nproc must be at least 1, got {nproc}")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "sae",
        "train",
        *argv,
    ]
    return subprocess.run(command).returncode


__all__ = ["Ranks", "environment_ranks", "launch", "resolve_device", "start", "stop"]
