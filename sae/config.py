"""The training config of SAEs: one typed dataclass, serialised to `train_config.json`, whose fields are
the `sae train` options (sae.options renders them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from sae.options import check_choices

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
    seed: int = field(default=0, metadata={"help": "Seed of the SAE initialisation and of the data shuffle."})
    device: str = field(
        default="auto",
        metadata={
            "help": "torch device: auto (cuda when present, else cpu), cpu, cuda or cuda:N; under torchrun each rank "
            "takes cuda:LOCAL_RANK."
        },
    )
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
