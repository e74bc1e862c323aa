"""The trainer: one stream of activation batches trains one SAE or a sweep of them.

Each batch is read once and fed to every SAE of the sweep. Per step and SAE:
`train_step` -> backward -> `after_backward` -> clip -> Adam -> `after_step`, with the learning
rate from a warm-up + decay schedule. Before the first step the trainer looks at the first
`init_tokens` tokens to set the activation scale (E||x * scale||^2 = d_in) and the decoder bias
(geometric median or mean of the scaled activations); those batches are then trained on like
any other. Saved SAEs take raw activations: the scale is folded into their weights.

Files under `out`:
    train_config.json          the resolved config of the run (train fields + every SAE config)
    log.jsonl                  one line per logged step and SAE: loss terms, L0, FVU, dead fraction
    checkpoint/latest.json     names the newest complete checkpoint folder
    checkpoint/step-NNNNNNNN/  state.json (step, data position, scale, optimizer scalars, config)
                               + tensors.safetensors (weights, Adam moments, dead counters, RNG)
    cfg.json + sae_weights.safetensors   (one SAE) or NAME/cfg.json ... (one folder per sweep member)

Sources: `batches` yields one tensor per step (every SAE trains on it) or a tuple of tensors, one
per source (e.g. one per hook of one forward pass); `sources[i]` says which entry SAE i trains on.
Each source has its own activation scale and b_dec estimate.

Data parallelism (sae.distributed): `Ranks` says which process this is. Each rank reads its slice
of every global batch, gradients are averaged over ranks between backward and `after_backward`,
fired counts summed; only the main rank writes files. The data position in a checkpoint is that
of the global stream, so a run resumes on any number of ranks.

Devices and precision: `device` auto|cpu|cuda|cuda:N; `autocast` bfloat16 or float16 runs the
training forward pass in that dtype (float16 with a gradient scaler, saved in checkpoints);
`selection_dtype` (auto: bfloat16 where the hardware multiplies it natively) is the precision of the
dense encoder product with which TopK-family SAEs only choose their active latents; on CUDA
batches are read and pinned on a background thread and copied to the GPU without blocking.
"""

from __future__ import annotations

import copy
import ctypes
import dataclasses
import functools
import json
import math
import os
import queue
import re
import shutil
import sys
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm import tqdm

from sae.architectures import SAE, SAEConfig, TrainState, get_architecture
from sae.config import field_specs, sweep_names, write_json_atomic
from sae.data import ActivationDataset
from sae.distributed import Ranks, resolve_device
from sae.io import save_sae

CHECKPOINT_FORMAT = 1
CHECKPOINT_DIR = "checkpoint"
TRAIN_CONFIG = "train_config.json"
LOG_FILE = "log.jsonl"
# TrainConfig fields a resumed run may change: they do not alter the trained weights.
RESUMABLE_CHANGES = frozenset({"checkpoint_every", "log_every"})


@dataclass
class TrainConfig:
    """How to train (shared by every SAE of a sweep). Sizes in tokens are counts of activation rows."""

    batch_size: int = field(
        default=4096, metadata={"help": "Tokens per optimizer step: the global batch, split across ranks."}
    )
    steps: int | None = field(default=None, metadata={"help": "Optimizer steps; none: one pass over the dataset."})
    lr: float | None = field(
        default=None,
        metadata={
            "help": "Adam learning rate; none: 3e-3 * sqrt(2^14 / d_sae) * sqrt(256 / d_in) per SAE, at most 1e-2 (6e-3 at 4096 latents on 256-wide inputs)."
        },
    )
    lr_warmup_steps: int = field(default=0, metadata={"help": "Steps of linear learning-rate warm-up from 0."})
    lr_decay: Literal["none", "linear", "cosine"] = field(
        default="linear", metadata={"help": "Learning-rate decay to 0 over the last lr_decay_fraction of the steps."}
    )
    lr_decay_fraction: float = field(
        default=0.2, metadata={"help": "Fraction of the run (at its end) over which the learning rate decays."}
    )
    adam_beta1: float = field(default=0.9, metadata={"help": "Adam beta1."})
    adam_beta2: float = field(default=0.999, metadata={"help": "Adam beta2."})
    adam_eps: float = field(default=1e-8, metadata={"help": "Adam epsilon."})
    grad_clip_norm: float | None = field(
        default=None, metadata={"help": "Clip each SAE's gradient to this global L2 norm; none: no clipping."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the SAE initialisation and of the data shuffle."})
    device: str = field(
        default="auto",
        metadata={
            "help": "torch device: auto (cuda when present, else cpu), cpu, cuda or cuda:N; under torchrun each rank takes cuda:LOCAL_RANK."
        },
    )
    dtype: Literal["float32", "float64", "bfloat16"] = field(
        default="float32", metadata={"help": "Parameter and activation dtype."}
    )
    autocast: Literal["none", "bfloat16", "float16"] = field(
        default="none",
        metadata={"help": "Autocast dtype of the training forward pass (float16 adds a gradient scaler)."},
    )
    selection_dtype: Literal["auto", "float32", "bfloat16"] = field(
        default="auto",
        metadata={
            "help": "Dtype of the encoder product that only chooses the active latents of TopK-family SAEs (topk, batchtopk, matryoshka); the chosen values, the loss and every gradient stay in the parameter dtype. auto: bfloat16 for float32 parameters on hardware that multiplies bfloat16 natively (CUDA compute capability 8+, CPUs with AVX512-BF16 or AMX), else the parameter dtype."
        },
    )
    b_dec_init: Literal["geometric_median", "mean", "zeros"] = field(
        default="geometric_median", metadata={"help": "Decoder-bias initialisation from the first init_tokens tokens."}
    )
    normalize_activations: bool = field(
        default=True,
        metadata={"help": "Train on x * s with s set so that E||x s||^2 = d_in; s is folded into the saved weights."},
    )
    init_tokens: int = field(
        default=65536,
        metadata={"help": "Tokens from the start of the stream used to estimate the activation scale and b_dec."},
    )
    dead_window_tokens: int = field(
        default=10_000_000, metadata={"help": "A latent is dead when it has not fired in this many tokens."}
    )
    resample_steps: list[int] = field(
        default_factory=list,
        metadata={"help": "Steps at which dead latents are resampled (architectures with resample_dead: relu)."},
    )
    checkpoint_every: int = field(
        default=1000, metadata={"help": "Write a checkpoint every this many steps (0: only at the end)."}
    )
    log_every: int = field(default=10, metadata={"help": "Log metrics every this many steps."})
    shuffle_buffer: int = field(
        default=2**18, metadata={"help": "Rows of the activation dataset shuffled together (0: file order)."}
    )
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads; none: torch's default."})

    def validate(self) -> None:
        """Raise ValueError naming the field when a value is out of range."""
        positive = {
            "batch_size": self.batch_size,
            "log_every": self.log_every,
            "init_tokens": self.init_tokens,
            "dead_window_tokens": self.dead_window_tokens,
            "steps": self.steps or 1,
            "lr": self.lr or 1,
            "threads": self.threads or 1,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"TrainConfig.{name} must be positive, got {value}")
        for name in ("lr_warmup_steps", "checkpoint_every", "shuffle_buffer"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.lr_decay_fraction <= 1:
            raise ValueError(f"TrainConfig.lr_decay_fraction must be in [0, 1], got {self.lr_decay_fraction}")
        if self.grad_clip_norm is not None and self.grad_clip_norm <= 0:
            raise ValueError(f"TrainConfig.grad_clip_norm must be positive or none, got {self.grad_clip_norm}")
        for spec in field_specs(TrainConfig):  # the CLI checks these too; the Python API comes here
            if spec.choices is not None and getattr(self, spec.name) not in spec.choices:
                raise ValueError(
                    f"TrainConfig.{spec.name} must be one of {list(spec.choices)}, got {getattr(self, spec.name)!r}"
                )


# --- small pieces ------------------------------------------------------------------------
def default_lr(d_sae: int, d_in: int) -> float:
    """3e-3 * sqrt(2^14 / d_sae) * sqrt(256 / d_in): Gao et al.'s (2024) 1 / sqrt(width) scaling, and a
    step that shrinks with the encoder's entries (about 1 / sqrt(d_in) at the tied initialisation).
    On normalised activations (E||x||^2 = d_in) it trains far further in a given number of steps
    than Gao et al.'s 2e-4 base; the d_in factor keeps wide inputs from killing most latents
    (TopK, d_in 512, 1024 latents: 79% dead at a rate of 0.02 against 4% at 0.005). The decay to 0
    at the end of the run settles it. At most 1e-2 (small test-sized SAEs)."""
    return min(1e-2, 3e-3 * math.sqrt(2**14 / d_sae) * math.sqrt(256 / d_in))


def lr_factor(step: int, cfg: TrainConfig, total_steps: int) -> float:
    """Multiplier of the base learning rate at 0-based `step`: linear warm-up, then decay to 0."""
    factor = min(1.0, (step + 1) / cfg.lr_warmup_steps) if cfg.lr_warmup_steps else 1.0
    decay_steps = round(cfg.lr_decay_fraction * total_steps)
    decay_start = total_steps - decay_steps
    if cfg.lr_decay != "none" and decay_steps and step >= decay_start:
        progress = (step - decay_start) / decay_steps  # in [0, 1)
        factor *= 1 - progress if cfg.lr_decay == "linear" else 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def geometric_median(x: Tensor, iters: int = 100, tol: float = 1e-7) -> Tensor:
    """argmin_m sum_i ||x_i - m|| of x [n, d] by Weiszfeld's iteration, in float64 -> [d].

    Distances come from ||x_i||^2 - 2 x_i.m + ||m||^2, so an iteration is two matrix-vector products
    over x (no [n, d] temporaries). Stops when m moves less than tol * (1 + ||m||)."""
    x = x.double()
    sq_norms = x.pow(2).sum(1)  # [n]
    median = x.mean(0)
    for _ in range(iters):
        dist = (sq_norms - 2 * (x @ median) + median.dot(median)).clamp_min(0).sqrt()
        inv_dist = 1 / dist.clamp_min(1e-12)
        new = (inv_dist @ x) / inv_dist.sum()
        moved = (new - median).norm()
        median = new
        if moved <= tol * (1 + median.norm()):
            break
    return median


def activation_scale(x: Tensor) -> float:
    """s such that E||s x||^2 = d_in over the rows of x [n, d_in]."""
    mean_sq = x.double().pow(2).sum(1).mean().item()
    if mean_sq == 0:
        raise ValueError("the first activations are all zero; cannot normalise them (set normalize_activations false)")
    return math.sqrt(x.shape[1] / mean_sq)


# --- one SAE of the sweep ----------------------------------------------------------------
class _Member:
    """One SAE with its optimizer, dead-latent counters and the index of the source it trains on."""

    def __init__(
        self, name: str, arch: str, sae_cfg: SAEConfig, cfg: TrainConfig, device: torch.device, source: int = 0
    ):
        self.name, self.arch, self.source = name, arch, source
        with torch.random.fork_rng(devices=[]):  # every member starts as a lone run with this seed would
            torch.manual_seed(cfg.seed)
            self.sae: SAE = get_architecture(arch)(sae_cfg)
        self.sae.to(device=device, dtype=getattr(torch, cfg.dtype))
        self.base_lr = cfg.lr if cfg.lr is not None else default_lr(sae_cfg.d_sae, sae_cfg.d_in)
        self.params = [p for p in self.sae.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(
            self.params, lr=self.base_lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps, **_fast_adam(device)
        )
        self.tokens_since_fired = torch.zeros(sae_cfg.d_sae, dtype=torch.int64, device=device)
        # float16 gradients underflow without loss scaling; bfloat16 and float32 need none
        self.scaler = torch.amp.GradScaler(device.type) if cfg.autocast == "float16" else None
        self.selection_dtype = resolve_selection_dtype(cfg, device)
        if cfg.resample_steps and type(self.sae).resample_dead is SAE.resample_dead:
            raise ValueError(
                f"resample_steps is set but architecture {arch!r} does not resample dead latents; "
                "clear resample_steps or use an architecture that resamples (relu)"
            )

    def dead_mask(self, window: int) -> Tensor:
        return self.tokens_since_fired >= window

    def step(
        self,
        x: Tensor,
        step: int,
        cfg: TrainConfig,
        total_steps: int,
        autocast: torch.autocast | None,
        ranks: Ranks = Ranks(),
    ) -> dict[str, Any]:
        """One optimizer step on this rank's x [n, d_in] (all ranks together: the global batch);
        returns the step's detached outputs for logging."""
        lr = self.base_lr * lr_factor(step, cfg, total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        state = TrainState(
            step=step,
            total_steps=total_steps,
            dead_mask=self.dead_mask(cfg.dead_window_tokens),
            selection_dtype=self.selection_dtype,
        )
        with autocast if autocast is not None else nullcontext():
            out = self.sae.train_step(x, state)
        fired, loss = out.fired, out.total.detach()
        if ranks.distributed:  # one all-reduce: fired counts (exact in float64) and the loss
            summed = ranks.sum_(torch.cat([fired.double(), loss.double().reshape(1)]))
            fired, loss = summed[:-1], summed[-1] / ranks.world_size
        if not torch.isfinite(loss):
            raise ValueError(
                f"the loss of SAE {self.name or self.arch!r} became {loss.item()} at step {step}; "
                "lower the learning rate (--lr) or set --grad-clip-norm"
            )
        (self.scaler.scale(out.total) if self.scaler is not None else out.total).backward()
        ranks.average_gradients(self.params)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        self.sae.after_backward()
        if cfg.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip_norm, foreach=True)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # skipped when a gradient is Inf/NaN (the scale then shrinks)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.sae.after_step()
        ranks.average_buffers_(self.sae)
        self.optimizer.zero_grad(set_to_none=True)
        self.tokens_since_fired += x.shape[0] * ranks.world_size
        self.tokens_since_fired.masked_fill_(fired > 0, 0)
        resampled = None
        if step + 1 in cfg.resample_steps:
            dead = self.dead_mask(cfg.dead_window_tokens)
            # every rank resamples from the same global batch with the same RNG state: same result
            resampled = self.sae.resample_dead(dead, ranks.gather_rows(x), self.optimizer)  # type: ignore[attr-defined]
            self.tokens_since_fired.masked_fill_(dead, 0)
        return {"out": out, "lr": lr, "resampled": resampled}

    def metrics(self, x: Tensor, result: dict[str, Any], window: int, ranks: Ranks = Ranks()) -> dict[str, Any]:
        """Loss terms, L0, FVU (sum (x - x_hat)^2 / sum (x - mean x)^2) and dead fraction of the global batch.

        Every rank must call it (it all-reduces). Per-rank sums combine exactly:
        sum (x - mean)^2 = sum_r [sum (x - mean_r)^2 + n_r mean_r^2] - n mean^2 (per dimension)."""
        out = result["out"]
        with torch.no_grad():
            x64, x_hat64 = x.double(), out.x_hat.detach().double()
            local_mean = x64.mean(0)
            means = torch.stack(
                [
                    out.total.detach().double(),
                    *(v.detach().double() for v in out.terms.values()),
                    out.l0.detach().double(),
                ]
            )
            n = x.shape[0] * ranks.world_size
            sums = ranks.sum_(
                torch.cat(
                    [
                        means / ranks.world_size,
                        (x64 - x_hat64).pow(2).sum().reshape(1),
                        (x64 - local_mean).pow(2).sum(0),
                        x.shape[0] * local_mean.pow(2),
                        x64.sum(0),
                    ]
                )
            )
            k, d = len(means), x.shape[1]
            means, error = sums[:k].tolist(), sums[k]
            centred, between, total = sums[k + 1 : k + 1 + d], sums[k + 1 + d : k + 1 + 2 * d], sums[k + 1 + 2 * d :]
            variance = (centred + between - n * (total / n).pow(2)).sum()
        return {
            "sae": self.name,
            "lr": result["lr"],
            "loss": means[0],
            "terms": dict(zip(out.terms, means[1:-1])),
            "l0": means[-1],
            "fvu": (error / variance).item(),
            "dead_fraction": self.dead_mask(window).double().mean().item(),
        }


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameter numbers from glibc's malloc.h


def keep_freed_memory() -> bool:
    """Have glibc's malloc serve large blocks from the heap and keep freed memory (Linux only).

    A training step allocates and frees several [batch, d_sae] temporaries (64 MiB each at 4096 x
    4096). By default glibc maps each one fresh and unmaps it when freed, so every step pays a page
    fault per 4 KiB page again: on a 2-core VM that is a third of a TopK step (257 -> 168 ms median,
    d_in 256, d_sae 4096, k 32). The cost is that the process keeps its peak heap. Returns whether
    the settings took effect."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):  # not glibc
        return False


@functools.cache
def cpu_flags(cpuinfo_path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The instruction-set flags of this machine's CPU (Linux: /proc/cpuinfo; elsewhere none known)."""
    try:
        cpuinfo = Path(cpuinfo_path).read_text()
    except OSError:
        return frozenset()
    line = re.search(r"^flags\s*:(.*)$", cpuinfo, re.MULTILINE)
    return frozenset(line.group(1).split()) if line else frozenset()


def native_bfloat16_matmul(device: torch.device) -> bool:
    """Whether `device` multiplies bfloat16 matrices in hardware (about twice the float32 rate): a
    CUDA GPU of compute capability 8 or more, or a CPU with avx512_bf16 or amx_bf16 for oneDNN's
    kernels (other CPUs emulate bfloat16, no faster than float32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return (
        device.type == "cpu"
        and torch.backends.mkldnn.is_available()
        and bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})
    )


def resolve_selection_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The dtype of TopK-family latent selection for `cfg.selection_dtype` (None: the parameter dtype)."""
    if cfg.selection_dtype == "auto":
        return torch.bfloat16 if cfg.dtype == "float32" and native_bfloat16_matmul(device) else None
    return None if cfg.selection_dtype == cfg.dtype else getattr(torch, cfg.selection_dtype)


def _fast_adam(device: torch.device) -> dict[str, bool]:
    """Adam's single-kernel implementation where this torch has one for the device."""
    return {"fused": True} if device.type in ("cpu", "cuda") else {"foreach": True}


# --- the batch stream --------------------------------------------------------------------
class _Feed:
    """Batches for this rank with the data position after each, and look-ahead for initialisation.

    Each item is a tuple of tensors, one per source. From an ActivationDataset the position is the
    BatchStream state (exact resume). From a seekable source (an iterable with `state_dict()` and
    `load_state_dict(state)`, e.g. a stream from a model) it is that state, restored on resume
    without replaying the skipped batches. From any other iterable it is the count of batches read,
    and a resumed run re-reads and skips that many.
    With `prefetch`, a background thread reads (and with `pin`, pins) up to two batches ahead.
    """

    def __init__(
        self,
        source: ActivationDataset | Iterable[Any],
        cfg: TrainConfig,
        ranks: Ranks,
        position: dict | None,
        *,
        prefetch: bool = False,
        pin: bool = False,
    ):
        self.read = position["batches"] if position else 0
        if isinstance(source, ActivationDataset):
            self.stream = source.batches(
                ranks.local_batch(cfg.batch_size),
                shuffle_buffer=cfg.shuffle_buffer,
                seed=cfg.seed,
                epochs=None,
                rank=ranks.rank,
                world_size=ranks.world_size,
                state=position["stream"] if position else None,
            )
            self.iterator: Iterator[Any] = self.stream
        elif _seekable(source):
            self.stream = source
            if position:
                source.load_state_dict(position["stream"])  # type: ignore[attr-defined]
            self.iterator = iter(source)
        else:
            self.stream = None
            self.iterator = iter(source)
            for _ in tqdm(range(self.read), desc="skipping trained batches", disable=self.read < 100):
                next(self.iterator)
        self.ahead: list[tuple[tuple[Tensor, ...], dict]] = []
        self.position = self._position()
        self.pin = pin
        self._queue: queue.Queue | None = None
        if prefetch:
            self._queue = queue.Queue(maxsize=2)
            self._stop = threading.Event()
            threading.Thread(target=self._prefetch, name="batch-prefetch", daemon=True).start()

    def _position(self) -> dict:
        return {"batches": self.read, "stream": self.stream.state_dict() if self.stream is not None else None}

    def _read(self) -> tuple[tuple[Tensor, ...], dict] | None:
        try:
            batch = next(self.iterator)
        except StopIteration:
            return None
        self.read += 1
        parts = tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
        if self.pin:  # page-locked host memory: the copy to the GPU runs without blocking
            parts = tuple(t.pin_memory() if t.device.type == "cpu" else t for t in parts)
        return parts, self._position()

    def _prefetch(self) -> None:
        """Background reader: items (or the error that ended the stream) in order, None at the end."""
        while not self._stop.is_set():
            try:
                item: Any = self._read()
            except BaseException as err:
                item = err
            self._queue.put(item)  # type: ignore[union-attr]
            if item is None or isinstance(item, BaseException):
                return

    def _next(self) -> tuple[tuple[Tensor, ...], dict] | None:
        if self._queue is None:
            return self._read()
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        """Stop the background reader (it may finish the read in progress)."""
        if self._queue is not None:
            self._stop.set()
            while not self._queue.empty():
                self._queue.get_nowait()

    def peek(self, n: int) -> list[tuple[Tensor, ...]]:
        """Read up to n batches ahead (they are still returned by `next` later)."""
        while len(self.ahead) < n and (item := self._next()) is not None:
            self.ahead.append(item)
        return [b for b, _ in self.ahead[:n]]

    def next(self) -> tuple[Tensor, ...] | None:
        """The next batch (None at the end of the data); `self.position` is then the position after it."""
        item = self.ahead.pop(0) if self.ahead else self._next()
        if item is None:
            return None
        batch, self.position = item
        return batch


def _seekable(source: Any) -> bool:
    return callable(getattr(source, "state_dict", None)) and callable(getattr(source, "load_state_dict", None))


# --- checkpoints -------------------------------------------------------------------------
def _flatten(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: value}


def config_differences(saved: dict, current: dict) -> list[str]:
    """Fields (dotted paths) whose values differ between two resolved configs, with both values."""
    a, b = _flatten("", saved), _flatten("", current)
    return [
        f"{k}: checkpoint has {a.get(k)!r}, this run has {b.get(k)!r}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]


def resolved_config(cfg: TrainConfig, members: Sequence[_Member]) -> dict[str, Any]:
    """What a resumed run must share with the run it continues."""
    return {
        "train": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in RESUMABLE_CHANGES},
        "saes": {
            str(i): {"name": m.name, "arch": m.arch, "config": m.sae.cfg.to_dict()} for i, m in enumerate(members)
        },
    }


def _split_optimizer_state(prefix: str, state: dict) -> tuple[dict[str, Tensor], dict]:
    """Optimizer.state_dict()['state'] -> (tensors by key, JSON scalars)."""
    tensors, scalars = {}, {}
    for idx, entries in state.items():
        for key, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"{prefix}.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, scalars


def save_checkpoint(
    out: Path,
    step: int,
    tokens: int,
    position: dict,
    scales: Sequence[float],
    cfg: TrainConfig,
    members: Sequence[_Member],
) -> Path:
    """Write checkpoint/step-NNNNNNNN atomically (temp folder + rename), point latest.json at it,
    and delete older checkpoints. Returns the new folder."""
    root = out / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:08d}"
    tmp = root / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    tensors: dict[str, Tensor] = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    optimizer_scalars = []
    for i, m in enumerate(members):
        for pname, p in m.sae.state_dict().items():
            tensors[f"sae{i}.param.{pname}"] = p.detach().cpu().contiguous()
        t, s = _split_optimizer_state(f"sae{i}.optim", m.optimizer.state_dict()["state"])
        tensors.update(t)
        optimizer_scalars.append(s)
        tensors[f"sae{i}.tokens_since_fired"] = m.tokens_since_fired.cpu()
    save_file(tensors, str(tmp / "tensors.safetensors"))
    state = {
        "format_version": CHECKPOINT_FORMAT,
        "step": step,
        "tokens": tokens,
        "data_position": position,
        "activation_scale": scales[0],
        "activation_scales": list(scales),
        "optimizer_scalars": optimizer_scalars,
        "config": resolved_config(cfg, members),
    }
    if any(m.scaler is not None for m in members):
        state["grad_scalers"] = [m.scaler.state_dict() if m.scaler is not None else None for m in members]
    write_json_atomic(tmp / "state.json", state)
    final = root / name
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    write_json_atomic(root / "latest.json", {"checkpoint": name})
    for old in root.iterdir():
        if old.is_dir() and old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(out: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint folder of a run, or None."""
    pointer = Path(out) / CHECKPOINT_DIR / "latest.json"
    if not pointer.is_file():
        return None
    folder = pointer.parent / json.loads(pointer.read_text())["checkpoint"]
    if not (folder / "state.json").is_file():
        raise ValueError(f"{pointer} names {folder.name}, which is missing or incomplete; the checkpoint is damaged.")
    return folder


def load_checkpoint(folder: Path, cfg: TrainConfig, members: Sequence[_Member]) -> dict[str, Any]:
    """Restore weights, optimizer and dead counters into `members` and the RNG; returns state.json.

    Refuses (ValueError listing the fields) when the checkpoint was written with another config."""
    state = json.loads((folder / "state.json").read_text())
    differ = config_differences(state["config"], resolved_config(cfg, members))
    if differ:
        raise ValueError(
            f"cannot resume from {folder}: the config differs from the checkpoint's in "
            f"{len(differ)} field(s): " + "; ".join(differ) + ". Resume with the original settings "
            "or start a new run in another --out folder."
        )
    tensors = load_file(str(folder / "tensors.safetensors"))
    for i, m in enumerate(members):
        device = m.tokens_since_fired.device
        m.sae.load_state_dict({k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"sae{i}.param.")})
        opt_state = m.optimizer.state_dict()
        opt_state["state"] = {}
        for key, value in state["optimizer_scalars"][i].items():
            idx, name = key.split(".", 1)
            opt_state["state"].setdefault(int(idx), {})[name] = value
        for key, value in tensors.items():
            if key.startswith(f"sae{i}.optim."):
                idx, name = key.split(".", 3)[2:]
                opt_state["state"].setdefault(int(idx), {})[name] = value.to(device)
        m.optimizer.load_state_dict(opt_state)
        m.tokens_since_fired.copy_(tensors[f"sae{i}.tokens_since_fired"])
        if m.scaler is not None:
            m.scaler.load_state_dict(state["grad_scalers"][i])
    torch.set_rng_state(tensors["rng.torch"])
    if torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")])
    return state


# --- the loop ----------------------------------------------------------------------------
def train_sae(
    sae_configs: Sequence[tuple[str, SAEConfig]],
    batches: ActivationDataset | Iterable[Tensor] | Iterable[tuple[Tensor, ...]],
    cfg: TrainConfig,
    out: str | os.PathLike | None,
    *,
    names: Sequence[str] | None = None,
    resume: bool = False,
    run_info: dict[str, Any] | None = None,
    progress: bool = True,
    ranks: Ranks = Ranks(),
    sources: Sequence[int] | None = None,
    metadata: Sequence[dict[str, Any]] | None = None,
) -> list[SAE]:
    """Train every (architecture name, config) pair on one stream of [batch, d_in] batches.

    batches: an ActivationDataset (the trainer streams it shuffled, resumes exactly, and passes its
    hook/model names to the saved files); a seekable iterable (`state_dict()` / `load_state_dict()`:
    resumed by restoring its state); or any iterable (a resumed run re-reads and skips the batches
    already trained on, so it must yield the same sequence again). An iterable yields a tensor per
    step, or a tuple of tensors (one per source) with `sources[i]` the entry SAE i trains on.
    Under several ranks an iterable yields this rank's part of each global batch.
    out: run folder (None: train in memory only). names: folder per SAE (default: "" for one SAE,
    else the varying fields, e.g. "k16"). resume: continue from out/checkpoint.
    run_info: extra entries for train_config.json (the CLI records the dataset path and sweep).
    metadata: per SAE, extra entries for its cfg.json metadata (hook_name, model_name, ...).
    ranks: this process of a data-parallel job (sae.distributed).
    Returns the trained SAEs in inference form with the activation scale folded in (raw inputs).
    """
    cfg.validate()
    if not sae_configs:
        raise ValueError("train_sae needs at least one SAE config")
    for _, c in sae_configs:
        c.validate()
    names = list(names) if names is not None else sweep_names([c.to_dict() for _, c in sae_configs])
    if len(set(names)) != len(names):
        raise ValueError(f"SAE names must be distinct, got {names}")
    sources = list(sources) if sources is not None else [0] * len(sae_configs)
    if len(sources) != len(sae_configs) or (sources and min(sources) < 0):
        raise ValueError(
            f"sources must give one non-negative source index per SAE config, got {sources} "
            f"for {len(sae_configs)} configs"
        )
    if metadata is not None and len(metadata) != len(sae_configs):
        raise ValueError(f"metadata must hold one dict per SAE config, got {len(metadata)} for {len(sae_configs)}")
    for s in set(sources):
        widths = {c.d_in for (_, c), src in zip(sae_configs, sources) if src == s}
        if len(widths) > 1:
            raise ValueError(
                f"the SAEs trained on source {s} disagree on d_in ({sorted(widths)}); they read the same batches"
            )
    if isinstance(batches, ActivationDataset):
        for name, (_, c) in zip(names, sae_configs):
            if c.d_in != batches.d_in:
                raise ValueError(
                    f"the dataset {batches.path} has d_in={batches.d_in} (its manifest.json) but SAE "
                    f"{name or 'config'} has d_in={c.d_in}; set d_in to {batches.d_in} (or leave it unset on the command line)"
                )
    steps = cfg.steps if cfg.steps is not None else _steps_of(batches, cfg)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    keep_freed_memory()
    device = resolve_device(cfg.device, ranks)
    members = [_Member(n, arch, c, cfg, device, src) for n, (arch, c), src in zip(names, sae_configs, sources)]
    out_dir = Path(out) if out is not None else None
    writes = out_dir is not None and ranks.is_main

    position, scales, start = None, [1.0] * (max(sources) + 1), 0
    torch.manual_seed(cfg.seed)
    folder = latest_checkpoint(out_dir) if out_dir is not None else None
    if resume:
        if folder is None:
            raise FileNotFoundError(
                f"cannot resume: {out_dir}/{CHECKPOINT_DIR} holds no checkpoint; start the run without --resume"
            )
        state = load_checkpoint(folder, cfg, members)
        position, start = state["data_position"], state["step"]
        scales = state.get("activation_scales", [state["activation_scale"]])
    elif folder is not None:
        raise ValueError(
            f"{out_dir} already holds a run (checkpoint at {folder.name}); resume it with --resume "
            "or choose another --out folder"
        )
    for m in members:
        ranks.broadcast_(m.sae)  # the same seed builds the same weights; this makes it certain
    if writes:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            out_dir / TRAIN_CONFIG,
            {
                "format_version": CHECKPOINT_FORMAT,
                **(run_info or {}),
                "train": dataclasses.asdict(cfg),
                "resolved": {
                    "device": str(device),
                    "selection_dtype": str(members[0].selection_dtype or cfg.dtype).removeprefix("torch."),
                },
                "members": [{"name": m.name, "arch": m.arch, "config": m.sae.cfg.to_dict()} for m in members],
            },
        )
    feed = _Feed(batches, cfg, ranks, position, prefetch=device.type == "cuda", pin=device.type == "cuda")
    dtype = getattr(torch, cfg.dtype)
    autocast = torch.autocast(device.type, dtype=getattr(torch, cfg.autocast)) if cfg.autocast != "none" else None
    log = open(out_dir / LOG_FILE, "a") if writes else None
    last_saved = start
    bar = tqdm(total=steps, initial=start, desc="train", unit="step", disable=not (progress and ranks.is_main))
    clock, clock_step = time.perf_counter(), start
    try:
        if start == 0:
            scales = _initialise(feed, members, cfg, dtype, device, ranks)
        if start >= steps:
            warnings.warn(f"the run in {out_dir} already finished {start} of {steps} steps; only saving the SAEs")
        for step in range(start, steps):
            batch = _next_batch(feed, step, members, out_dir, last_saved, ranks)
            if batch is None:
                warnings.warn(f"the data ran out after {step} of {steps} steps; saving the SAEs as they are")
                steps = step
                break
            xs = [b.to(device=device, dtype=dtype, non_blocking=True) * s for b, s in zip(batch, scales)]
            results = [m.step(xs[m.source], step, cfg, steps, autocast, ranks) for m in members]
            bar.update(1)
            done = step + 1
            if log is not None:
                for m, r in zip(members, results):
                    if r["resampled"] is not None:
                        log.write(json.dumps({"step": done, "sae": m.name, "resampled": r["resampled"]}) + "\n")
            if done % cfg.log_every == 0 or done == steps:
                rows = [m.metrics(xs[m.source], r, cfg.dead_window_tokens, ranks) for m, r in zip(members, results)]
                now = time.perf_counter()
                rate = (done - clock_step) * cfg.batch_size / max(now - clock, 1e-9)
                clock, clock_step = now, done
                bar.set_postfix_str(
                    " | ".join(f"{r['sae'] or 'fvu'} {r['fvu']:.3f} l0 {r['l0']:.1f}" for r in rows)
                    + f" | {rate:,.0f} tok/s"
                )
                if log is not None:
                    for r in rows:
                        log.write(
                            json.dumps({"step": done, "tokens": done * cfg.batch_size, "tokens_per_s": rate, **r})
                            + "\n"
                        )
                    log.flush()
            if writes and (done == steps or (cfg.checkpoint_every and done % cfg.checkpoint_every == 0)):
                save_checkpoint(out_dir, done, done * cfg.batch_size, feed.position, scales, cfg, members)
                last_saved = done
    finally:
        bar.close()
        feed.close()
        if log is not None:
            log.close()
    trained = [_saveable(m.sae, scales[m.source]) for m in members]
    if writes:
        for i, (m, sae) in enumerate(zip(members, trained)):
            meta = {**_metadata(batches, scales[m.source], steps * cfg.batch_size), **(metadata[i] if metadata else {})}
            save_sae(sae, out_dir / m.name if m.name else out_dir, metadata=meta)
    ranks.barrier()  # no rank returns before rank 0 has written the SAEs
    return trained


def _next_batch(
    feed: _Feed, step: int, members: Sequence[_Member], out: Path | None, last_saved: int, ranks: Ranks
) -> tuple[Tensor, ...] | None:
    """This rank's next batch (one tensor per source), checked; None when the data ran out on any rank.

    Ranks agree: a bad batch on one rank stops every rank with an error naming it."""
    batch, error, code = feed.next(), None, 0
    if batch is None:
        code = 1
    else:
        try:
            _check_batches(batch, step, members, out, last_saved)
        except ValueError as err:
            error, code = err, 2 + ranks.rank
    code = ranks.max_code(code, members[0].tokens_since_fired.device)
    if error is not None:
        raise error
    if code >= 2:
        raise ValueError(
            f"batch {step} of rank {code - 2} is bad (NaN/Inf or a wrong shape; rank {code - 2} "
            "reports which); every rank stopped"
        )
    return None if code == 1 else batch


def _steps_of(batches: Any, cfg: TrainConfig) -> int:
    if isinstance(batches, ActivationDataset):
        steps = batches.num_tokens // cfg.batch_size
        if steps == 0:
            raise ValueError(
                f"the dataset {batches.path} holds {batches.num_tokens} tokens, fewer than one batch of {cfg.batch_size}"
            )
        return steps
    if hasattr(batches, "__len__"):
        return len(batches)
    raise ValueError("TrainConfig.steps is required when batches is a plain iterator (its length is unknown)")


def _check_batches(
    batch: tuple[Tensor, ...], step: int, members: Sequence[_Member], out: Path | None, last_saved: int
) -> None:
    """Each source's tensor of one step checked against the d_in of the SAEs that read it."""
    needed = max(m.source for m in members) + 1
    if len(batch) < needed:
        raise ValueError(
            f"batch {step} holds {len(batch)} tensor(s) but the SAEs read source(s) up to "
            f"index {needed - 1}; yield one tensor per source"
        )
    for m in members:
        _check_batch(batch[m.source], step, m.sae.cfg.d_in, out, last_saved)


def _check_batch(x: Tensor, step: int, d_in: int, out: Path | None, last_saved: int) -> Tensor:
    """Refuse a batch of the wrong shape or with NaN/Inf, naming the batch and the last good checkpoint."""
    if x.ndim != 2 or x.shape[1] != d_in:
        raise ValueError(
            f"batch {step} has shape {tuple(x.shape)} but the SAE config has d_in={d_in}; "
            f"the data and the config disagree on d_in"
        )
    if not torch.isfinite(x).all():
        row = int((~torch.isfinite(x)).any(1).nonzero()[0])
        where = (
            f"the last good checkpoint (step {last_saved}) is kept in {out / CHECKPOINT_DIR}"
            if out is not None and last_saved
            else "no checkpoint was written before it"
        )
        raise ValueError(
            f"batch {step} (0-based, the batch of step {step + 1}) contains NaN or Inf values "
            f"(first at row {row}); training stopped and {where}. Fix or remove the bad activations."
        )
    return x


def _initialise(
    feed: _Feed, members: Sequence[_Member], cfg: TrainConfig, dtype: torch.dtype, device: torch.device, ranks: Ranks
) -> list[float]:
    """Per source: activation scale and decoder bias from the first init_tokens tokens of the global
    stream (all ranks' local batches gathered); returns the scales."""
    first = feed.peek(max(1, math.ceil(cfg.init_tokens / cfg.batch_size)))
    code = ranks.max_code(0 if first else 1, members[0].tokens_since_fired.device)
    if code:
        raise ValueError("the batch stream is empty: nothing to train on")
    for i, b in enumerate(first):
        _check_batches(b, i, members, None, 0)
    scales = []
    for source in range(max(m.source for m in members) + 1):
        readers = [m for m in members if m.source == source]
        if not readers:
            scales.append(1.0)
            continue
        x = torch.cat([ranks.gather_rows(b[source].to(device)) for b in first])[: cfg.init_tokens].to(torch.float64)
        scale = activation_scale(x) if cfg.normalize_activations else 1.0
        x = x * scale
        if cfg.b_dec_init != "zeros":
            b_dec = geometric_median(x) if cfg.b_dec_init == "geometric_median" else x.mean(0)
            for m in readers:
                m.sae.init_from_data(b_dec.to(dtype))
        scales.append(scale)
    return scales


def _saveable(sae: SAE, scale: float) -> SAE:
    """A copy in inference form that takes raw activations (the scale folded into the weights)."""
    final = copy.deepcopy(sae).inference_form()
    final.fold_activation_scale(scale)
    return final


def _metadata(batches: Any, scale: float, tokens: int) -> dict[str, Any]:
    meta: dict[str, Any] = {"training_tokens": tokens, "activation_scale_folded": scale}
    if isinstance(batches, ActivationDataset):
        meta.update(
            hook_name=batches.hook_name,
            model_name=batches.model_id,
            context_size=batches.context_length,
            dataset_path=str(batches.path),
        )
    return meta


__all__ = [
    "Ranks",
    "TrainConfig",
    "activation_scale",
    "config_differences",
    "default_lr",
    "geometric_median",
    "latest_checkpoint",
    "lr_factor",
    "train_sae",
]
