"""The one splice of a dictionary into the model: evaluation, interventions, the server, the analysis's
ablation runs and the scorecard all run the model through `spliced`.

    with spliced(bridge, sae, at="blocks.0.mlp.hook_post") as splice:
        logits = bridge(tokens)                      # the SAE's reconstruction in place of the activation
    with spliced(bridge, transcoder, at="blocks.0.ln2.hook_out", writes="blocks.0.hook_mlp_out"):
        ...                                          # the MLP's output predicted from its input
    with spliced(bridge, sae, at=hook, edit=edit_function([ablate(7)]), with_error=True):
        ...                                          # feature 7 ablated, everything else exact
    with spliced(bridge, None, at=hook):
        ...                                          # zero ablation

A dictionary reads the activation at hook `at` and writes its prediction at hook `writes` (the same hook
for an SAE, x_hat = decode(encode(x)); another for a transcoder, which reads the MLP's input and writes
its output). Writes and reads are per token: an activation [batch, pos, *shape] becomes rows
[batch * pos, prod(shape)] (`interp.activations.hooks.token_rows`), so the dictionary's d_in must equal
the read hook's per-token size and its d_out (d_in for an SAE) the written hook's.

- with_error: the error term e = y - y_hat is added back, with y the clean activation at `writes`; the
  output y_hat + e equals y (the sum is formed in float64 and cast to the activation's dtype, so it
  rounds to y exactly) and reproduces the clean logits, while a gradient still flows through y_hat
  (e is detached).
- edit: a function changing the features f [batch, pos, d_sae] before they are decoded
  (interp.interventions.intervene builds them). With the error term the output is then
  y + (edit(f) - f) W_dec (every dictionary here decodes linearly), formed in float64 from the
  features the edit changed only, so it is y exactly where nothing changed.
- record: the last pass's rows are kept in `splice.last` (detached, before any edit).
- no dictionary (None): zero ablation, the activation at `at` becomes 0: the baseline of
  "CE loss recovered" (the README's "Metrics").

Inside the block the hooks are attached, and the bridge settings they need turned on; on exit both are
undone, so the model is left as it was found.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from interp.activations.hooks import hook_settings, token_rows

FeatureEdit = Callable[[Tensor], Tensor]  # f [batch, pos, d_sae] -> edited f of the same shape


@dataclass
class SpliceRecord:
    """What the dictionary saw and made during one spliced pass, per token: `source` [n, d_in] the rows it
    read, `x` [n, d_out] the clean activation it replaced, `x_hat` [n, d_out] its prediction and
    `f` [n, d_sae] its features. For an SAE, source and x are the same rows."""

    source: Tensor
    x: Tensor
    x_hat: Tensor
    f: Tensor


def dictionary_rows(activation: Tensor, width: int, hook_name: str, what: str) -> Tensor:
    """[batch, pos, *shape] -> [batch * pos, width]; ValueError naming the hook and both sizes when
    prod(shape) is not the dictionary's `what` (d_in or d_out) = width."""
    per_token = math.prod(activation.shape[2:]) if activation.ndim >= 2 else 0
    if activation.ndim < 3 or per_token != width:
        raise ValueError(
            f"the dictionary has {what}={width} but hook {hook_name!r} carries activations of shape "
            f"{list(activation.shape)} (per-token size {per_token}); splice it at the hook it was "
            "trained on, or use a dictionary trained on this hook."
        )
    return token_rows(activation)


class Splice:
    """The forward hooks of one splice (see the module docstring); `last` holds the record of the last pass."""

    def __init__(
        self,
        dictionary: Any,
        at: str,
        writes: str,
        *,
        edit: FeatureEdit | None = None,
        with_error: bool = False,
        record: bool = False,
    ):
        self.dictionary, self.at, self.writes = dictionary, at, writes
        self.edit, self.with_error, self.record = edit, with_error, record
        self.last: SpliceRecord | None = None
        self._source: Tensor | None = None  # the rows read at `at` in this pass (a transcoder's input)

    def read(self, activation: Tensor, hook: Any = None) -> None:
        """Forward hook at `at` of a dictionary that writes elsewhere: keep its input rows."""
        self._source = dictionary_rows(activation, int(self.dictionary.cfg.d_in), self.at, "d_in")

    def write(self, activation: Tensor, hook: Any = None) -> Tensor:
        """Forward hook at `writes`: the activation replaced by the dictionary's prediction."""
        if self.dictionary is None:
            return torch.zeros_like(activation)
        cfg = self.dictionary.cfg
        if self.at == self.writes:  # an SAE: it reads and writes the same activation
            y = source = dictionary_rows(activation, int(cfg.d_in), self.writes, "d_in")  # [n, d_in]
        else:
            y = dictionary_rows(activation, int(getattr(cfg, "d_out", cfg.d_in)), self.writes, "d_out")  # [n, d_out]
            if self._source is None:
                raise ValueError(f"hook {self.writes!r} fired before {self.at!r}; a dictionary reads before it writes.")
            source = self._source
        param = next(iter(self.dictionary.parameters()))
        f = self.dictionary.encode(source.to(param.device, param.dtype))  # [n, d_sae]
        edited = None if self.edit is None else self.edit(f.view(*activation.shape[:2], -1).clone()).reshape(f.shape)
        y_hat = None
        if self.record or not (self.with_error and edited is not None):
            y_hat = self.dictionary.decode(f)  # [n, d_out], the dictionary's dtype
        if self.record:
            self.last = SpliceRecord(source.detach(), y.detach(), y_hat.detach().to(y.device), f.detach().to(y.device))
        if self.with_error and edited is not None:
            delta = edited - f  # [n, d_sae], zero where the edit changed nothing
            changed = torch.nonzero(delta.abs().sum(0)).squeeze(1)
            moved = delta[:, changed].double() @ self.dictionary.W_dec[changed].double()  # [n, d_out]
            out = (y.to(torch.float64) + moved.to(y.device)).to(activation.dtype)
        elif self.with_error:
            y_hat64 = y_hat.to(y.device, torch.float64)
            out = (y_hat64 + (y.to(torch.float64) - y_hat64).detach()).to(activation.dtype)
        else:
            out = (y_hat if edited is None else self.dictionary.decode(edited)).to(activation.device, activation.dtype)
        self._source = None
        return out.reshape(activation.shape)


@contextmanager
def spliced(
    bridge: Any,
    dictionary: Any,
    *,
    at: str,
    writes: str | None = None,
    edit: FeatureEdit | None = None,
    with_error: bool = False,
    record: bool = False,
) -> Iterator[Splice]:
    """The bridge with `dictionary` reading hook `at` and writing its prediction at hook `writes`
    (default `at`), or with the activation at `at` zeroed when `dictionary` is None; yields the Splice,
    whose `last` holds the record of the last pass when `record`."""
    writes = writes or at
    splice = Splice(dictionary, at, writes, edit=edit, with_error=with_error, record=record)
    names = [at] if writes == at else [at, writes]
    fwd_hooks = [(writes, splice.write)] if writes == at else [(at, splice.read), (writes, splice.write)]
    with hook_settings(bridge, names), bridge.hooks(fwd_hooks=fwd_hooks):
        yield splice


__all__ = ["FeatureEdit", "Splice", "SpliceRecord", "dictionary_rows", "spliced"]
