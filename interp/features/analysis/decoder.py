"""Statistics from the decoder alone: nearest features by decoder cosine, direct logit effects through
the final norm and the unembedding, and the neurons each feature writes to."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from interp.activations.hooks import mlp_neuron_layer, writes_residual
from interp.features.analysis.config import AnalysisConfig
from sae.progress import progress_bar


@dataclass
class LogitMap:
    """Decoder directions [n, d_in] -> direct logit effects [n, d_vocab]: (D @ to_residual),
    centred when the final norm is a LayerNorm, times the final norm's weight, then @ W_U."""

    to_residual: Tensor | None  # [d_in, d_model] (W_out of the layer for mlp.hook_post) or None
    centre: bool
    norm_weight: Tensor | None  # [d_model]
    W_U: Tensor  # [d_model, d_vocab]
    basis: str  # how the effects were computed, in words

    def __call__(self, directions: Tensor) -> Tensor:
        return self.residual(directions) @ self.W_U

    def residual(self, directions: Tensor) -> Tensor:
        """[n, d_model]: the directions as the unembedding reads them (effects = residual @ W_U)."""
        r = directions if self.to_residual is None else directions @ self.to_residual
        if self.centre:
            r = r - r.mean(dim=-1, keepdim=True)
        if self.norm_weight is not None:
            r = r * self.norm_weight
        return r


def logit_map(bridge: Any, hook_name: str, d_in: int) -> tuple[LogitMap | None, str]:
    """The map from this hook's space to logits, or (None, why not) for hooks with no direct path."""
    cfg = bridge.cfg
    W_U = bridge.W_U.detach().float().cpu()
    norm = str(getattr(cfg, "normalization_type", None) or "")
    ln_final = getattr(bridge, "ln_final", None)
    weight = getattr(ln_final, "weight", None) if ln_final is not None else None
    weight = weight.detach().float().cpu() if isinstance(weight, Tensor) else None
    centre = norm.startswith("LN")
    layer = mlp_neuron_layer(hook_name)
    if layer is not None and d_in == cfg.d_mlp:
        to_residual = bridge.W_out[layer].detach().float().cpu()
        where = f"W_out of layer {layer}, "
    elif writes_residual(hook_name) and d_in == cfg.d_model:
        to_residual, where = None, ""
    else:
        return None, (
            f"hook {hook_name!r} (d_in {d_in}) does not write to the residual stream directly; "
            "logit effects are computed for residual-stream, attention/MLP-output and mlp.hook_post SAEs"
        )
    norm_shown = f"{norm or 'none'}{', centred' if centre else ''}"
    basis = f"decoder direction through {where}the final norm's weight ({norm_shown}) and W_U"
    return LogitMap(to_residual, centre, weight, W_U, basis), basis


@torch.no_grad()
def decoder_statistics(
    W_dec: Tensor,
    logits: LogitMap | None,
    cfg: AnalysisConfig,
    *,
    neurons: bool,
    chunk: int = 512,
    progress: bool = False,
) -> dict[str, Tensor]:
    """Nearest features by decoder cosine, logit effects (top / bottom tokens, histogram) and, when
    `neurons`, the neurons each feature writes to. W_dec [F, d_in]; processed in chunks of features."""
    W = W_dec.detach().float().cpu()
    F = W.shape[0]
    n = min(cfg.neighbours, max(F - 1, 1))
    unit = W / W.norm(dim=1, keepdim=True).clamp_min(1e-12)
    out: dict[str, list[Tensor]] = {}
    for start in progress_bar(range(0, F, chunk), desc="decoder", disable=not progress, leave=False):
        stop = min(start + chunk, F)
        cos = unit[start:stop] @ unit.T
        cos[torch.arange(stop - start), torch.arange(start, stop)] = -math.inf
        if F > 1:
            near = cos.topk(n, dim=1)
            out.setdefault("nearest_ids", []).append(near.indices.to(torch.int32))
            out.setdefault("nearest_cosine", []).append(near.values)
        if logits is not None:
            effect = logits(W[start:stop])  # [c, V]
            m = min(cfg.neighbours, effect.shape[1])
            top, bottom = effect.topk(m, dim=1), effect.topk(m, dim=1, largest=False)
            lo, hi = effect.min(dim=1).values, effect.max(dim=1).values
            width = (hi - lo).clamp_min(1e-12)
            bins = ((effect - lo[:, None]) / width[:, None] * cfg.logit_bins).long().clamp(0, cfg.logit_bins - 1)
            flat = torch.arange(stop - start)[:, None] * cfg.logit_bins + bins
            counts = torch.bincount(flat.reshape(-1), minlength=(stop - start) * cfg.logit_bins)
            for key, value in (
                ("logit_top_ids", top.indices.to(torch.int32)),
                ("logit_top_values", top.values),
                ("logit_bottom_ids", bottom.indices.to(torch.int32)),
                ("logit_bottom_values", bottom.values),
                ("logit_histogram", counts.view(stop - start, cfg.logit_bins)),
                ("logit_range", torch.stack([lo, hi], dim=1)),
            ):
                out.setdefault(key, []).append(value)
        if neurons:
            m = min(cfg.neighbours, W.shape[1])
            idx = W[start:stop].abs().topk(m, dim=1).indices
            out.setdefault("neuron_ids", []).append(idx.to(torch.int32))
            out.setdefault("neuron_weights", []).append(W[start:stop].gather(1, idx))
    result = {key: torch.cat(parts) for key, parts in out.items()}
    result["decoder"] = W
    result["decoder_norm"] = W.norm(dim=1)
    return result
