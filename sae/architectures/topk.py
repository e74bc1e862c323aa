"""TopK SAE (Gao et al. 2024, "Scaling and evaluating sparse autoencoders").

f = ReLU(TopK_k((x - b_dec) @ W_enc + b_enc)): the k largest pre-activations per token are kept.
x_hat = f @ W_dec + b_dec. Decoder rows stay unit norm (gradient projection + renormalisation);
W_enc = W_dec^T at initialisation.

Loss = mse + aux_coefficient * auxk, where auxk (the AuxK loss) reconstructs the residual
e = x - x_hat (no gradient into x_hat) from the aux_k largest pre-activations among the dead
latents: auxk = E ||e - ReLU(TopK_aux_k(dead pre-acts)) @ W_dec||^2. It gives dead latents a
gradient towards the error the live ones leave.

Training uses the sparse kernels (`sae.kernels`): nothing after the encoder matmul touches more
than the k chosen latents per token; on CPU the k are chosen by `sae.topk_select`. The dense product
that chooses them may run in bfloat16 (`TrainState.selection_dtype`); the chosen latents' values are
then computed again in the weights' dtype, so only near-ties at the k-th value can choose otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sae.architectures.base import SAE, TrainState, TrainStep, squared_error
from sae.config import TopKConfig
from sae.kernels import CodeLayout, densify, encoder_preacts, gather_preacts, sparse_decode
from sae.topk_select import topk_indices


def auxk_loss(sae: SAE, x: Tensor, pre_acts: Tensor, x_hat: Tensor, dead_mask: Tensor | None, aux_k: int) -> Tensor:
    """E ||e - ReLU(TopK_aux_k over dead latents of pre_acts) @ W_dec||^2 with the residual
    e = x - x_hat (detached); 0 with no dead latents.

    x, x_hat [n, d_in]; pre_acts [n, d_sae] (no grad); dead_mask [d_sae] bool. Gradients reach W_enc,
    b_enc, b_dec and W_dec of the chosen dead latents.
    """
    num_dead = int(dead_mask.sum()) if dead_mask is not None else 0
    if num_dead == 0:
        return torch.zeros((), dtype=x.dtype, device=x.device)
    residual = (x - x_hat).detach()
    dead = dead_mask.to(pre_acts.device).nonzero().squeeze(1)
    if num_dead <= aux_k:  # every dead latent takes part
        indices = dead.expand(x.shape[0], num_dead).contiguous()
    else:
        indices = dead[topk_indices(pre_acts.index_select(1, dead), aux_k)]
    layout = CodeLayout(indices, sae.cfg.d_sae)
    values = F.relu(gather_preacts(pre_acts, indices, x, sae.W_enc, sae.b_enc, sae.encoder_bias_input(), layout))
    residual_hat = sparse_decode(values, indices, sae.W_dec, layout)
    return (residual - residual_hat).pow(2).sum(-1).mean()


def code_statistics(values: Tensor, indices: Tensor, d_sae: int) -> tuple[Tensor, Tensor]:
    """(fired [d_sae] token counts per latent, l0 = mean non-zero latents per token) of a sparse code."""
    active = values > 0
    fired = torch.zeros(d_sae, dtype=torch.int64, device=indices.device)
    fired.index_add_(0, indices.reshape(-1), active.reshape(-1).long())  # no boolean-mask compaction
    return fired, active.sum(1).to(values.dtype).mean()


class TopKSAE(SAE):
    arch = "topk"
    config_class = TopKConfig
    unit_norm_decoder = True
    cfg: TopKConfig

    def preacts(self, x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """[n, d_in] -> [n, d_sae] pre-activations, no autograd, in `dtype` (default: x's)."""
        return encoder_preacts(x, self.W_enc, self.b_enc, self.encoder_bias_input(), dtype)

    def encode_sparse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """[n, d_in] -> (values [n, k], indices [n, k]); values are ReLU'd (zeros possible) and
        differentiable w.r.t. x and the encoder through the sparse kernel."""
        pre = self.preacts(x)
        indices = topk_indices(pre, self.cfg.k)
        values = gather_preacts(pre, indices, x, self.W_enc, self.b_enc, self.encoder_bias_input())
        return F.relu(values), indices

    def encode(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, self.cfg.d_in)
        values, indices = self.encode_sparse(flat)
        return densify(values, indices, self.cfg.d_sae).reshape(*x.shape[:-1], self.cfg.d_sae)

    def train_step(self, x: Tensor, state: TrainState) -> TrainStep:
        cfg = self.cfg
        pre = self.preacts(x, state.selection_dtype)
        indices = topk_indices(pre, cfg.k)
        layout = CodeLayout(indices, cfg.d_sae)
        values = F.relu(gather_preacts(pre, indices, x, self.W_enc, self.b_enc, self.encoder_bias_input(), layout))
        x_hat = sparse_decode(values, indices, self.W_dec, layout) + self.b_dec
        mse = squared_error(x, x_hat)
        auxk = auxk_loss(self, x, pre, x_hat, state.dead_mask, cfg.resolved_aux_k)
        fired, l0 = code_statistics(values.detach(), indices, cfg.d_sae)
        return TrainStep(
            total=mse + cfg.aux_coefficient * auxk,
            terms={"mse": mse, "auxk": auxk},
            x_hat=x_hat,
            fired=fired,
            l0=l0,
        )
