"""The configs of SAEs, typed dataclasses whose fields are the `sae` command line's options
(sae.options renders them): the training config (serialised to `train_config.json`), each
architecture's config (serialised to the SAE's cfg.json) with the registry of architectures, and the
configs of `sae eval`, `sae convert` and the planted-feature benchmark.

This module imports no torch, so that the command line builds its parsers, and prints --help, without it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from sae.schema import check_choices, device_field, from_dict, sae_dir_field, seed_field

TRAIN_CONFIG = "train_config.json"  # in every run folder: the run's TrainConfig, architecture and sweep
MAX_DEAD_WINDOW_TOKENS = 10_000_000  # the window of Gao et al. (2024), for runs of billions of tokens
DEAD_WINDOW_RUN_FRACTION = 10  # the default window is a tenth of the run, so AuxK engages in short runs too


@dataclass
class TrainConfig:
    """How to train (shared by every SAE of a sweep). Sizes in tokens are counts of activation rows."""

    batch_size: int = field(
        default=4096, metadata={"help": "Tokens per optimizer step: the global batch, split across ranks."}
    )
    steps: int | None = field(default=None, metadata={"help": "Optimizer steps; none: one pass over the dataset."})
    lr: float | None = field(
        default=None,
        metadata={
            "help": "Adam learning rate; none: 3e-3 * sqrt(2^14 / d_sae) * sqrt(256 / d_in) per SAE, at most 1e-2 "
            "(6e-3 at 4096 latents on 256-wide inputs)."
        },
    )
    lr_warmup_steps: int = field(default=0, metadata={"help": "Steps of linear learning-rate warm-up from 0."})
    lr_decay: Literal["none", "linear", "cosine"] = field(
        default="linear", metadata={"help": "Learning-rate decay to 0 over the last lr_decay_fraction of the steps."}
    )
    lr_decay_fraction: float = field(
        default=0.2, metadata={"help": "Fraction of the run (at its end) over which the learning rate decays."}
    )
    adam_beta1: float = field(default=0.9, metadata={"help": "Adam beta1."})
    adam_beta2: float = field(default=0.999, metadata={"help": "Adam beta2."})
    adam_eps: float = field(default=1e-8, metadata={"help": "Adam epsilon."})
    grad_clip_norm: float | None = field(
        default=None, metadata={"help": "Clip each SAE's gradient to this global L2 norm; none: no clipping."}
    )
    seed: int = seed_field("the SAE initialisation and of the data shuffle")
    device: str = device_field("auto")  # under torchrun each rank takes cuda:LOCAL_RANK
    dtype: Literal["float32", "float64", "bfloat16"] = field(
        default="float32", metadata={"help": "Parameter and activation dtype."}
    )
    autocast: Literal["none", "bfloat16", "float16"] = field(
        default="none",
        metadata={"help": "Autocast dtype of the training forward pass (float16 adds a gradient scaler)."},
    )
    selection_dtype: Literal["auto", "float32", "bfloat16"] = field(
        default="auto",
        metadata={
            "help": "Dtype of the encoder product that only chooses the active latents of TopK-family SAEs (topk, "
            "batchtopk, matryoshka); the chosen values, the loss and every gradient stay in the parameter dtype. auto: "
            "bfloat16 for float32 parameters on hardware that multiplies bfloat16 natively (CUDA compute capability "
            "8+, CPUs with AVX512-BF16 or AMX) in one process, else the parameter dtype (so that data-parallel "
            "processes equal one process)."
        },
    )
    b_dec_init: Literal["geometric_median", "mean", "zeros"] = field(
        default="geometric_median", metadata={"help": "Decoder-bias initialisation from the first init_tokens tokens."}
    )
    normalize_activations: bool = field(
        default=True,
        metadata={"help": "Train on x * s with s set so that E||x s||^2 = d_in; s is folded into the saved weights."},
    )
    init_tokens: int = field(
        default=65536,
        metadata={"help": "Tokens from the start of the stream used to estimate the activation scale and b_dec."},
    )
    dead_window_tokens: int | None = field(
        default=None,
        metadata={
            "help": "A latent is dead (AuxK trains it, the log counts it) when it has not fired in this many tokens; "
            "none: a tenth of the run, at least one batch and at most 10M."
        },
    )
    resample_steps: list[int] = field(
        default_factory=list,
        metadata={"help": "Steps at which dead latents are resampled (architectures with resample_dead: relu)."},
    )
    checkpoint_every: int = field(
        default=1000, metadata={"help": "Write a checkpoint every this many steps (0: only at the end)."}
    )
    log_every: int = field(default=10, metadata={"help": "Log metrics every this many steps."})
    shuffle_buffer: int = field(
        default=2**18, metadata={"help": "Rows of the activation dataset shuffled together (0: file order)."}
    )

    def dead_window(self, run_tokens: int) -> int:
        """The dead window in tokens for a run of run_tokens tokens (dead_window_tokens when set)."""
        if self.dead_window_tokens is not None:
            return self.dead_window_tokens
        return min(MAX_DEAD_WINDOW_TOKENS, max(self.batch_size, run_tokens // DEAD_WINDOW_RUN_FRACTION))

    def validate(self) -> None:
        """Raise ValueError naming the field when a value is out of range."""
        positive = {
            "batch_size": self.batch_size,
            "log_every": self.log_every,
            "init_tokens": self.init_tokens,
            **{
                name: getattr(self, name)
                for name in ("dead_window_tokens", "steps", "lr")
                if getattr(self, name) is not None  # none: resolved later
            },
        }
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"TrainConfig.{name} must be positive, got {value}")
        for name in ("lr_warmup_steps", "checkpoint_every", "shuffle_buffer"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.lr_decay_fraction <= 1:
            raise ValueError(f"TrainConfig.lr_decay_fraction must be in [0, 1], got {self.lr_decay_fraction}")
        if self.grad_clip_norm is not None and self.grad_clip_norm <= 0:
            raise ValueError(f"TrainConfig.grad_clip_norm must be positive or none, got {self.grad_clip_norm}")
        check_choices(self)


# --- SAE architectures -----------------------------------------------------------------------------
# Each architecture's config, the fields `sae train --arch NAME` renders as options. The architecture
# itself (parameters, encode, decode, loss) is its file in sae/architectures/, which imports torch;
# the configs live here so that the command line lists and documents them without importing torch.


@dataclass
class SAEConfig:
    """Fields every architecture has. Subclasses add their own (k, l1_coefficient, ...)."""

    d_in: int = field(metadata={"help": "Input width (the activation size per token)."})
    d_sae: int = field(metadata={"help": "Number of latents."})
    apply_b_dec_to_input: bool = field(
        default=True, metadata={"help": "The encoder sees x - b_dec (pre-encoder bias subtraction)."}
    )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SAEConfig:
        """Build from a dict, refusing unknown keys and wrong types by name (a typo never passes silently)."""
        return from_dict(cls, d, cls.__name__)

    def validate(self) -> None:
        """Raise ValueError naming the field when a value is out of range."""
        if self.d_in <= 0 or self.d_sae <= 0:
            raise ValueError(f"d_in and d_sae must be positive, got d_in={self.d_in}, d_sae={self.d_sae}")


@dataclass
class ReLUConfig(SAEConfig):
    """ReLU with an L1 penalty weighted by decoder norms."""

    l1_coefficient: float = field(default=5.0, metadata={"help": "Lambda after warm-up."})
    l1_warmup_fraction: float = field(
        default=0.05, metadata={"help": "Fraction of total steps over which lambda rises linearly from 0."}
    )
    decoder_init_norm: float = field(default=0.1, metadata={"help": "Norm of the initial decoder rows."})

    def validate(self) -> None:
        super().validate()
        if self.l1_coefficient < 0:
            raise ValueError(f"l1_coefficient must be >= 0, got {self.l1_coefficient}")
        if not 0 <= self.l1_warmup_fraction <= 1:
            raise ValueError(f"l1_warmup_fraction must be in [0, 1], got {self.l1_warmup_fraction}")
        if self.decoder_init_norm <= 0:
            raise ValueError(f"decoder_init_norm must be positive, got {self.decoder_init_norm}")

    def l1_coefficient_at(self, step: int, total_steps: int) -> float:
        """lambda at a 0-based step: l1_coefficient * min(1, step / (l1_warmup_fraction * total_steps))."""
        warmup_steps = self.l1_warmup_fraction * total_steps
        if warmup_steps <= 0:
            return self.l1_coefficient
        return self.l1_coefficient * min(1.0, step / warmup_steps)


@dataclass
class TopKConfig(SAEConfig):
    """TopK: each token keeps its k largest latents; AuxK reconstructs the error from dead latents."""

    k: int = field(default=32, metadata={"help": "Latents kept per token."})
    aux_k: int | None = field(default=None, metadata={"help": "Dead latents used by AuxK (none: d_in // 2)."})
    aux_coefficient: float = field(default=1 / 32, metadata={"help": "Weight of the AuxK loss."})

    def validate(self) -> None:
        super().validate()
        if not 0 < self.k <= self.d_sae:
            raise ValueError(f"k must be in 1..d_sae, got k={self.k} with d_sae={self.d_sae}; lower k or widen d_sae")
        if self.aux_k is not None and self.aux_k <= 0:
            raise ValueError(f"aux_k must be positive (or null for d_in // 2), got aux_k={self.aux_k}")
        if self.aux_coefficient < 0:
            raise ValueError(f"aux_coefficient must be >= 0, got {self.aux_coefficient}")

    @property
    def resolved_aux_k(self) -> int:
        return self.aux_k if self.aux_k is not None else max(1, self.d_in // 2)


@dataclass
class BatchTopKConfig(TopKConfig):
    """BatchTopK: the k * n largest activations of a batch of n tokens are kept."""

    k: int = field(default=32, metadata={"help": "Mean latents per token (k * batch size kept over the batch)."})
    threshold_momentum: float = field(
        default=0.99,
        metadata={"help": "m in the running threshold average theta <- m theta + (1 - m) min_kept."},
    )

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.threshold_momentum < 1:
            raise ValueError(f"threshold_momentum must be in [0, 1), got {self.threshold_momentum}")


@dataclass
class JumpReLUConfig(SAEConfig):
    """JumpReLU: a latent fires above its learned threshold theta. The defaults suit inputs scaled to
    E||x||^2 = d_in (the trainer's activation normalisation), where a random unit encoder direction
    gives pre-activations of about unit scale: theta starts where it prunes a fair share and the
    kernel is wide enough for it to move within a short run."""

    l0_coefficient: float = field(default=1.0, metadata={"help": "Weight of the sparsity term."})
    l0_target: float | None = field(
        default=None, metadata={"help": "When set, penalise (L0 / l0_target - 1)^2 instead of L0."}
    )
    bandwidth: float = field(
        default=0.5,
        metadata={"help": "Width eps of the straight-through rectangle kernel (in pre-activation units)."},
    )
    initial_threshold: float = field(default=0.5, metadata={"help": "Theta of every latent at initialisation."})

    def validate(self) -> None:
        super().validate()
        if self.l0_coefficient < 0:
            raise ValueError(f"l0_coefficient must be >= 0, got {self.l0_coefficient}")
        if self.l0_target is not None and not 0 < self.l0_target <= self.d_sae:
            raise ValueError(f"l0_target must be in (0, d_sae], got l0_target={self.l0_target} with d_sae={self.d_sae}")
        if self.bandwidth <= 0:
            raise ValueError(f"bandwidth must be positive, got {self.bandwidth}")
        if self.initial_threshold <= 0:
            raise ValueError(
                f"initial_threshold must be positive (theta = exp(log_threshold)), got {self.initial_threshold}"
            )


@dataclass
class GatedConfig(SAEConfig):
    """Gated: a gate path decides which latents fire, a magnitude path how strongly."""

    l1_coefficient: float = field(default=1.0, metadata={"help": "Weight of the gate sparsity term."})
    decoder_init_norm: float = field(default=1.0, metadata={"help": "Norm of the initial decoder rows."})

    def validate(self) -> None:
        super().validate()
        if self.l1_coefficient < 0:
            raise ValueError(f"l1_coefficient must be >= 0, got {self.l1_coefficient}")
        if self.decoder_init_norm <= 0:
            raise ValueError(f"decoder_init_norm must be positive, got {self.decoder_init_norm}")


@dataclass
class MatryoshkaConfig(BatchTopKConfig):
    """Matryoshka: BatchTopK whose nested prefixes of the dictionary each reconstruct on their own."""

    prefixes: list[int] | None = field(
        default=None,
        metadata={
            "help": "The nested dictionary sizes, strictly increasing and ending at d_sae "
            "(none: [d_sae // 16, d_sae // 4, d_sae], dropping sizes below 1)."
        },
    )

    def validate(self) -> None:
        super().validate()
        if self.prefixes is None:
            return
        sizes = list(self.prefixes)
        if not sizes or any(not isinstance(m, int) or m <= 0 for m in sizes):
            raise ValueError(f"prefixes must be a non-empty list of positive integers, got {self.prefixes}")
        if any(b <= a for a, b in zip(sizes, sizes[1:])):
            raise ValueError(f"prefixes must be strictly increasing, got {sizes}")
        if sizes[-1] != self.d_sae:
            raise ValueError(
                f"prefixes must end at d_sae={self.d_sae} (the whole dictionary), got {sizes}; append {self.d_sae}"
            )

    @property
    def resolved_prefixes(self) -> list[int]:
        if self.prefixes is not None:
            return list(self.prefixes)
        return sorted({m for m in (self.d_sae // 16, self.d_sae // 4, self.d_sae) if m >= 1})


# The registry: architecture name -> its config class. The architecture itself is sae/architectures/<name>.py.
SAE_CONFIGS: dict[str, type[SAEConfig]] = {
    "relu": ReLUConfig,
    "topk": TopKConfig,
    "batchtopk": BatchTopKConfig,
    "jumprelu": JumpReLUConfig,
    "gated": GatedConfig,
    "matryoshka": MatryoshkaConfig,
}


def sae_config_class(arch: str) -> type[SAEConfig]:
    """The config class of architecture `arch` (ValueError naming the registered ones otherwise)."""
    if arch not in SAE_CONFIGS:
        raise ValueError(f"unknown architecture {arch!r}; registered: {', '.join(sorted(SAE_CONFIGS))}")
    return SAE_CONFIGS[arch]


# --- the planted-feature benchmark (sae bench-synthetic) ---------------------------------------------


@dataclass
class SyntheticConfig:
    """A planted set of ground-truth features and how samples draw on them."""

    d: int = field(default=256, metadata={"help": "Activation dimension."})
    num_features: int = field(default=512, metadata={"help": "Ground-truth features N."})
    mean_active: float = field(default=5.0, metadata={"help": "Expected active features per sample (>= 1)."})
    firing_exponent: float = field(default=0.5, metadata={"help": "p_i ~ (i + 1)^-firing_exponent (0: all equal)."})
    correlation: float = field(default=0.0, metadata={"help": "Copula strength rho in [0, 1) (0: independent)."})
    correlation_rank: int = field(
        default=8, metadata={"help": "Shared latent factors behind the correlation (used when --correlation > 0)."}
    )
    magnitude_min: float = field(
        default=0.5,
        metadata={"help": "Smallest coefficient of an active feature (drawn uniformly up to --magnitude-max)."},
    )
    magnitude_max: float = field(default=1.5, metadata={"help": "Largest coefficient of an active feature."})
    noise_std: float = field(default=0.0, metadata={"help": "Isotropic Gaussian noise per dimension."})
    seed: int = field(
        default=0,
        metadata={"option": "--data-seed", "help": "Seed of the planted features, correlations and batch stream."},
    )

    def validate(self) -> None:
        if self.d <= 0 or self.num_features <= 0:
            raise ValueError(f"d and num_features must be positive, got d={self.d}, num_features={self.num_features}")
        if not 1 <= self.mean_active <= self.num_features:
            raise ValueError(
                f"mean_active must be in [1, num_features={self.num_features}] (every sample has at least "
                f"one active feature), got {self.mean_active}"
            )
        if not 0 <= self.correlation < 1 or self.correlation_rank <= 0:
            raise ValueError(
                f"correlation must be in [0, 1) and correlation_rank positive, got correlation="
                f"{self.correlation}, correlation_rank={self.correlation_rank}"
            )
        if not 0 < self.magnitude_min <= self.magnitude_max:
            raise ValueError(f"need 0 < magnitude_min <= magnitude_max, got {self.magnitude_min}, {self.magnitude_max}")
        if self.noise_std < 0 or self.firing_exponent < 0:
            raise ValueError(
                f"noise_std and firing_exponent must be >= 0, got {self.noise_std}, {self.firing_exponent}"
            )


@dataclass(kw_only=True)
class BenchConfig:
    """What `sae bench-synthetic` reports and keeps, besides the planted set, the trainer and the SAE."""

    eval_tokens: int = field(default=65536, metadata={"help": "Held-out samples for FVU and L0."})
    out: str | None = field(default=None, metadata={"help": "Also save the trained SAE (and the run's log) here."})
    match_table: bool = field(
        default=False,
        metadata={"help": "Include the per-feature match table (best latent and cosine of every planted feature)."},
    )

    def validate(self) -> None:
        if self.eval_tokens <= 0:
            raise ValueError(f"--eval-tokens must be positive, got {self.eval_tokens}")


# Trainer settings of the benchmark: one CPU thread, a fresh batch per step, no checkpoints.
BENCH_TRAIN: dict[str, Any] = {
    "batch_size": 1024,
    "steps": 1500,
    "device": "cpu",
    "init_tokens": 16384,
    "checkpoint_every": 0,
    "log_every": 100,
}
# Per-architecture settings for the default planted set (d 256, 512 features, 5 active per sample).
# Scale: the trainer normalises E||x||^2 to d_in, so one planted feature is a coefficient of about 7
# (3.4 to 10) and a latent's pre-activation at initialisation is about N(0, 1).
BENCH_SAE: dict[str, dict[str, Any]] = {
    "topk": {"d_sae": 1024, "k": 5},
    "batchtopk": {"d_sae": 1024, "k": 5},
    "matryoshka": {"d_sae": 1024, "k": 5},
    # a threshold above the N(0, 1) initial pre-activations; a bandwidth wide enough to see them
    "jumprelu": {"d_sae": 1024, "initial_threshold": 2.0, "bandwidth": 0.1, "l0_coefficient": 4.0},
    "relu": {"d_sae": 1024},
    "gated": {"d_sae": 1024, "l1_coefficient": 10.0},
}
# Trainer settings that differ by architecture (on top of BENCH_TRAIN). The biases of the L1
# architectures must travel about 2 (from N(0, 1) pre-activations to silence) within the run.
BENCH_TRAIN_BY_ARCH: dict[str, dict[str, Any]] = {
    "batchtopk": {"lr": 2e-3},
    "matryoshka": {"lr": 2e-3},
    "relu": {"lr": 4e-3},
    "gated": {"lr": 2e-3},
}


# --- the commands that read SAEs and activation datasets ----------------------------------------------
def acts_field() -> Any:
    """--acts DIR: an activation dataset folder; required."""
    return field(metadata={"metavar": "DIR", "help": "Activation dataset folder (manifest.json + shards)."})


def verify_field() -> Any:
    """--verify / --no-verify: the sha256 check of each shard as it is first read."""
    return field(
        default=True,
        metadata={
            "help": "Check each shard's sha256 as it is first read (--no-verify: huge datasets on trusted storage)."
        },
    )


@dataclass(kw_only=True)
class TrainRunConfig:
    """What `sae train` reads and writes, besides the trainer and the SAE configs."""

    acts: str = acts_field()
    verify: bool = verify_field()
    out: str = field(metadata={"help": "Run folder: the trained SAE(s), checkpoints, log.jsonl, train_config.json."})
    config: str | None = field(
        default=None, metadata={"help": "JSON file of defaults (the layout of train_config.json); flags override it."}
    )
    resume: str | None = field(
        default=None, metadata={"metavar": "DIR", "help": "Continue the run in DIR from its last checkpoint."}
    )
    d_in: int | None = field(
        default=None, metadata={"help": "Input width; none: the dataset's. Must match the dataset."}
    )
    nproc: int | None = field(
        default=None,
        metadata={
            "help": "Data-parallel processes on this machine, started through torchrun (gloo on CPU, nccl with one GPU "
            "each on CUDA); --batch-size stays the global batch."
        },
    )


@dataclass(kw_only=True)
class EvalConfig:
    """`sae eval`: reconstruction metrics of an SAE on an activation dataset."""

    acts: str = acts_field()
    verify: bool = verify_field()
    sae: str = sae_dir_field()
    tokens: int | None = field(default=None, metadata={"help": "Evaluate the first N tokens; none: all."})
    batch_size: int = field(default=4096, metadata={"help": "Tokens per forward pass."})
    device: str | None = device_field(unset="cuda when available, else cpu")


SAELayout = Literal["saelens", "sparsify"]


@dataclass(kw_only=True)
class ConvertConfig:
    """`sae convert`: an SAE folder rewritten in the other layout."""

    src_format: SAELayout = field(metadata={"option": "--from", "help": "Layout of SRC."})
    src: str = field(metadata={"positional": True, "metavar": "SRC", "help": "SAE folder to read."})
    dst_format: SAELayout = field(metadata={"option": "--to", "help": "Layout to write."})
    dst: str = field(metadata={"positional": True, "metavar": "DST", "help": "Folder to write."})
    force: bool = field(default=False, metadata={"help": "Overwrite an SAE already in DST."})
