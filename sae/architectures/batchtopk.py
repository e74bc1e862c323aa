"""BatchTopK SAE (Bussmann et al. 2024, "BatchTopK Sparse Autoencoders").

Training keeps the k * n largest ReLU'd pre-activations over the whole batch of n tokens rather
than k per token, so busy tokens may use more latents and quiet ones fewer (mean L0 = k).
Decoder rows stay unit norm, W_enc = W_dec^T at initialisation, and the AuxK loss of the TopK
SAE revives dead latents.

A per-token rule is needed at inference: the SAE tracks theta, a running average
(theta <- m theta + (1 - m) min_kept) of the smallest activation kept in each training batch,
and `inference_form()` is a JumpReLU SAE with that threshold for every latent.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sae.architectures.base import SAE, TrainState, TrainStep, squared_error
from sae.architectures.jumprelu import JumpReLUSAE
from sae.architectures.topk import auxk_loss, code_statistics
from sae.config import BatchTopKConfig, JumpReLUConfig
from sae.kernels import CodeLayout, densify, encoder_preacts, gather_preacts, sparse_decode
from sae.topk_select import topk_indices


def batch_topk_indices(pre_acts: Tensor, k: int, candidates_per_token: int = 4) -> tuple[Tensor, Tensor]:
    """The k * n largest ReLU'd pre-activations of a batch, as per-token slots.

    pre_acts [n, d_sae] -> (indices [n, w], keep [n, w] bool): token i's kept latents are
    indices[i][keep[i]] (zero activations are never kept); w is the width of the proposals.

    Rather than ranking all n * d_sae activations, each token proposes its top
    `candidates_per_token * k` (unordered, `topk_indices`) and the batch's k * n are picked among
    those. That is exact unless some token had every proposal picked (it might hold more beyond
    them): then the proposals widen, straight to the busiest token's count of positive activations
    when the batch holds no more than k * n of them (all are kept).
    """
    n, d_sae = pre_acts.shape
    width = min(d_sae, candidates_per_token * k)
    while True:
        indices = topk_indices(pre_acts, width)
        proposed = F.relu(pre_acts.gather(1, indices))
        picked = proposed.reshape(-1).topk(min(k * n, proposed.numel()), sorted=False).indices
        keep = torch.zeros(n * width, dtype=torch.bool, device=pre_acts.device).index_fill_(0, picked, True)
        keep = keep.view(n, width) & (proposed > 0)
        if width == d_sae or int(keep.sum(1).max()) < width:
            return _kept_first(indices, keep)
        positives = (pre_acts > 0).sum(1)
        if int(positives.sum()) <= k * n:  # every positive activation is kept: widen once, to the busiest token
            width = max(width, int(positives.max()))
            indices = topk_indices(pre_acts, width)
            return _kept_first(indices, pre_acts.gather(1, indices) > 0)
        width = min(d_sae, width * candidates_per_token)


def _kept_first(indices: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
    """(indices, keep) [n, w] with each row's kept slots moved to its front and the columns that no row
    keeps dropped: w becomes the busiest token's count (at least 1), so the sparse kernels' work
    follows the kept latents, about k per token, not the proposals."""
    order = keep.to(torch.uint8).argsort(dim=1, descending=True, stable=True)
    order = order[:, : max(1, int(keep.sum(1).max()))]
    return indices.gather(1, order), keep.gather(1, order)


class BatchTopKSAE(SAE):
    arch = "batchtopk"
    config_class = BatchTopKConfig
    unit_norm_decoder = True
    cfg: BatchTopKConfig

    def __init__(self, cfg: BatchTopKConfig):
        super().__init__(cfg)
        self.register_buffer("threshold", torch.tensor(-1.0))  # < 0: not estimated yet

    def preacts(self, x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """[n, d_in] -> [n, d_sae] pre-activations, no autograd, in `dtype` (default: x's)."""
        return encoder_preacts(x, self.W_enc, self.b_enc, self.encoder_bias_input(), dtype)

    def encode_batch(self, x: Tensor) -> Tensor:
        """The training rule: dense [n, d_sae] code keeping the k * n largest activations of the batch."""
        pre = self.preacts(x)
        indices, keep = batch_topk_indices(pre, self.cfg.k)
        values = gather_preacts(pre, indices, x, self.W_enc, self.b_enc, self.encoder_bias_input())
        return densify(F.relu(values) * keep, indices, self.cfg.d_sae)

    def encode(self, x: Tensor) -> Tensor:
        """Per-token rule f = pre * H(pre - theta) once theta is estimated; before that, `encode_batch`."""
        if self.threshold < 0:
            flat = x.reshape(-1, self.cfg.d_in)
            return self.encode_batch(flat).reshape(*x.shape[:-1], self.cfg.d_sae)
        pre = self.encoder_input(x) @ self.W_enc + self.b_enc
        return pre * (pre > self.threshold).to(pre.dtype)

    def sparse_code(self, x: Tensor, pre: Tensor) -> tuple[Tensor, Tensor, CodeLayout]:
        """(values [n, w] differentiable, indices [n, w], layout) of the batch rule; also updates theta."""
        indices, keep = batch_topk_indices(pre, self.cfg.k)
        layout = CodeLayout(indices, self.cfg.d_sae)
        values = F.relu(gather_preacts(pre, indices, x, self.W_enc, self.b_enc, self.encoder_bias_input(), layout))
        values = values * keep
        self.update_threshold(values.detach()[keep])
        return values, indices, layout

    def update_threshold(self, kept: Tensor) -> None:
        """theta <- m theta + (1 - m) min(kept); the first estimate is min(kept) itself."""
        if kept.numel() == 0:
            return
        smallest = kept.min().to(self.threshold)
        m = self.cfg.threshold_momentum
        self.threshold.copy_(smallest if self.threshold < 0 else m * self.threshold + (1 - m) * smallest)

    def train_step(self, x: Tensor, state: TrainState) -> TrainStep:
        cfg = self.cfg
        pre = self.preacts(x, state.selection_dtype)
        values, indices, layout = self.sparse_code(x, pre)
        x_hat = sparse_decode(values, indices, self.W_dec, layout) + self.b_dec
        mse = squared_error(x, x_hat)
        auxk = auxk_loss(self, x, pre, x_hat, state.dead_mask, cfg.resolved_aux_k)
        fired, l0 = code_statistics(values.detach(), indices, cfg.d_sae)
        return TrainStep(
            total=mse + cfg.aux_coefficient * auxk, terms={"mse": mse, "auxk": auxk}, x_hat=x_hat, fired=fired, l0=l0
        )

    def inference_form(self) -> JumpReLUSAE:
        """A JumpReLU SAE with the same weights and threshold theta for every latent."""
        if self.threshold < 0:
            raise ValueError(
                f"{self.arch} SAE has no threshold estimate yet (it is learned during training); "
                "train at least one step before saving or converting it"
            )
        cfg = self.cfg
        jump = JumpReLUSAE(
            JumpReLUConfig(d_in=cfg.d_in, d_sae=cfg.d_sae, apply_b_dec_to_input=cfg.apply_b_dec_to_input)
        )
        jump.to(device=self.W_enc.device, dtype=self.W_enc.dtype)
        tensors = {name: getattr(self, name).detach().clone() for name in ("W_enc", "b_enc", "W_dec", "b_dec")}
        tensors["threshold"] = self.threshold.detach().to(self.W_enc.dtype).expand(cfg.d_sae).clone()
        jump.load_file_tensors(tensors)
        return jump
