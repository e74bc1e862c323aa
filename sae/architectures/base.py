"""What every SAE architecture shares: the parameters, the training contract, the registry (the configs,
which the command line renders without torch, are in sae.config).

Shapes: x [n, d_in] activations; f [n, d_sae] feature activations; x_hat [n, d_in].
Parameter names follow SAELens so saved files interoperate:
W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in].

Loss convention shared by every architecture: `mse` is the squared error summed over the d_in
dimensions and averaged over tokens, E_x ||x - x_hat||^2; sparsity terms are per-token means too.
`TrainStep.terms` holds each term unweighted; `TrainStep.total` is their weighted sum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sae.config import SAEConfig


@dataclass
class TrainStep:
    """What one training forward pass returns to the trainer.

    total: the scalar loss to backpropagate.
    terms: every loss term by name (detached floats are taken by the trainer for logs).
    x_hat: [n, d_in] reconstruction.
    fired: [d_sae] number of tokens in the batch on which each latent was non-zero.
    l0: mean number of non-zero latents per token in this batch.
    """

    total: Tensor
    terms: dict[str, Tensor]
    x_hat: Tensor
    fired: Tensor
    l0: Tensor


@dataclass
class TrainState:
    """What the trainer tells the architecture at each step.

    step: 0-based optimizer step; total_steps: the run's length (for warm-ups);
    dead_mask: [d_sae] bool, latents that have not fired within the dead window.
    selection_dtype: dtype of the encoder product that chooses the active latents (TopK family);
    None: the parameters' dtype. The chosen latents' values are computed in the parameters' dtype.
    """

    step: int
    total_steps: int
    dead_mask: Tensor | None = None
    selection_dtype: torch.dtype | None = None


class SAE(nn.Module):
    """Base class. An architecture overrides `encode`, `train_step` and whatever hooks it needs.

    unit_norm_decoder: when True, decoder rows are kept at unit norm during training: the part of
    each row's gradient parallel to the row is removed (`after_backward`) and rows are rescaled to
    norm 1 after every optimizer step (`after_step`).
    """

    arch: ClassVar[str]
    config_class: ClassVar[type[SAEConfig]] = SAEConfig
    unit_norm_decoder: ClassVar[bool] = False
    supports_resampling: ClassVar[bool] = False

    def __init__(self, cfg: SAEConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        # What the SAE was trained on (hook_name, model_name, ...): written to and read from cfg.json.
        self.metadata: dict[str, Any] = {}
        d_in, d_sae = cfg.d_in, cfg.d_sae
        self.W_enc = nn.Parameter(torch.empty(d_in, d_sae))
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.W_dec = nn.Parameter(torch.empty(d_sae, d_in))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.init_tied(decoder_row_norm=getattr(cfg, "decoder_init_norm", 1.0))

    def init_tied(self, decoder_row_norm: float) -> None:
        """Decoder rows: random directions of the given norm; encoder: the decoder's transpose.

        At construction the norm is the config's `decoder_init_norm` where it has one, else 1.
        """
        with torch.no_grad():
            directions = torch.randn(self.cfg.d_sae, self.cfg.d_in)
            self.W_dec.copy_(directions / directions.norm(dim=1, keepdim=True) * decoder_row_norm)
            self.W_enc.copy_(self.W_dec.t())

    # --- inference -------------------------------------------------------------------
    def encoder_input(self, x: Tensor) -> Tensor:
        """What the encoder multiplies: x - b_dec when `apply_b_dec_to_input`, else x."""
        return x - self.b_dec if self.cfg.apply_b_dec_to_input else x

    def encoder_bias_input(self) -> Tensor | None:
        """The bias the encoder subtracts from x: b_dec, or None without pre-encoder subtraction."""
        return self.b_dec if self.cfg.apply_b_dec_to_input else None

    def encode(self, x: Tensor) -> Tensor:
        """[..., d_in] -> [..., d_sae] feature activations (dense)."""
        raise NotImplementedError

    def decode(self, f: Tensor) -> Tensor:
        """[..., d_sae] -> [..., d_in]."""
        return f @ self.W_dec + self.b_dec

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    # --- training --------------------------------------------------------------------
    def train_step(self, x: Tensor, state: TrainState) -> TrainStep:
        """One forward pass with every loss term; the trainer calls backward on `.total`."""
        raise NotImplementedError

    def after_backward(self) -> None:
        """Called between backward and the optimizer step (e.g. decoder-gradient projection)."""
        if self.unit_norm_decoder and self.W_dec.grad is not None:
            remove_parallel_gradient(self.W_dec)

    def after_step(self) -> None:
        """Called after the optimizer step (e.g. renormalise decoder rows)."""
        if self.unit_norm_decoder:
            normalize_rows_(self.W_dec)

    def resample_dead(self, dead_mask: Tensor, x: Tensor, optimizer: torch.optim.Optimizer | None) -> int:
        """Reinitialise dead latents from the inputs `x` [n, d_in] (only where `supports_resampling`)."""
        raise ValueError(f"architecture {self.arch!r} does not resample dead latents; only 'relu' does")

    def init_from_data(self, b_dec: Tensor) -> None:
        """Set the decoder bias from the data (geometric median or mean), [d_in]."""
        with torch.no_grad():
            self.b_dec.copy_(b_dec.to(self.b_dec))

    def fold_activation_scale(self, scale: float) -> None:
        """The SAE was trained on x * scale; rewrite weights so it takes raw x and returns raw x_hat."""
        with torch.no_grad():
            self.W_enc.mul_(scale)  # encoder sees raw x: x @ (scale * W_enc) == (scale x) @ W_enc
            self.W_dec.div_(scale)
            self.b_dec.div_(scale)
            # b_enc unchanged: pre-activations are identical. Thresholds live in f-space: unchanged.

    def inference_form(self) -> SAE:
        """The architecture a saved file holds (BatchTopK -> JumpReLU). Default: itself."""
        return self

    # --- files -----------------------------------------------------------------------
    def file_tensors(self) -> dict[str, Tensor]:
        """Tensors as a saved file names them (SAELens names). Default: the state dict."""
        return {name: t.detach() for name, t in self.state_dict().items()}

    def load_file_tensors(self, tensors: dict[str, Tensor]) -> None:
        """Inverse of `file_tensors`: copy file tensors into this SAE (names and shapes must match)."""
        self.load_state_dict(tensors, strict=True)


def squared_error(x: Tensor, x_hat: Tensor) -> Tensor:
    """The `mse` term: E_x ||x - x_hat||^2, summed over d_in and averaged over the n tokens of x [n, d_in]
    (one fused pass forward and backward)."""
    return F.mse_loss(x_hat, x, reduction="sum") / x.shape[0]


def remove_parallel_gradient(W_dec: nn.Parameter) -> None:
    """In place: W_dec.grad[i] -= (W_dec.grad[i] . w_i) w_i / ||w_i||^2, for every row i."""
    with torch.no_grad():
        w, g = W_dec.data, W_dec.grad
        parallel = torch.linalg.vecdot(g, w) / torch.linalg.vecdot(w, w).clamp_min(1e-30)
        g.addcmul_(w, parallel[:, None], value=-1)


def normalize_rows_(W: nn.Parameter) -> None:
    """In place: every row of W rescaled to unit L2 norm."""
    with torch.no_grad():
        W.div_(W.norm(dim=1, keepdim=True).clamp_min(1e-30))


__all__ = [
    "SAE",
    "SAEConfig",
    "TrainState",
    "TrainStep",
    "normalize_rows_",
    "remove_parallel_gradient",
    "squared_error",
]
