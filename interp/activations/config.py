"""The activations room's configs, one per command: `interp hooks`, `interp capture` and `interp train-sae`
(whose trainer and SAE configs are sae.config's). Imports no torch, so that --help answers without it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from interp.model.config import Split, corpus_field, corpus_seed_field, model_field, split_field
from sae.schema import device_field

ModelAutocast = Literal["none", "bfloat16", "float16"]  # autocast dtypes of a streamed SAE run's forward pass
MODEL_AUTOCAST = get_args(ModelAutocast)


def hooks_field() -> Any:
    """--hook NAME, repeated: the hooks a command reads; at least one."""
    return field(
        metadata={
            "option": "--hook",
            "repeat": True,
            "metavar": "NAME",
            "help": "hook name, e.g. blocks.0.mlp.hook_post; repeat for several (`interp hooks` lists them)",
        }
    )


@dataclass(kw_only=True)
class HooksConfig:
    """`interp hooks`: every hook name of a model with its activation shape."""

    model: str = model_field()
    device: str | None = device_field()


@dataclass(kw_only=True)
class CaptureConfig:
    """`interp capture`: a model's activations at hooks, written to one activation dataset per hook."""

    model: str = model_field()
    hooks: list[str] = hooks_field()
    corpus: str = corpus_field()
    split: Split = split_field("train")
    corpus_seed: int = corpus_seed_field()
    tokens: int = field(metadata={"help": "number of tokens to capture"})
    out: str = field(metadata={"help": "output folder; one dataset per hook inside"})
    dtype: str = field(default="float32", metadata={"help": "storage dtype: float32, float16 or bfloat16"})
    batch_size: int = field(default=32, metadata={"help": "context windows per forward pass"})
    shard_tokens: int | None = field(
        default=None,
        metadata={"help": "tokens per shard, a multiple of the context length; none: about 64 MiB per shard"},
    )
    resume: bool = field(default=False, metadata={"help": "continue a killed capture from its last complete shard"})
    device: str | None = device_field()

    def validate(self) -> None:
        for flag, value in (("--tokens", self.tokens), ("--batch-size", self.batch_size)):
            if value <= 0:
                raise ValueError(f"{flag} must be positive, got {value}.")
        if self.shard_tokens is not None and self.shard_tokens <= 0:
            raise ValueError(f"--shard-tokens must be positive, got {self.shard_tokens}.")


@dataclass(kw_only=True)
class StreamConfig:
    """`interp train-sae`: where the activations an SAE trains on come from as the model runs, and where
    the run is written (the trainer's and the SAEs' own configs are sae.config's)."""

    model: str = model_field()
    hooks: list[str] = hooks_field()
    corpus: str = corpus_field()
    split: Split = split_field("train")
    corpus_seed: int = corpus_seed_field()
    tokens: int = field(metadata={"help": "tokens to stream through the model"})
    epochs: int = field(
        default=1,
        metadata={"help": "passes over the corpus at most, reshuffled each pass; 0: as many as --tokens needs"},
    )
    forward_batch: int = field(default=CaptureConfig.batch_size, metadata={"help": "context windows per forward pass"})
    model_autocast: ModelAutocast = field(
        default="none", metadata={"help": "autocast dtype of the model's forward pass"}
    )
    out: str = field(metadata={"help": "run folder: SAE(s), checkpoints, log.jsonl, train_config.json"})
    resume: bool = field(
        default=False, metadata={"help": "continue the run in --out from its last checkpoint (give the same arguments)"}
    )

    def validate(self) -> None:
        if self.tokens <= 0 or self.forward_batch <= 0:
            raise ValueError(
                f"--tokens and --forward-batch must be positive, got {self.tokens} and {self.forward_batch}."
            )
        if self.epochs < 0:
            raise ValueError(f"--epochs must be positive (or 0 for as many as --tokens needs), got {self.epochs}.")
        if self.model_autocast not in MODEL_AUTOCAST:
            raise ValueError(f"--model-autocast {self.model_autocast!r} is not one of {list(MODEL_AUTOCAST)}.")
