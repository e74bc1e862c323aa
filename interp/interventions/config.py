"""The interventions room's configs, one per command: `interp eval` and `interp steer`. Imports no torch,
so that --help answers without it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from interp.model.config import Split, corpus_field, corpus_seed_field, model_field, split_field
from sae.schema import device_field, sae_dir_field, seed_field


def hook_field() -> Any:
    """--hook: the hook an SAE reads; none: the one its cfg.json names."""
    return field(default=None, metadata={"help": "hook the SAE reads; none: the one its cfg.json names (hook_name)"})


@dataclass(kw_only=True)
class EvalConfig:
    """`interp eval`: the model run on held-out text clean, with the SAE spliced in, and zero-ablated."""

    model: str = model_field()
    sae: str = sae_dir_field()
    hook: str | None = hook_field()
    corpus: str | None = corpus_field(None)
    split: Split = split_field("heldout")
    corpus_seed: int = corpus_seed_field()
    tokens: int = field(default=32768, metadata={"help": "tokens to evaluate"})
    context_length: int | None = field(
        default=None, metadata={"help": "tokens per window; none: the SAE's context_size, else the model's"}
    )
    batch_size: int = field(default=16, metadata={"help": "windows per forward pass"})
    device: str | None = device_field()

    def validate(self) -> None:
        if self.tokens <= 0 or self.batch_size <= 0:
            raise ValueError(f"--tokens and --batch-size must be positive, got {self.tokens} and {self.batch_size}")


def feature_value(text: str) -> str:
    """ID=VALUE, checked as parsed (the text is kept; `SteerConfig.clamps` reads it)."""
    parse_feature_value(text)
    return text


def parse_feature_value(text: str) -> tuple[int, float]:
    """ID=VALUE -> (id, value)."""
    feature, sep, value = text.partition("=")
    try:
        if not sep:
            raise ValueError
        return int(feature), float(value)
    except ValueError:
        raise ValueError(f"expected ID=VALUE (e.g. 1689=8.0), got {text!r}") from None


@dataclass(kw_only=True)
class SteerConfig:
    """`interp steer`: a prompt continued with features clamped, beside the clean continuation."""

    model: str = model_field()
    sae: str = sae_dir_field()
    prompt: str = field(metadata={"help": "text to continue (after BOS)"})
    feature: list[str] = field(
        metadata={
            "repeat": True,
            "metavar": "ID=VALUE",
            "check": feature_value,
            "help": "clamp feature ID to VALUE (SAE activation units) at every position; repeat for several",
        }
    )
    tokens: int = field(default=40, metadata={"help": "tokens to generate"})
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy"})
    seed: int = seed_field("the sampling, the same for both runs")
    device: str | None = device_field()

    @property
    def clamps(self) -> list[tuple[int, float]]:
        """(feature id, value) of every --feature, in order."""
        return [parse_feature_value(text) for text in self.feature]

    def validate(self) -> None:
        if self.tokens <= 0:
            raise ValueError(f"--tokens must be positive, got {self.tokens}.")
        if self.temperature < 0:
            raise ValueError(f"--temperature must be >= 0, got {self.temperature}.")
        if not self.feature:
            raise ValueError("give at least one --feature ID=VALUE.")
        self.clamps  # noqa: B018 (parses every --feature, raising on the first bad one)
