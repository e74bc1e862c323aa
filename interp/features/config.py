"""The configs of the features room's commands that read an analysis without the model: `interp neurons`
and `interp search` (the analysis pass, the labels and the scorecard have their own, beside their code).
Imports no torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from interp.features.analysis.config import analysis_field

QueryKind = Literal["text", "token", "label", "logit", "nearest"]  # what `interp search` looks features up by
QUERY_KINDS = get_args(QueryKind)


@dataclass(kw_only=True)
class NeuronsConfig:
    """`interp neurons`: the most polysemantic MLP neurons and the features they split into."""

    analysis: str = analysis_field()
    top: int = field(default=10, metadata={"help": "neurons to list"})
    drivers: int = field(
        default=8, metadata={"help": "driving features listed per neuron (feature pages link back to the same)"}
    )
    min_positives: int = field(
        default=20, metadata={"help": "also compare only labels scored on at least this many held-out positives"}
    )


DRIVERS_LISTED = NeuronsConfig.drivers  # drivers a neuron lists (its page, `interp neurons`)


@dataclass(kw_only=True)
class SearchConfig:
    """`interp search`: features found by text, token, label, logit effect or direction."""

    index: str = analysis_field(option="--index")
    kind: QueryKind = field(metadata={"positional": True, "help": "what the query is"})
    query: str = field(metadata={"positional": True, "help": "the text, token, pattern or feature id"})
    top: int = field(default=10, metadata={"help": "results per query (per token for text)"})
    min_density: float | None = field(
        default=None, metadata={"help": "keep features firing on at least this share of tokens"}
    )
    max_density: float | None = field(
        default=None, metadata={"help": "keep features firing on at most this share of tokens"}
    )
    min_label_score: float | None = field(
        default=None, metadata={"help": "keep features whose label scores at least this"}
    )
    suppress: bool = field(default=False, metadata={"help": "logit: features that suppress the token instead"})
    rank: Literal["activation", "share_of_max"] = field(
        default="activation",
        metadata={
            "help": "text: order each token's features by activation, or by activation as a share of the feature's max "
            "(keeps a dense feature from heading every token)"
        },
    )

    def validate(self) -> None:
        if self.top <= 0:
            raise ValueError(f"--top must be positive, got {self.top}.")
