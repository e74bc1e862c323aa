"""One pass over the scored windows: the activations of a model's neurons (the SAE's hook) and of every
SAE that reads it, and the tokens each unit promotes through the unembedding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from interp.activations.hooks import ActivationHooks, plan_capture
from interp.features.analysis.decoder import logit_map
from interp.model.transformer import LoadedModel, model_device


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
