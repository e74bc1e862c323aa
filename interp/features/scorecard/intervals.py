"""Figures with intervals: F1 and skill per concept, medians over concepts, differences and win counts,
each with a paired document-bootstrap 95% interval.

Every scorer's counts are [D, C, 3] (tp, fp, fn per document). A bootstrap resample draws D documents
with replacement; every scorer is re-summed with the same draw (paired), so a difference's interval
holds what the documents share. F1 = 2 tp / (2 tp + fp + fn). Skill over the best trivial baseline
(the best of token identity, previous + current token and marking every token, per concept and per
resample) is (F1 - base) / (1 - base) at or above it (the share of the baseline's headroom won) and
(F1 - base) / base below it (the share of the baseline's F1 lost): 1 is perfect, 0 the baseline, -1 no
true positive. A win needs the larger F1 *and* an F1 above the best baseline.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

BOOTSTRAP = 1000
LEVEL = 0.95


def f1_of(counts: Tensor) -> Tensor:
    """[..., 3] (tp, fp, fn) -> [...] float64 F1, NaN where there is no positive and no prediction."""
    counts = counts.double()
    tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
    denominator = 2 * tp + fp + fn
    return torch.where(denominator > 0, 2 * tp / denominator.clamp(min=1), math.nan)


def skill_of(f1: Tensor, base: Tensor) -> Tensor:
    """Skill in [-1, 1]: (f1 - base) / (1 - base) at or above the baseline (the share of its headroom won),
    (f1 - base) / base below it (the share of its F1 lost). NaN where the baseline is perfect or zero."""
    above = (f1 - base) / (1 - base).clamp(min=1e-12)
    below = (f1 - base) / base.clamp(min=1e-12)
    skill = torch.where(f1 >= base, above, below)
    return torch.where((base < 1) & (base > 0), skill, math.nan)


class Resampler:
    """Point values and paired bootstrap draws of every figure built from per-document counts."""

    def __init__(self, documents: int, *, draws: int = BOOTSTRAP, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        picks = torch.randint(documents, (draws, documents), generator=generator)
        weights = torch.zeros(draws, documents, dtype=torch.float64)
        weights.scatter_add_(1, picks, torch.ones_like(picks, dtype=torch.float64))
        self.weights = torch.cat([torch.ones(1, documents, dtype=torch.float64), weights])  # row 0: the data itself

    def f1(self, counts: Tensor) -> Tensor:
        """[1 + B, C] F1 of counts [D, C, 3]: row 0 the point value, the rest the bootstrap draws."""
        D, C, _ = counts.shape
        summed = (self.weights @ counts.double().reshape(D, C * 3)).reshape(-1, C, 3)
        return f1_of(summed)


def interval(values: Tensor, *, digits: int = 4) -> dict:
    """{value, low, high} of [1 + B] draws (row 0 the point value), the percentile interval at LEVEL."""
    point = float(values[0])
    finite = values[1:][torch.isfinite(values[1:])]
    if not math.isfinite(point) or finite.numel() == 0:
        return {"value": None, "low": None, "high": None}
    tail = (1 - LEVEL) / 2
    low, high = torch.quantile(finite, torch.tensor([tail, 1 - tail], dtype=finite.dtype)).tolist()
    return {"value": round(point, digits), "low": round(low, digits), "high": round(high, digits)}


def nanmedian_rows(values: Tensor) -> Tensor:
    """[R, C] -> [R] the median over the finite values of each row (NaN for a row with none)."""
    return torch.nanquantile(values.masked_fill(~torch.isfinite(values), math.nan), 0.5, dim=1)


def verdict(difference: dict, a: str, b: str) -> str:
    """The verdict an interval of a - b states: who is ahead, or that a tie is not excluded."""
    if difference["low"] is None:
        return "not measured"
    if difference["low"] > 0:
        return f"{a} ahead"
    if difference["high"] < 0:
        return f"{b} ahead"
    return "no verdict: the interval includes a tie"


def compare(a: Tensor, b: Tensor, base: Tensor, names: tuple[str, str]) -> dict:
    """Skill medians of a and b F1 [1 + B, C] (over the same concepts), the median over concepts of their
    per-concept skill difference (paired: each concept against itself) and win counts, with intervals;
    base [1 + B, C] the best baseline F1 (a win needs an F1 above it)."""
    skill_a, skill_b = skill_of(a, base), skill_of(b, base)
    med_a, med_b = nanmedian_rows(skill_a), nanmedian_rows(skill_b)
    both = torch.isfinite(a) & torch.isfinite(b)
    wins_a = ((a > b) & (a > base) & both).sum(1).double()
    wins_b = ((b > a) & (b > base) & both).sum(1).double()
    difference = interval(nanmedian_rows(skill_a - skill_b))
    return {
        "a": names[0],
        "b": names[1],
        "median_skill_a": interval(med_a),
        "median_skill_b": interval(med_b),
        "difference": difference,
        "wins_a": interval(wins_a, digits=1),
        "wins_b": interval(wins_b, digits=1),
        "verdict": verdict(difference, *names),
    }
