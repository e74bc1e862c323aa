"""Gated SAE (Rajamanoharan et al. 2024, "Improving Dictionary Learning with Gated Sparse Autoencoders").

Which latents fire and how strongly are estimated by two paths that share directions:
  x_in = x - b_dec
  pi_gate = x_in @ W_enc + b_gate                      (gate)
  pi_mag  = x_in @ (W_enc * exp(r_mag)) + b_mag         (magnitude; r_mag ties it to the gate, [d_sae])
  f = H(pi_gate) * ReLU(pi_mag);  x_hat = f @ W_dec + b_dec
Loss = mse + l1_coefficient * l1 + aux_recon, where
  l1 = E sum_i ReLU(pi_gate)_i ||W_dec[i]||     (sparsity on the gate, weighted by decoder norms)
  aux_recon = E ||x - (ReLU(pi_gate) @ W_dec' + b_dec')||^2 with W_dec', b_dec' frozen copies
(no gradient into the decoder), which gives the gate path a reconstruction signal despite H.
Tensor names follow SAELens (W_enc, b_gate, r_mag, b_mag, W_dec, b_dec); there is no b_enc.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sae.architectures.base import SAE, TrainState, TrainStep
from sae.config import GatedConfig


class GatedSAE(SAE):
    arch = "gated"
    config_class = GatedConfig
    cfg: GatedConfig

    def __init__(self, cfg: GatedConfig):
        super().__init__(cfg)
        del self.b_enc  # the gate and the magnitude path each have their own bias
        self.b_gate = nn.Parameter(torch.zeros(cfg.d_sae))
        self.r_mag = nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_mag = nn.Parameter(torch.zeros(cfg.d_sae))

    def gate_and_magnitude(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(pi_gate, pi_mag), each [..., d_sae]."""
        x_in = self.encoder_input(x)
        pi_gate = x_in @ self.W_enc + self.b_gate
        pi_mag = x_in @ (self.W_enc * self.r_mag.exp()) + self.b_mag
        return pi_gate, pi_mag

    def encode(self, x: Tensor) -> Tensor:
        pi_gate, pi_mag = self.gate_and_magnitude(x)
        return (pi_gate > 0).to(pi_mag.dtype) * F.relu(pi_mag)

    def train_step(self, x: Tensor, state: TrainState) -> TrainStep:
        pi_gate, pi_mag = self.gate_and_magnitude(x)
        f = (pi_gate > 0).to(pi_mag.dtype) * F.relu(pi_mag)
        x_hat = self.decode(f)
        mse = (x - x_hat).pow(2).sum(-1).mean()
        gate = F.relu(pi_gate)
        l1 = (gate * self.W_dec.norm(dim=1)).sum(-1).mean()
        x_hat_gate = gate @ self.W_dec.detach() + self.b_dec.detach()
        aux_recon = (x - x_hat_gate).pow(2).sum(-1).mean()
        active = f.detach() > 0
        return TrainStep(
            total=mse + self.cfg.l1_coefficient * l1 + aux_recon,
            terms={"mse": mse, "l1": l1, "aux_recon": aux_recon},
            x_hat=x_hat,
            fired=active.sum(0),
            l0=active.sum(-1).to(x.dtype).mean(),
        )
