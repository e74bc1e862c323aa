"""Splicing an SAE into a model: its reconstruction replaces the activation at one hook.

Three runs of the same tokens share everything but that hook:
- clean: the model as it is;
- SAE: the activation x at the hook becomes x_hat = decode(encode(x)); with `with_error=True`
  the error term e = x - x_hat is added back, x_hat + e, which equals x (the sum is formed in
  float64 and cast to the activation's dtype, so it rounds to x exactly) and so reproduces the clean
  logits, while a gradient still flows through x_hat (e is detached);
- zero ablation: the activation becomes 0, the baseline of "CE loss recovered" (DESIGN.md).

An activation [batch, pos, *shape] is read per token, as `interp.capture` stores it: rows
[batch * pos, d_in] with d_in = prod(shape), so the SAE's d_in must equal that per-token size
(the hook's last dimension for [batch, pos, d] hooks).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from interp.hooks import enable_hooks
from interp.model import model_device


def activation_rows(activation: Tensor, sae: Any, hook_name: str) -> Tensor:
    """[batch, pos, *shape] -> [batch * pos, d_in]; ValueError naming the hook and both sizes when
    prod(shape) is not the SAE's d_in."""
    d_in = int(sae.cfg.d_in)
    per_token = math.prod(activation.shape[2:]) if activation.ndim >= 2 else 0
    if activation.ndim < 3 or per_token != d_in:
        raise ValueError(
            f"the SAE takes d_in={d_in} but hook {hook_name!r} carries activations of shape "
            f"{list(activation.shape)} (per-token size {per_token}); splice it at the hook it was "
            "trained on, or use an SAE trained on this hook."
        )
    return activation.reshape(-1, d_in)


@dataclass
class SpliceRecord:
    """What the SAE saw and made during one spliced pass, per token: x and x_hat [n, d_in], f [n, d_sae]."""

    x: Tensor
    x_hat: Tensor
    f: Tensor


FeatureEdit = Callable[[Tensor], Tensor]  # f [batch, pos, d_sae] -> edited f of the same shape


class SAESplice:
    """A forward hook that replaces the activation by the SAE's reconstruction.

    with_error: add back e = x - x_hat (the output then equals x). edit: a function changing the
    features f [batch, pos, d_sae] before they are decoded (interp.intervene builds them); with the
    error term the output is then decode(edit(f)) + e = x + (edit(f) - f) W_dec (every SAE here decodes
    linearly, x_hat = f W_dec + b_dec), formed in float64 from the features the edit changed only, so
    it is x exactly where nothing changed. record: keep the last pass's x, x_hat and f (detached,
    before any edit) in `self.last`.
    """

    def __init__(
        self,
        sae: Any,
        hook_name: str,
        *,
        with_error: bool = False,
        edit: FeatureEdit | None = None,
        record: bool = False,
    ):
        self.sae, self.hook_name, self.with_error, self.record = sae, hook_name, with_error, record
        self.edit = edit
        self.last: SpliceRecord | None = None

    def __call__(self, activation: Tensor, hook: Any = None) -> Tensor:
        x = activation_rows(activation, self.sae, self.hook_name)  # [n, d_in]
        param = next(iter(self.sae.parameters()))
        f = self.sae.encode(x.to(param.device, param.dtype))  # [n, d_sae]
        edited = None if self.edit is None else self.edit(f.view(*activation.shape[:2], -1).clone()).reshape(f.shape)
        x_hat = None
        if self.record or not (self.with_error and edited is not None):
            x_hat = self.sae.decode(f)  # [n, d_in], the SAE's dtype
        if self.record:
            self.last = SpliceRecord(x.detach(), x_hat.detach().to(x.device), f.detach().to(x.device))
        if self.with_error and edited is not None:
            delta = edited - f  # [n, d_sae], zero where the edit changed nothing
            changed = torch.nonzero(delta.abs().sum(0)).squeeze(1)
            moved = delta[:, changed].double() @ self.sae.W_dec[changed].double()  # [n, d_in]
            out = (x.to(torch.float64) + moved.to(x.device)).to(activation.dtype)
        elif self.with_error:
            x_hat64 = x_hat.to(x.device, torch.float64)
            out = (x_hat64 + (x.to(torch.float64) - x_hat64).detach()).to(activation.dtype)
        else:
            out = (x_hat if edited is None else self.sae.decode(edited)).to(activation.device, activation.dtype)
        return out.reshape(activation.shape)


def zero_ablation(activation: Tensor, hook: Any = None) -> Tensor:
    """A forward hook that replaces the activation by zeros."""
    return torch.zeros_like(activation)


def run_clean(bridge: Any, tokens: Tensor) -> Tensor:
    """tokens [batch, pos] -> logits [batch, pos, d_vocab] of the unmodified model."""
    return bridge(tokens.to(model_device(bridge)))


def run_with_sae(bridge: Any, tokens: Tensor, sae: Any, hook_name: str, *, with_error: bool = False) -> Tensor:
    """tokens [batch, pos] -> logits with the SAE's reconstruction (plus the error term when
    `with_error`) in place of the activation at `hook_name`."""
    enable_hooks(bridge, [hook_name])
    with bridge.hooks(fwd_hooks=[(hook_name, SAESplice(sae, hook_name, with_error=with_error))]):
        return bridge(tokens.to(model_device(bridge)))


def run_zero_ablated(bridge: Any, tokens: Tensor, hook_name: str) -> Tensor:
    """tokens [batch, pos] -> logits with the activation at `hook_name` set to zero."""
    enable_hooks(bridge, [hook_name])
    with bridge.hooks(fwd_hooks=[(hook_name, zero_ablation)]):
        return bridge(tokens.to(model_device(bridge)))


@dataclass
class SplicedRuns:
    """Logits [batch, pos, d_vocab] of the three runs of one batch, and the SAE's record of its pass."""

    clean: Tensor
    sae: Tensor
    zero_ablation: Tensor
    record: SpliceRecord


@torch.no_grad()
def spliced_runs(bridge: Any, tokens: Tensor, sae: Any, hook_name: str) -> SplicedRuns:
    """Clean, SAE-spliced and zero-ablated runs of tokens [batch, pos] (three forward passes)."""
    enable_hooks(bridge, [hook_name])
    device = model_device(bridge)
    tokens = tokens.to(device)
    clean = bridge(tokens)
    splice = SAESplice(sae, hook_name, record=True)
    with bridge.hooks(fwd_hooks=[(hook_name, splice)]):
        spliced = bridge(tokens)
    if splice.last is None:
        raise ValueError(f"hook {hook_name!r} never fired in the forward pass; this model's backend does not run it.")
    with bridge.hooks(fwd_hooks=[(hook_name, zero_ablation)]):
        ablated = bridge(tokens)
    return SplicedRuns(clean=clean, sae=spliced, zero_ablation=ablated, record=splice.last)


__all__ = [
    "FeatureEdit",
    "SAESplice",
    "SpliceRecord",
    "SplicedRuns",
    "activation_rows",
    "run_clean",
    "run_with_sae",
    "run_zero_ablated",
    "spliced_runs",
    "zero_ablation",
]
