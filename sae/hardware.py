"""What the hardware offers the trainer: native bfloat16 matrix products, fused Adam, and (for the
command line only) glibc allocator settings."""

from __future__ import annotations

import ctypes
import functools
import os
import re
import sys
from pathlib import Path

import torch

from sae.config import TrainConfig

# glibc malloc setting -> (its mallopt parameter number in malloc.h, its GLIBC_TUNABLES name)
_MALLOC_SETTINGS = {
    "mmap_threshold": (-3, "glibc.malloc.mmap_threshold"),
    "trim_threshold": (-1, "glibc.malloc.trim_threshold"),
}
ALLOCATOR_POLICIES: dict[str, dict[str, int]] = {
    "keep": {"mmap_threshold": 1 << 30, "trim_threshold": 1 << 30},
    "release": {"mmap_threshold": 1 << 20},
}
# the same policies from the environment, for Python users: GLIBC_TUNABLES=<string> before the interpreter starts
GLIBC_TUNABLES = {
    policy: ":".join(f"{_MALLOC_SETTINGS[name][1]}={value}" for name, value in settings.items())
    for policy, settings in ALLOCATOR_POLICIES.items()
}


def tune_allocator(policy: str) -> bool:
    """Set glibc's malloc for the work ahead (Linux only); returns whether the settings took effect.

    keep: large blocks come from the heap and freed memory stays there. A training step allocates
    and frees several [batch, d_sae] temporaries (64 MiB each at 4096 x 4096), which glibc would
    otherwise map fresh and unmap every step, paying a page fault per 4 KiB page each time; the
    process keeps its peak heap.
    release: every block of 1 MiB or more is mapped and returned when freed, so a long analysis
    pass, which frees buffers of a few hundred MiB per batch, stays at a flat RSS however many
    tokens it reads (from the heap they fragment it and the process grows with the token count).

    Process-wide: only the command-line entry points call it (the README gives the measured costs,
    `scripts/bench_allocator.py`). From Python, set `GLIBC_TUNABLES[policy]` in the environment
    variable GLIBC_TUNABLES before the interpreter starts."""
    settings = ALLOCATOR_POLICIES[policy]
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return all([bool(libc.mallopt(_MALLOC_SETTINGS[name][0], value)) for name, value in settings.items()])
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


def resolve_selection_dtype(cfg: TrainConfig, device: torch.device, *, distributed: bool = False) -> torch.dtype | None:
    """The dtype of TopK-family latent selection for `cfg.selection_dtype` (None: the parameter dtype).

    auto never takes bfloat16 under data parallelism: a bfloat16 product rounds differently for
    different row splits, near-ties then choose other latents, and N processes would no longer equal
    one (one process with float32 selection is what they equal)."""
    if cfg.selection_dtype == "auto":
        fast = cfg.dtype == "float32" and native_bfloat16_matmul(device) and not distributed
        return torch.bfloat16 if fast else None
    return None if cfg.selection_dtype == cfg.dtype else getattr(torch, cfg.selection_dtype)


def fast_adam(device: torch.device) -> dict[str, bool]:
    """Adam's single-kernel implementation where this torch has one for the device."""
    return {"fused": True} if device.type in ("cpu", "cuda") else {"foreach": True}


def device_memory_bytes(device: torch.device) -> int:
    """Total memory of the device: the GPU's, or the machine's physical memory for the CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_training_memory(shapes: list[tuple[str, int, int]], cfg: TrainConfig, device: torch.device) -> None:
    """Refuse, before anything is allocated, a sweep that cannot fit the device: per SAE (name, d_in,
    d_sae), weights + gradients + Adam's two moments (4 copies of ~2 d_in d_sae values) plus the dense
    [batch, d_sae] pre-activations and their gradient."""
    itemsize = torch.finfo(getattr(torch, cfg.dtype)).bits // 8
    needed = sum(4 * (2 * d_in * d_sae + d_sae + d_in) + 2 * cfg.batch_size * d_sae for _, d_in, d_sae in shapes)
    needed *= itemsize
    available = device_memory_bytes(device)
    if needed > available:
        widest = max(shapes, key=lambda s: s[2])
        raise ValueError(
            f"training needs about {needed / 2**30:,.1f} GiB (SAE {widest[0] or 'config'}: d_in {widest[1]}, d_sae "
            f"{widest[2]:,}; weights, gradients, Adam state and a batch of {cfg.batch_size}) but {device} has "
            f"{available / 2**30:,.1f} GiB; lower --d-sae or --batch-size."
        )
