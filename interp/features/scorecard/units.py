"""One pass over labelled token windows: the concept labels, the next tokens, and the activations of
a model's neurons (the SAE's hook) and of every SAE that reads it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from interp.activations.hooks import ActivationHooks, plan_capture
from interp.features.analysis.decoder import logit_map
from interp.model.transformer import LoadedModel, model_device


@dataclass
class ScoredTokens:
    """The tokens a scorecard reads: the non-BOS positions of W windows, in window order."""

    ids: Tensor  # [N] token ids
    next_ids: Tensor  # [N] the next token's id, -1 at a window's last position
    labels: Tensor  # [N, C] bool
    window: Tensor  # [N] the window each token comes from
    windows: Tensor  # [W, T] every window, BOS included
    kept: Tensor  # [W*T] bool: which positions of the flattened windows are scored (not BOS)

    @classmethod
    def from_windows(cls, windows: Tensor, labels: np.ndarray, bos_id: int) -> ScoredTokens:
        """windows [W, T] ids, labels [W, T, C] bool."""
        W, T = windows.shape
        following = torch.full_like(windows, -1)
        following[:, :-1] = windows[:, 1:]
        keep = (windows != bos_id).flatten()
        return cls(
            ids=windows.flatten()[keep],
            next_ids=following.flatten()[keep],
            labels=torch.from_numpy(labels.reshape(W * T, -1))[keep],
            window=torch.arange(W).repeat_interleave(T)[keep],
            windows=windows,
            kept=keep,
        )

    def halves(self) -> tuple[Tensor, Tensor]:
        """Masks [N] of the selection tokens (the first half of the windows) and the test tokens."""
        select = self.window < (int(self.windows.shape[0]) + 1) // 2
        return select, ~select


@torch.no_grad()
def unit_activations(
    model: LoadedModel, hook: str, saes: Sequence[Any], windows: Tensor, *, batch_size: int = 32
) -> tuple[Tensor, list[Tensor]]:
    """The hook's activations (the neurons, for an mlp.hook_post hook) [W*T, d_in] and each SAE's
    features [W*T, F_i], float32 on the CPU, for windows [W, T]."""
    bridge = model.bridge
    plan = plan_capture(bridge, [hook], windows.shape[1])
    device = model_device(bridge)
    neurons: list[Tensor] = []
    features: list[list[Tensor]] = [[] for _ in saes]
    with ActivationHooks(bridge, [hook], plan.stop_at_layer) as hooks, torch.inference_mode():
        for start in range(0, len(windows), batch_size):
            x = plan.hooks[0].rows(hooks.run(windows[start : start + batch_size].to(device))[hook]).float()
            neurons.append(x.cpu())
            for i, sae in enumerate(saes):
                features[i].append(sae.encode(x.to(sae.W_dec.dtype)).float().cpu())
    return torch.cat(neurons), [torch.cat(f) for f in features]


def promoted_tokens(model: LoadedModel, hook: str, directions: Tensor, top: int) -> Tensor | None:
    """[n, top] the ids each direction (rows of [n, d_in] in the hook's space) raises most through
    the final norm and the unembedding; None for a hook with no direct path to the logits."""
    logits, _ = logit_map(model.bridge, hook, directions.shape[1])
    if logits is None:
        return None
    effects = logits(directions.detach().float().cpu())
    return effects.topk(top, dim=1).indices
