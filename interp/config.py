"""The configs of interp's steps, and the names and defaults its command line shows: typed dataclasses
whose fields are options (sae.options renders them), each a step's settings, and the constants that
the library uses as defaults and the help states.

This module imports no torch, so that the command line builds its parsers, and prints --help, without it;
the analysis pass's config is interp.analysis.config, the SAEs' are in sae.config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from interp.analysis.config import AnalysisConfig
from interp.scorecard.concepts import SUITES, ConceptSuite, default_sources
from interp.tokenizer import DEFAULT_VOCAB_SIZE
from sae.config import TrainConfig as SAETrainConfig
from sae.options import check_choices, sweep_names

# --- corpora and model runs ---------------------------------------------------------------------------
BUILTIN_CORPORA = ("stdlib", "shakespeare")
SPLITS = ("train", "heldout", "all")
FORWARD_BATCH_SIZE = 32  # context windows per forward pass of a capture or a streamed SAE run
MODEL_AUTOCAST = ("none", "bfloat16", "float16")  # autocast dtypes of a streamed SAE run's forward pass
EVAL_TOKENS = 32768  # held-out tokens `interp eval` runs
EVAL_BATCH_SIZE = 16  # windows per forward pass of `interp eval`


# --- the model and its training ---------------------------------------------------------------------
@dataclass
class ModelConfig:
    """Shape of our native transformer (pre-LN, learned positions, GELU MLP, untied unembedding)."""

    n_layers: int = field(default=1, metadata={"help": "transformer blocks"})
    d_model: int = field(default=128, metadata={"help": "residual width"})
    n_heads: int = field(default=4, metadata={"help": "attention heads"})
    d_mlp: int = field(default=512, metadata={"help": "MLP neurons per block"})
    context_length: int = field(default=128, metadata={"help": "tokens per training window"})
    d_vocab: int = field(default=4096, metadata={"help": "vocabulary size (set from the tokenizer)"})
    act_fn: str = field(default="gelu", metadata={"help": "MLP activation"})
    normalization_type: str = field(default="LN", metadata={"help": "normalisation of each block"})
    seed: int = field(default=0, metadata={"help": "seed of the weight initialisation"})

    def validate(self) -> None:
        for name in ("n_layers", "d_model", "n_heads", "d_mlp", "context_length", "d_vocab"):
            if getattr(self, name) <= 0:
                raise ValueError(f"model config field {name} must be positive, got {getattr(self, name)}.")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}).")

    def tl_config(self) -> dict[str, Any]:
        """The TransformerBridgeConfig fields of this model, for `TransformerBridge.boot_native`."""
        return dict(
            n_layers=self.n_layers,
            d_model=self.d_model,
            n_heads=self.n_heads,
            d_head=self.d_model // self.n_heads,
            d_mlp=self.d_mlp,
            n_ctx=self.context_length,
            d_vocab=self.d_vocab,
            act_fn=self.act_fn,
            normalization_type=self.normalization_type,
            positional_embedding_type="standard",
            seed=self.seed,
        )


STDLIB_PROMPT = 'def read_config(path):\n    """Read the settings file at path."""\n    with open(path) as f:\n'
SHAKESPEARE_PROMPT = "To be, or not to be, that is the question:"
PROMPTS = {"stdlib": STDLIB_PROMPT, "shakespeare": SHAKESPEARE_PROMPT}  # built-in corpora's record prompts
MODEL_TRAIN_TOKENS = 8_000_000  # the budget when neither --tokens nor --minutes is given


@dataclass
class ModelTrainConfig:
    """How to train; every field is a `interp model train` option of the same name."""

    corpus: str = field(
        default="stdlib",
        metadata={"help": "corpus spec: stdlib, shakespeare, a path/glob, or hf:NAME[:CONFIG[:SPLIT]]"},
    )
    tokens: int | None = field(
        default=None,
        metadata={"help": f"training budget in tokens ({MODEL_TRAIN_TOKENS:,} when --minutes is not given)"},
    )
    minutes: float | None = field(
        default=None,
        metadata={"help": "training budget in minutes of training steps, instead of --tokens (differs per machine)"},
    )
    seed: int = field(default=0, metadata={"help": "seed of weights, data order and samples"})
    batch_size: int = field(default=16, metadata={"help": "sequences per step"})
    lr: float = field(default=1.5e-3, metadata={"help": "peak learning rate"})
    min_lr_fraction: float = field(default=0.1, metadata={"help": "final learning rate as a fraction of --lr"})
    warmup_steps: int = field(default=30, metadata={"help": "linear warm-up steps"})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay (matrices only)"})
    grad_clip: float = field(default=1.0, metadata={"help": "max gradient norm (0 = off)"})
    autocast: Literal["auto", "none", "bfloat16"] = field(
        default="auto",
        metadata={
            "help": "dtype of the training forward pass; auto: bfloat16 where the hardware multiplies it natively "
            "(CUDA compute capability 8+, CPUs with AVX512-BF16 or AMX), else none (float32)."
        },
    )
    fused_adam: bool = field(
        default=True, metadata={"help": "single-kernel AdamW where torch has one for the device (cpu, cuda)"}
    )
    vocab_size: int = field(default=DEFAULT_VOCAB_SIZE, metadata={"help": "BPE vocabulary size"})
    tokenizer: str | None = field(default=None, metadata={"help": "reuse this tokenizer.json instead of training one"})
    tokenizer_chars: int = field(
        default=50_000_000, metadata={"help": "characters of training text the tokenizer learns from"}
    )
    eval_tokens: int = field(
        default=131_072, metadata={"help": "held-out tokens per evaluation (fewer when the held-out split is shorter)"}
    )
    heldout_points: int = field(
        default=8, metadata={"help": "held-out evaluations spread over training (plus start and end)"}
    )
    prompt: str | None = field(
        default=None,
        metadata={
            "help": "fixed prompt of the training record; default: a function opening for stdlib, "
            f"{SHAKESPEARE_PROMPT!r} for shakespeare, else the first held-out lines"
        },
    )
    sample_tokens: int = field(default=48, metadata={"help": "tokens sampled from the prompt at each record point"})
    sample_temperature: float = field(default=0.8, metadata={"help": "temperature of the record's non-greedy samples"})
    story_points: list[float] = field(
        default_factory=lambda: [0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.7],
        metadata={
            "help": "progress fractions at which to sample text (besides start and end); dense early, where the "
            "text changes fastest"
        },
    )
    device: str = field(default="cpu", metadata={"help": "torch device"})

    def validate(self) -> None:
        if self.tokens is not None and self.minutes is not None:
            raise ValueError("give either tokens or minutes as the training budget, not both.")
        if (self.tokens is not None and self.tokens <= 0) or (self.minutes is not None and self.minutes <= 0):
            raise ValueError(f"the training budget must be positive, got tokens={self.tokens}, minutes={self.minutes}.")
        if self.batch_size <= 0 or self.lr <= 0:
            raise ValueError(f"batch_size and lr must be positive, got {self.batch_size} and {self.lr}.")
        if self.eval_tokens <= 0:
            raise ValueError(f"eval_tokens must be positive, got {self.eval_tokens}.")
        if any(not 0 < p < 1 for p in self.story_points):
            raise ValueError(f"story_points must lie strictly between 0 and 1, got {list(self.story_points)}.")
        check_choices(self)

    def budget(self) -> tuple[int | None, float | None]:
        """(tokens, seconds): the budget, MODEL_TRAIN_TOKENS when none was given."""
        if self.tokens is None and self.minutes is None:
            return MODEL_TRAIN_TOKENS, None
        return self.tokens, None if self.minutes is None else self.minutes * 60


# --- labels, neurons, search, export -----------------------------------------------------------------
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


# language-model explanations (interp.labels.llm): the endpoint's environment variables, the response cache
ENV_BASE_URL, ENV_MODEL, ENV_API_KEY = "MONOSEMANTIC_LLM_BASE_URL", "MONOSEMANTIC_LLM_MODEL", "MONOSEMANTIC_LLM_API_KEY"
CACHE_DIR = "llm_cache"  # inside the analysis folder unless given
DRIVERS_LISTED = 8  # drivers a neuron lists (its page, `interp neurons`); feature pages link back to the same
QUERY_KINDS = ("text", "token", "label", "logit", "nearest")  # what `interp search` looks features up by
DEFAULT_CREATOR = "monosemantic"  # Neuronpedia export: the user id that owns the records
FEATURES_PER_BATCH = 1024  # Neuronpedia export: features per batch-N file


# --- the scorecard -----------------------------------------------------------------------------------
@dataclass
class ScorecardConfig:
    tokens: int = 2**16  # token positions read (whole windows; BOS positions are not scored)
    split: str = "heldout"
    seed: int = 0  # the corpus order, as `interp capture --seed`
    suite: str = "auto"  # which built-in concepts: auto (by corpus), python, text, shakespeare (comma-separated)
    concepts: tuple[str, ...] = ()  # user concepts NAME=REGEX
    min_positives: int = 10  # a concept is scored when both token halves hold at least this many positives
    examples: int = 20  # top examples per unit for logit consistency
    promoted: int = 10  # the unit's most promoted tokens for logit consistency
    batch_size: int = 32  # windows per forward pass

    def validate(self) -> None:
        """Check every setting, the suite and the user concepts included."""
        if self.tokens <= 0:
            raise ValueError(f"--tokens must be positive, got {self.tokens}.")
        if self.split not in SPLITS:
            raise ValueError(f"--split {self.split!r} is not one of {list(SPLITS)}.")
        for name in ("min_positives", "examples", "promoted", "batch_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"the scorecard's {name} must be positive, got {getattr(self, name)}.")
        self.suite_for("stdlib")

    def suite_for(self, corpus: str) -> ConceptSuite:
        parts = [s.strip() for s in self.suite.split(",") if s.strip()]
        if not parts or any(p not in SUITES for p in parts) or ("auto" in parts and len(parts) > 1):
            raise ValueError(f"--suite {self.suite!r}: give auto, or a comma-separated list of {list(SUITES[1:])}.")
        return ConceptSuite(default_sources(corpus) if parts == ["auto"] else parts, self.concepts)


# --- the demo ------------------------------------------------------------------------------------------
DEFAULT_OUT = Path("artifacts/demo")


@dataclass
class DemoConfig:
    """Settings of every step. The defaults are the `demo` preset on stdlib; tests shrink them."""

    out: Path = DEFAULT_OUT
    train: ModelTrainConfig = field(default_factory=lambda: ModelTrainConfig(corpus="stdlib", tokens=8_000_000))
    model: ModelConfig = field(default_factory=ModelConfig)  # 1 layer, d_model 128, 512 MLP neurons, context 128
    hooks: tuple[str, ...] = ("blocks.0.mlp.hook_post", "blocks.0.hook_resid_post")
    capture_tokens: int = 2**18
    capture_dtype: str = "float32"
    sae_hook: str = "blocks.0.mlp.hook_post"
    sae_arch: str = "topk"
    sae_fields: dict = field(default_factory=lambda: {"d_sae": 2048, "k": 16})  # 4x the 512 neurons
    sae_tokens: int = 3_000_000  # streamed from the model's training split (3.35M tokens of stdlib)
    sae_epochs: int | None = None  # passes over the split at most (None: as many as sae_tokens needs)
    sae_train: SAETrainConfig = field(
        default_factory=lambda: SAETrainConfig(batch_size=2048, lr=1e-3, device="cpu", checkpoint_every=500)
    )
    analysis: AnalysisConfig = field(default_factory=lambda: AnalysisConfig(tokens=2**16))
    scorecard: ScorecardConfig = field(default_factory=lambda: ScorecardConfig(tokens=2**16))
    widths: tuple[int, ...] = (512, 1024)  # d_sae of the splitting SAEs beside the main one
    universality_seed: int = 1  # seed of the second SAE (and, with universality_model, the second model)
    universality_model: bool = False  # also train a second model (paper preset): neuron universality
    labels: LabelConfig = field(default_factory=LabelConfig)
    report: Path | None = None  # report folder; None: OUT/report (`interp demo` writes reports/demo)
    progress: bool = True

    @property
    def corpus(self) -> str:
        return self.train.corpus

    def validate(self) -> None:
        """Check every setting before the first step runs (a bad value must not cost a trained model)."""
        self.train.validate()
        self.model.validate()
        self.sae_train.validate()
        for name in ("capture_tokens", "sae_tokens"):
            if getattr(self, name) <= 0:
                raise ValueError(f"the demo's {name} must be positive, got {getattr(self, name)}.")
        if self.sae_tokens < self.sae_train.batch_size:
            raise ValueError(
                f"the demo's sae_tokens ({self.sae_tokens}) is less than one SAE batch ({self.sae_train.batch_size})."
            )
        self.scorecard.validate()
        if any(w <= 0 for w in self.widths) or self.sae_fields.get("d_sae") in self.widths:
            raise ValueError(
                f"the demo's widths {list(self.widths)} must be positive and differ from the main SAE's d_sae "
                f"({self.sae_fields.get('d_sae')}), which joins them."
            )
        if self.universality_seed == self.sae_train.seed:
            raise ValueError(f"the demo's universality_seed must differ from the SAE seed {self.sae_train.seed}.")
        if self.sae_hook not in self.hooks:
            raise ValueError(f"the demo's sae_hook {self.sae_hook!r} is not one of its hooks {list(self.hooks)}.")

    @property
    def model_dir(self) -> Path:
        return self.out / "model"

    @property
    def activations_dir(self) -> Path:
        """One activation dataset per hook inside: activations/<hook name>/."""
        return self.out / "activations"

    @property
    def sae_dir(self) -> Path:
        return self.out / "sae"

    @property
    def analysis_dir(self) -> Path:
        return self.out / "analysis"

    @property
    def control_dir(self) -> Path:
        """The random-init control: control/model (the model at initialisation) and control/sae."""
        return self.out / "control"

    @property
    def seed_sae_dir(self) -> Path:
        return self.out / f"sae-seed{self.universality_seed}"

    @property
    def widths_dir(self) -> Path:
        """One SAE per width inside: sae-widths/d_sae<W>/ (one width: the folder itself)."""
        return self.out / "sae-widths"

    @property
    def width_sae_dirs(self) -> list[Path]:
        names = sweep_names([{"d_sae": w} for w in self.widths])
        return [self.widths_dir / name for name in names]

    @property
    def seed_model_dir(self) -> Path:
        return self.out / f"model-seed{self.universality_seed}"

    @property
    def scorecard_dir(self) -> Path:
        return self.out / "scorecard"

    @property
    def report_dir(self) -> Path:
        return self.report if self.report is not None else self.out / "report"


def demo_config(preset: str = "demo", corpus: str = "stdlib", **fields) -> DemoConfig:
    """The DemoConfig of a preset (PRESETS) on a corpus; fields override DemoConfig's own (out, report, ...)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown demo preset {preset!r}; choose one of {list(PRESETS)}.")
    cfg = DemoConfig(**fields)
    PRESETS[preset](cfg)
    cfg.train.corpus = corpus
    return cfg


def _paper(cfg: DemoConfig) -> None:
    """About an hour on 2 cores: the model trains for most of it; 4096 latents (8x the neurons) on 50M tokens."""
    cfg.train.tokens = 80_000_000
    cfg.sae_fields = {"d_sae": 4096, "k": 16}
    cfg.sae_tokens = 50_000_000
    cfg.sae_train = dataclasses.replace(cfg.sae_train, batch_size=4096, checkpoint_every=1000)
    cfg.widths = (1024, 2048)
    cfg.universality_model = True


PRESETS: dict[str, Callable[[DemoConfig], None]] = {"demo": lambda cfg: None, "paper": _paper}
