"""Matryoshka BatchTopK SAE (Bussmann et al. 2025, "Learning Multi-Level Features with Matryoshka
Sparse Autoencoders"; Nabeshima 2024).

The dictionary is trained so that every prefix of it is a good SAE on its own: with nested sizes
m_1 < m_2 < ... < m_G = d_sae, the loss sums the reconstruction error of each prefix,
  mse_prefixes = sum_g E ||x - (f[:, :m_g] @ W_dec[:m_g] + b_dec)||^2,
where f is the BatchTopK code of the whole dictionary. Early latents thus learn general features
and later ones refine them. Everything else (BatchTopK selection, running threshold, AuxK, unit-norm
decoder, JumpReLU inference form) is the BatchTopK SAE's.
"""

from __future__ import annotations

from torch import Tensor

from sae.architectures.base import TrainState, TrainStep, squared_error
from sae.architectures.batchtopk import BatchTopKSAE
from sae.architectures.topk import auxk_loss, code_statistics
from sae.config import MatryoshkaConfig
from sae.kernels import sparse_decode


class MatryoshkaSAE(BatchTopKSAE):
    arch = "matryoshka"
    config_class = MatryoshkaConfig
    cfg: MatryoshkaConfig

    def train_step(self, x: Tensor, state: TrainState) -> TrainStep:
        cfg = self.cfg
        pre = self.preacts(x, state.selection_dtype)
        values, indices, layout = self.sparse_code(x, pre)
        prefix_mses = []
        for size in cfg.resolved_prefixes:
            prefix_values = values if size == cfg.d_sae else values.masked_fill(indices >= size, 0.0)
            x_hat = sparse_decode(prefix_values, indices, self.W_dec, layout) + self.b_dec
            prefix_mses.append(squared_error(x, x_hat))
        mse, mse_prefixes = prefix_mses[-1], sum(prefix_mses)  # the last prefix is the whole dictionary
        auxk = auxk_loss(self, x, pre, x_hat, state.dead_mask, cfg.resolved_aux_k)
        fired, l0 = code_statistics(values.detach(), indices, cfg.d_sae)
        return TrainStep(
            total=mse_prefixes + cfg.aux_coefficient * auxk,
            terms={"mse": mse, "mse_prefixes": mse_prefixes, "auxk": auxk},
            x_hat=x_hat,
            fired=fired,
            l0=l0,
        )
