"""The model room's configs: where a command's model and text come from (--model, --corpus, --split,
--corpus-seed, each defined here once for every command), the shape of our native transformer, how it
is trained, and the `interp model` commands. Imports no torch, so that --help answers without it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from interp.model.tokenizer import DEFAULT_VOCAB_SIZE
from sae.schema import check_choices, device_field, seed_field

BUILTIN_CORPORA = ("stdlib", "shakespeare", "mix")
SPLITS = ("train", "heldout", "all")
Split = Literal["train", "heldout", "all"]
CORPUS_SPEC = "stdlib, shakespeare, mix, a text file or glob, a .jsonl file (field text), or hf:NAME[:CONFIG[:SPLIT]]"


# --- where a command's model and text come from -------------------------------------------------------
def model_field() -> Any:
    """--model SPEC; required."""
    return field(
        metadata={
            "option": "--model",
            "metavar": "SPEC",
            "help": "model folder (`interp model train`), local Hugging Face checkpoint folder, or Hugging Face "
            "model name",
        }
    )


def corpus_field(default: str | None = "stdlib") -> Any:
    """--corpus SPEC; None: the corpus the model folder records it was trained on."""
    unset = "; none: the model's training corpus" if default is None else ""
    return field(
        default=default, metadata={"option": "--corpus", "metavar": "SPEC", "help": f"corpus: {CORPUS_SPEC}{unset}"}
    )


def split_field(default: str) -> Any:
    """--split: the part of the corpus a command reads (train: what models and SAEs learn from)."""
    return field(
        default=default,
        metadata={"option": "--split", "help": "corpus split (heldout: text the model and SAE were not trained on)"},
    )


def corpus_seed_field() -> Any:
    """--corpus-seed: the document order of a corpus's token windows, the same in every command."""
    return field(default=0, metadata={"option": "--corpus-seed", "help": "seed of the corpus's document order"})


# --- the model and its training -----------------------------------------------------------------------
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


STDLIB_PROMPT = 'def read_config(path):\n    """Read the settings file at path."""\n    with open(path) as f:\n'
SHAKESPEARE_PROMPT = "To be, or not to be, that is the question:"
PROMPTS = {"stdlib": STDLIB_PROMPT, "shakespeare": SHAKESPEARE_PROMPT}  # built-in corpora's record prompts
MODEL_TRAIN_TOKENS = 8_000_000  # the budget when neither --tokens nor --minutes is given


@dataclass
class ModelTrainConfig:
    """How to train; every field is a `interp model train` option of the same name."""

    corpus: str = corpus_field()
    tokens: int | None = field(
        default=None,
        metadata={"help": f"training budget in tokens ({MODEL_TRAIN_TOKENS:,} when --minutes is not given)"},
    )
    minutes: float | None = field(
        default=None,
        metadata={"help": "training budget in minutes of training steps, instead of --tokens (differs per machine)"},
    )
    seed: int = seed_field("weights, data order and samples")
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
    device: str = device_field("cpu")

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


@dataclass(kw_only=True)
class ModelFolder:
    """Where `interp model train` and `interp model init` write."""

    out: str = field(metadata={"help": "folder to write the model into"})
    overwrite: bool = field(
        default=False, metadata={"help": "replace a model already in --out (what was built on it goes stale)"}
    )


@dataclass(kw_only=True)
class InitConfig(ModelFolder):
    """`interp model init`: a trained model folder saved as it was at initialisation."""

    like: str = field(metadata={"metavar": "DIR", "help": "a model folder saved by `interp model train`"})


@dataclass(kw_only=True)
class SampleConfig:
    """`interp model sample`: a prompt continued by a model."""

    model: str = model_field()
    prompt: str = field(metadata={"help": "text to continue"})
    tokens: int = field(default=64, metadata={"help": "number of tokens to generate"})
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy"})
    seed: int = seed_field("the sampling")
    device: str | None = device_field()
