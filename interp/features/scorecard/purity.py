"""The paper's per-unit measures, over all units of a side (no unit is chosen, so no folds are needed).

For a unit u with activation a (its positive part a+, so a neuron's small negative GELU outputs do not
count) and a concept c with base rate b_c (the share of tokens in c):
- mass share m_uc = sum(a+ on c's tokens) / sum(a+);
- purity_u = max over c of (m_uc - b_c) / (1 - b_c): the share of the unit's activation mass on its
  best concept above what that concept's base rate gives any unit (0: spread like the tokens, 1: all on
  the concept). Read on all concepts and on context concepts only (those token identity does not solve);
- token entropy: the entropy (bits) of the unit's activation mass over token ids (0: one token id);
- Pearson r of a with the indicator of its best concept (the paper's statistic for its Arabic feature);
- specificity by activation: the unit's firings cut into DECILES equal bins of (0, its maximum], and the
  share of each bin's tokens in its best concept (NaN for an empty bin), averaged over the units.

Masked positives (a span opened before the window) count as outside the concept here.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from interp.features.scorecard.measures import median, value_histogram

DECILES = 10
MIN_FIRINGS = 20  # a unit firing on fewer tokens gets no per-unit measures


@torch.no_grad()
def unit_measures(acts: Tensor, truth: Tensor, ids: Tensor, vocab: int, context: Tensor) -> dict[str, Tensor]:
    """Per unit [U] float64 (NaN for a unit firing on fewer than MIN_FIRINGS tokens): purity, context purity,
    token entropy, Pearson r with its best concept, the best concept's index, and [U, DECILES] shares.

    acts [N, U], truth [N, C] bool, ids [N] token ids, context [C] bool (the context concepts)."""
    N, U = acts.shape
    positive = acts.float().clamp(min=0)
    token, unit = positive.nonzero(as_tuple=True)  # the firing entries: the per-unit sums run over these only
    value = positive[token, unit].double()
    mass = torch.bincount(unit, weights=value, minlength=U)  # [U]
    y = truth.float()
    base = y.mean(0).double()  # [C]
    share = (positive.T @ y).double() / mass.clamp(min=1e-30)[:, None]  # [U, C]
    above = (share - base) / (1 - base).clamp(min=1e-12)
    above[:, base >= 1] = -math.inf
    purity, best = above.max(dim=1)
    context_above = above.clone()
    context_above[:, ~context] = -math.inf
    context_purity = context_above.max(dim=1).values if bool(context.any()) else torch.full_like(purity, math.nan)

    by_token = torch.bincount(ids[token] * U + unit, weights=value, minlength=vocab * U).reshape(vocab, U)
    p = by_token / mass.clamp(min=1e-30)
    entropy = -(p * torch.log2(p.clamp(min=1e-300))).sum(0)

    mean_a = mass / N
    var_a = torch.bincount(unit, weights=value * value, minlength=U) / N - mean_a**2
    rate = base[best]
    covariance = mass * share[torch.arange(U), best] / N - mean_a * rate  # E[a y] - E[a] E[y]
    r = covariance / (var_a * rate * (1 - rate)).clamp(min=1e-30).sqrt()
    top = torch.zeros(U, dtype=torch.float64).scatter_reduce_(0, unit, value, reduce="amax")
    which = (value / top[unit].clamp(min=1e-30) * DECILES).ceil().clamp(1, DECILES).long() - 1
    slot = unit * DECILES + which
    in_bin = torch.bincount(slot, minlength=U * DECILES).double()
    inside = torch.bincount(slot, weights=truth[token, best[unit]].double(), minlength=U * DECILES)
    deciles = (inside / in_bin).reshape(U, DECILES)  # 0/0 -> NaN: an empty bin
    alive = torch.bincount(unit, minlength=U) >= MIN_FIRINGS
    out = {"purity": purity, "context_purity": context_purity, "token_entropy": entropy, "pearson_r": r}
    for name in out:
        out[name] = torch.where(alive, out[name].double(), math.nan)
    out["best_concept"] = torch.where(alive, best, -1)
    out["deciles"] = torch.where(alive[:, None], deciles, math.nan)
    return out


def summarise(measures: dict[str, Tensor]) -> dict:
    """The record of one side: medians, the share of units with purity >= 0.8, histograms, mean deciles."""
    out: dict = {"units": int(torch.isfinite(measures["purity"]).sum())}
    for name in ("purity", "context_purity", "pearson_r"):
        values = measures[name]
        out[name] = {
            "median": median(values),
            "histogram": value_histogram(values, low=-0.2 if name == "pearson_r" else 0.0),
        }
    finite = measures["purity"][torch.isfinite(measures["purity"])]
    out["purity"]["share_at_least_0.8"] = round(float((finite >= 0.8).double().mean()), 6) if finite.numel() else None
    entropy = measures["token_entropy"]
    top = float(entropy[torch.isfinite(entropy)].max()) if torch.isfinite(entropy).any() else 1.0
    out["token_entropy"] = {"median": median(entropy), "histogram": value_histogram(entropy, high=max(top, 1.0))}
    deciles = measures["deciles"]
    mean = torch.nanmean(deciles, dim=0)
    out["specificity_by_decile"] = [None if not math.isfinite(v) else round(float(v), 6) for v in mean]
    return out
