"""Checkpoints of a training run: everything needed to continue it exactly (weights, Adam moments,
dead-latent counters, RNG, data position), written atomically; and the check that a resumed run
uses the settings it was started with.

    checkpoint/latest.json     names the newest complete checkpoint folder
    checkpoint/step-NNNNNNNN/  state.json (step, data position, scale, optimizer scalars, config)
                               + tensors.safetensors (weights, Adam moments, dead counters, RNG)
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sae.config import TrainConfig
from sae.files import inside, read_json, read_safetensors, write_json, write_safetensors
from sae.member import SweepMember

CHECKPOINT_FORMAT = 1
CHECKPOINT_DIR = "checkpoint"
# TrainConfig fields a resumed run may change: they do not alter the trained weights.
RESUMABLE_CHANGES = frozenset({"checkpoint_every", "log_every"})


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


def resolved_config(cfg: TrainConfig, members: Sequence[SweepMember]) -> dict[str, Any]:
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
    members: Sequence[SweepMember],
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
    write_safetensors(tmp / "tensors.safetensors", tensors)
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
    write_json(tmp / "state.json", state)
    final = root / name
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    write_json(root / "latest.json", {"checkpoint": name})
    for old in root.iterdir():
        if old.is_dir() and old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(out: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint folder of a run, or None."""
    pointer = Path(out) / CHECKPOINT_DIR / "latest.json"
    if not pointer.is_file():
        return None
    name = read_json(pointer, fix="the checkpoint is damaged").get("checkpoint")
    folder = inside(pointer.parent, name, source=str(pointer), field="checkpoint")
    if not (folder / "state.json").is_file():
        raise ValueError(f"{pointer} names {folder.name}, which is missing or incomplete; the checkpoint is damaged.")
    return folder


def load_checkpoint(folder: Path, cfg: TrainConfig, members: Sequence[SweepMember]) -> dict[str, Any]:
    """Restore weights, optimizer and dead counters into `members` and the RNG; returns state.json.

    Refuses (ValueError listing the fields) when the checkpoint was written with another config."""
    state = read_json(folder / "state.json", fix="the checkpoint is damaged")
    differ = config_differences(state["config"], resolved_config(cfg, members))
    if differ:
        raise ValueError(
            f"cannot resume from {folder}: the config differs from the checkpoint's in "
            f"{len(differ)} field(s): " + "; ".join(differ) + ". Resume with the original settings "
            "or start a new run in another --out folder."
        )
    tensors = read_safetensors(folder / "tensors.safetensors", fix="resume from an earlier checkpoint or start over")
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
