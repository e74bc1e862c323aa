"""The labels' configs: how rules are built (`LabelConfig`) and the `interp label` command, with its
optional language-model explanations (the endpoint comes from options or the environment, the API key
from the environment only). Imports no torch."""

from __future__ import annotations

from dataclasses import dataclass, field

from interp.features.analysis.config import analysis_field

# language-model explanations (interp.features.labels.llm): the endpoint's environment variables, the cache
ENV_BASE_URL, ENV_MODEL, ENV_API_KEY = "MONOSEMANTIC_LLM_BASE_URL", "MONOSEMANTIC_LLM_MODEL", "MONOSEMANTIC_LLM_API_KEY"
CACHE_DIR = "llm_cache"  # inside the analysis folder unless given


@dataclass
class LabelConfig:
    """How rules are built; every field is an `interp label` option of the same name."""

    coverage: float = field(default=0.8, metadata={"help": "share of the activation mass the token set must hold"})
    max_tokens: int = field(default=6, metadata={"help": "largest token set a label names"})
    context_offsets: int = field(
        default=2, metadata={"help": "preceding positions searched for a fixed token at the peak"}
    )
    context_min_share: float = field(
        default=0.6, metadata={"help": "share of build top examples a preceding token must appear in"}
    )
    min_lift: float = field(default=2.0, metadata={"help": "a fact must be this many times its base rate"})
    predicts_tokens: int = field(
        default=10, metadata={"help": "promoted tokens an actual next token is checked against"}
    )
    predicts_min_agreement: float = field(
        default=0.3, metadata={"help": "share of firings followed by a promoted token to say 'predicts'"}
    )
    class_min_share: float = field(default=0.8, metadata={"help": "share of peaks in a character class to name it"})
    context_wide_share: float = field(
        default=0.3, metadata={"help": "mean share of its sequences' tokens a context-wide feature is active on"}
    )
    context_tokens: int = field(default=3, metadata={"help": "tokens named by a context rule"})

    def validate(self) -> None:
        for name in (
            "coverage",
            "context_min_share",
            "predicts_min_agreement",
            "class_min_share",
            "context_wide_share",
        ):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"label option {name} must be in (0, 1], got {getattr(self, name)}.")
        for name in ("max_tokens", "predicts_tokens", "context_tokens", "min_lift"):
            if getattr(self, name) <= 0:
                raise ValueError(f"label option {name} must be positive, got {getattr(self, name)}.")
        if self.context_offsets < 0:
            raise ValueError(f"label option context_offsets must be >= 0, got {self.context_offsets}.")


@dataclass(kw_only=True)
class LLMOptions:
    """Language-model explanations of `interp label` (optional, off by default)."""

    llm: bool = field(
        default=False, metadata={"help": "also explain and score features with a chat-completions endpoint"}
    )
    llm_base_url: str | None = field(
        default=None, metadata={"help": f"endpoint base URL, e.g. http://localhost:8000/v1; none: ${ENV_BASE_URL}"}
    )
    llm_model: str | None = field(default=None, metadata={"help": f"model name; none: ${ENV_MODEL}"})
    llm_cache: str | None = field(
        default=None, metadata={"help": f"response cache folder; none: <analysis>/{CACHE_DIR}"}
    )
    llm_features: int = field(default=50, metadata={"help": "features to explain, most often firing first"})


@dataclass(kw_only=True)
class LabelRunConfig:
    """`interp label`: labels.json beside an analysis (and neurons/labels.json)."""

    analysis: str = analysis_field()
    neurons: bool = field(default=True, metadata={"help": "label the MLP neurons of the analysis too"})
    labels: LabelConfig = field(default_factory=LabelConfig, metadata={"help": "labels"})
    explanations: LLMOptions = field(
        default_factory=LLMOptions, metadata={"help": "language-model explanations (optional, off by default)"}
    )
