"""The training story of a model, kept in its folder for reports to tell:

training.json                  loss curves (train per step, held-out at fixed points), text sampled
                               from a fixed prompt at the start / along the way / at the end, a summary
training_tensors.safetensors   `prompt_tokens` [pos] int64 and the MLP neuron activations on that
                               prompt, `mlp_post.init` and `mlp_post.final` [n_layers, pos, d_mlp]
                               (hook `blocks.{layer}.mlp.hook_post`)
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

RECORD_FORMAT = "monosemantic-training-record"
RECORD_FORMAT_VERSION = 1
RECORD_FILE = "training.json"
TENSORS_FILE = "training_tensors.safetensors"
MLP_HOOK = "blocks.{layer}.mlp.hook_post"


@dataclass
class Sample:
    """Text the model wrote from the record's prompt at one point of training."""

    step: int
    tokens: int  # training tokens seen so far
    progress: float  # fraction of the budget spent, 0..1
    greedy: str
    sampled: str  # at the record's temperature and seed


@dataclass
class TrainingRecord:
    prompt: str
    prompt_token_strings: list[str]  # BOS first, one per activation row
    sample_temperature: float
    sample_seed: int
    config: dict[str, Any] = field(default_factory=dict)  # model, training and corpus settings
    # per step: step, tokens seen, loss (nats/token), learning rate, training seconds so far
    train_curve: dict[str, list] = field(
        default_factory=lambda: {"step": [], "tokens": [], "loss": [], "lr": [], "seconds": []}
    )
    heldout_curve: dict[str, list] = field(default_factory=lambda: {"step": [], "tokens": [], "loss": []})
    samples: list[Sample] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, Tensor] = field(default_factory=dict)  # prompt_tokens, mlp_post.init, mlp_post.final

    def add_train_step(self, step: int, tokens: int, loss: float, lr: float, seconds: float) -> None:
        for key, value in zip(("step", "tokens", "loss", "lr", "seconds"), (step, tokens, loss, lr, seconds)):
            self.train_curve[key].append(value)

    def add_heldout(self, step: int, tokens: int, loss: float) -> None:
        for key, value in zip(("step", "tokens", "loss"), (step, tokens, loss)):
            self.heldout_curve[key].append(value)

    def save(self, folder: str | Path) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        body = {k: v for k, v in asdict(self).items() if k != "tensors"}
        body = {"format": RECORD_FORMAT, "format_version": RECORD_FORMAT_VERSION, "mlp_hook": MLP_HOOK, **body}
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.tensors.items()}
        for name, write in (
            (TENSORS_FILE, lambda p: save_file(tensors, str(p))),
            (RECORD_FILE, lambda p: p.write_text(json.dumps(body) + "\n")),
        ):
            tmp = folder / (name + ".tmp")
            write(tmp)
            os.replace(tmp, folder / name)

    @classmethod
    def load(cls, folder: str | Path) -> TrainingRecord:
        from safetensors.torch import load_file

        folder = Path(folder)
        for name in (RECORD_FILE, TENSORS_FILE):
            if not (folder / name).is_file():
                raise FileNotFoundError(
                    f"model folder {folder} has no {name}; it was not trained by `interp model train`."
                )
        body = json.loads((folder / RECORD_FILE).read_text())
        if body.get("format") != RECORD_FORMAT or body.get("format_version") != RECORD_FORMAT_VERSION:
            raise ValueError(f"{folder / RECORD_FILE} is not a version-{RECORD_FORMAT_VERSION} {RECORD_FORMAT} file.")
        for key in ("format", "format_version", "mlp_hook"):
            body.pop(key)
        body["samples"] = [Sample(**s) for s in body["samples"]]
        return cls(**body, tensors=load_file(str(folder / TENSORS_FILE)))


def mlp_activations(bridge: Any, tokens: Tensor) -> Tensor:
    """MLP neuron activations [n_layers, pos, d_mlp] of a bridge on one sequence `tokens` [pos]."""
    n_layers = bridge.cfg.n_layers
    names = [MLP_HOOK.format(layer=i) for i in range(n_layers)]
    device = next(bridge.parameters()).device
    with torch.no_grad():
        _, cache = bridge.run_with_cache(tokens[None].to(device), names_filter=lambda name: name in names)
    return torch.stack([cache[name][0].float().cpu() for name in names])
