"""ReLU SAE with decoder-norm-weighted L1 (Anthropic, "Circuits Updates — April 2024").

f = ReLU((x - b_dec) @ W_enc + b_enc); x_hat = f @ W_dec + b_dec.
Loss = mse + lambda(step) * l1, with l1 = E_tokens sum_i f_i ||W_dec[i]||: weighting by the
decoder row norm removes the incentive to shrink f while growing W_dec, so the decoder needs no
norm constraint. lambda warms up linearly from 0 over the first `l1_warmup_fraction` of training.
Initialisation: decoder rows in random directions with norm `decoder_init_norm`, W_enc = W_dec^T.

Dead latents can be resampled as in "Towards Monosemanticity" (Bricken et al. 2023): each dead
latent is pointed at an input the SAE reconstructs badly (`resample_dead`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sae.architectures.base import SAE, TrainState, TrainStep
from sae.config import ReLUConfig

RESAMPLED_ENCODER_SCALE = 0.2  # new encoder column norm, relative to the mean alive encoder norm


def reset_adam_state(optimizer: torch.optim.Optimizer | None, param: Tensor, index: tuple) -> None:
    """Zero the optimizer's moment estimates of param[index] (Adam/AdamW: exp_avg, exp_avg_sq, max_exp_avg_sq)."""
    if optimizer is None:
        return
    state = optimizer.state.get(param, {})
    for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        moment = state.get(key)
        if isinstance(moment, Tensor) and moment.shape == param.shape:
            moment[index] = 0


class ReLUSAE(SAE):
    arch = "relu"
    config_class = ReLUConfig
    supports_resampling = True
    cfg: ReLUConfig

    def preacts(self, x: Tensor) -> Tensor:
        return self.encoder_input(x) @ self.W_enc + self.b_enc

    def encode(self, x: Tensor) -> Tensor:
        return F.relu(self.preacts(x))

    def train_step(self, x: Tensor, state: TrainState) -> TrainStep:
        f = self.encode(x)
        x_hat = self.decode(f)
        mse = (x - x_hat).pow(2).sum(-1).mean()
        l1 = (f * self.W_dec.norm(dim=1)).sum(-1).mean()
        coefficient = self.cfg.l1_coefficient_at(state.step, state.total_steps)
        active = f.detach() > 0
        return TrainStep(
            total=mse + coefficient * l1,
            terms={"mse": mse, "l1": l1},
            x_hat=x_hat,
            fired=active.sum(0),
            l0=active.sum(-1).to(x.dtype).mean(),
        )

    def resample_dead(self, dead_mask: Tensor, x: Tensor, optimizer: torch.optim.Optimizer | None) -> int:
        """Point each dead latent at an input drawn with probability proportional to its squared loss.

        For a drawn input v = x_i - b_dec (unit-normalised): W_dec[l] = v * mean alive decoder row norm,
        W_enc[:, l] = v * 0.2 * mean alive encoder column norm, b_enc[l] = 0, and the optimizer's
        moments of those entries are zeroed. dead_mask [d_sae] bool; x [n, d_in]. Returns the count.
        """
        dead = dead_mask.to(self.W_dec.device).nonzero().squeeze(1)
        if dead.numel() == 0:
            return 0
        with torch.no_grad():
            loss = (x - self(x)).pow(2).sum(-1)
            weights = loss.pow(2)
            if not torch.isfinite(weights).all() or weights.sum() <= 0:
                weights = torch.ones_like(weights)
            chosen = torch.multinomial(weights, dead.numel(), replacement=True)
            directions = self.encoder_input(x[chosen])
            directions = directions / directions.norm(dim=1, keepdim=True).clamp_min(1e-12)
            alive = ~dead_mask.to(self.W_dec.device)
            if alive.any():
                decoder_norm = self.W_dec[alive].norm(dim=1).mean()
                encoder_norm = self.W_enc[:, alive].norm(dim=0).mean()
            else:
                decoder_norm = encoder_norm = torch.tensor(self.cfg.decoder_init_norm)
            self.W_dec[dead] = directions * decoder_norm
            self.W_enc[:, dead] = (directions * RESAMPLED_ENCODER_SCALE * encoder_norm).t()
            self.b_enc[dead] = 0
        reset_adam_state(optimizer, self.W_dec, (dead,))
        reset_adam_state(optimizer, self.W_enc, (slice(None), dead))
        reset_adam_state(optimizer, self.b_enc, (dead,))
        return int(dead.numel())
