"""What the analysis pass collects: `AnalysisConfig`, whose fields are the `interp analyze` options. It imports
no torch, so that the command line renders it without torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from interp.interventions.config import hook_field
from interp.model.config import Split, corpus_field, corpus_seed_field, model_field, split_field
from sae.schema import device_field, sae_dir_field


@dataclass
class AnalysisConfig:
    """What the pass collects; every field is an `interp analyze` option of the same name."""

    tokens: int = field(default=262_144, metadata={"help": "tokens to analyse (whole context windows, rounded up)"})
    batch_size: int | None = field(
        default=None,
        metadata={"help": "context windows per forward pass (default: about 2^25 feature activations per batch)"},
    )
    top_k: int = field(default=16, metadata={"help": "top-activating examples kept per feature (one per sequence)"})
    window_left: int = field(default=16, metadata={"help": "tokens of context before an example's peak"})
    window_right: int = field(default=4, metadata={"help": "tokens of context after an example's peak"})
    intervals: int = field(default=6, metadata={"help": "activation octaves sampled below each feature's max"})
    interval_samples: int = field(default=4, metadata={"help": "examples kept per octave"})
    bins_per_octave: int = field(default=4, metadata={"help": "activation histogram bins per factor of 2"})
    histogram_low_exp: int = field(default=-20, metadata={"help": "histogram's lowest bin edge, as a power of 2"})
    histogram_high_exp: int = field(default=12, metadata={"help": "histogram's highest bin edge, as a power of 2"})
    top_tokens: int = field(default=32, metadata={"help": "tokens with the most activation mass kept per feature"})
    neighbours: int = field(
        default=16,
        metadata={"help": "nearest / co-firing features, promoted / suppressed tokens and neurons kept per feature"},
    )
    logit_bins: int = field(default=40, metadata={"help": "bins of each feature's logit-effect histogram"})
    cofire_max_active: int = field(
        default=64,
        metadata={
            "help": "co-firing counts use at most this many strongest features per token (0: no co-firing counts)"
        },
    )
    random_sequences: int = field(
        default=64,
        metadata={
            "help": "context windows kept whole with all their feature activations (a random sample for scoring labels)"
        },
    )
    ablation_examples: int = field(
        default=4,
        metadata={
            "help": "top examples per feature re-run with the feature ablated, for its effect on the next token "
            "(0: none)"
        },
    )
    ignore_bos: bool = field(default=True, metadata={"help": "leave BOS tokens out of every statistic"})
    ignore_tokens: list[str] = field(
        default_factory=list, metadata={"help": "token strings (or ids) to leave out, comma separated"}
    )
    dense_pair_limit: int = field(
        default=2**24,
        metadata={"help": "token-mass and co-firing tables are dense up to this many cells, sparse above"},
    )
    max_pairs: int = field(
        default=2**24,
        metadata={
            "help": "a sparse pair table holding more pairs than this is pruned to each feature's strongest (then "
            "approximate)"
        },
    )
    seed: int = corpus_seed_field()

    def validate(self) -> None:
        for name in (
            "tokens",
            "top_k",
            "intervals",
            "interval_samples",
            "bins_per_octave",
            "top_tokens",
            "neighbours",
            "logit_bins",
            "dense_pair_limit",
            "max_pairs",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"analysis option {name} must be positive, got {getattr(self, name)}.")
        for name in ("window_left", "window_right", "random_sequences", "cofire_max_active", "ablation_examples"):
            if getattr(self, name) < 0:
                raise ValueError(f"analysis option {name} must be >= 0, got {getattr(self, name)}.")
        if self.batch_size is not None and self.batch_size <= 0:
            raise ValueError(f"analysis option batch_size must be positive, got {self.batch_size}.")
        if self.histogram_high_exp <= self.histogram_low_exp:
            raise ValueError(
                f"histogram_high_exp ({self.histogram_high_exp}) must exceed histogram_low_exp "
                f"({self.histogram_low_exp})."
            )

    @property
    def window(self) -> int:
        return self.window_left + 1 + self.window_right

    @property
    def histogram_bins(self) -> int:
        """Bins in all: underflow, the log-spaced ones, overflow."""
        return (self.histogram_high_exp - self.histogram_low_exp) * self.bins_per_octave + 2


def ablation_batch_size(context_length: int, vocab: int) -> int:
    """Ablation runs per forward pass so that a batch's logits hold about 2^25 values (128 MiB float32)."""
    return max(1, (1 << 25) // (context_length * vocab))


def default_batch_size(d_sae: int, context_length: int) -> int:
    """Windows per batch so that a batch's dense activations hold about 2^25 values (128 MiB float32)."""
    return max(1, (1 << 25) // (d_sae * context_length))


def analysis_field(**metadata: Any) -> Any:
    """--analysis DIR: an analysis folder; required."""
    return field(metadata={"metavar": "DIR", "help": "analysis folder written by `interp analyze`", **metadata})


@dataclass(kw_only=True)
class AnalyzeConfig:
    """`interp analyze`: what the pass reads and where it writes, and what it collects."""

    model: str = model_field()
    sae: str = sae_dir_field()
    hook: str | None = hook_field()
    corpus: str | None = corpus_field(None)
    split: Split = split_field("heldout")
    out: str = field(metadata={"help": "analysis folder to write"})
    device: str | None = device_field()
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig, metadata={"help": "analysis"})
