"""The training story of a model, kept in its folder for reports to tell:

training.json                  loss curves (train per step, held-out at fixed points), text sampled
                               from a fixed prompt at the start / along the way / at the end, a summary
training_tensors.safetensors   `prompt_tokens` [pos] int64 and the MLP neuron activations on that
                               prompt, `mlp_post.init` and `mlp_post.final` [n_layers, pos, d_mlp]
                               (hook `blocks.{layer}.mlp.hook_post`)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from sae.files import read_json, read_safetensors, write_json, write_safetensors

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
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        body = {k: v for k, v in asdict(self).items() if k != "tensors"}
        body = {"format": RECORD_FORMAT, "format_version": RECORD_FORMAT_VERSION, "mlp_hook": MLP_HOOK, **body}
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.tensors.items()}
        write_safetensors(folder / TENSORS_FILE, tensors)
        write_json(folder / RECORD_FILE, body, indent=None)

    @classmethod
    def load(cls, folder: str | Path) -> TrainingRecord:
        folder = Path(folder)
        for name in (RECORD_FILE, TENSORS_FILE):
            if not (folder / name).is_file():
                raise FileNotFoundError(
                    f"model folder {folder} has no {name}; it was not trained by `interp model train`."
                )
        body = read_json(folder / RECORD_FILE, fix="re-train the model with `interp model train`")
        if body.get("format") != RECORD_FORMAT or body.get("format_version") != RECORD_FORMAT_VERSION:
            raise ValueError(f"{folder / RECORD_FILE} is not a version-{RECORD_FORMAT_VERSION} {RECORD_FORMAT} file.")
        for key in ("format", "format_version", "mlp_hook"):
            body.pop(key)
        body["samples"] = [Sample(**s) for s in body["samples"]]
        return cls(**body, tensors=read_safetensors(folder / TENSORS_FILE, fix="re-train the model"))
