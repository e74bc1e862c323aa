"""The scorecard's measures: how well units (features or neurons) detect concepts, probe them,
match across runs, and predict the next token. Units are columns of `acts` [N tokens, U units];
concept labels are `labels` [N, C] bool.

- `best_thresholds`: the exact best F1 of score columns as detectors of one concept ("positive when
  the score >= t" over every value t a column takes but its minimum, which would mark every token: a
  unit that cannot say no is not a detector), and its threshold.
- `standardised_difference`: a scale-free ranking of units per concept.
- `fit_probes`, `probe_scores`: a class-balanced logistic probe per concept on chosen units.
- `max_correlation`: each column's largest Pearson correlation with any column of another matrix.
- `logit_consistency`: the share of a unit's top examples whose next token it promotes most.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


@torch.no_grad()
def best_thresholds(scores: Tensor, truth: Tensor) -> tuple[Tensor, Tensor]:
    """The best F1 and its threshold [m] (float64) of each column of scores [n, m] as a detector of one
    concept truth [n] bool: "positive when score >= t" over every value t a column takes but its minimum
    (which marks every token). NaN for a constant column; F1 0 (threshold the maximum) when no positive
    lies above the minimum."""
    n, m = scores.shape
    P = float(truth.sum())
    ordered, order = scores.T.float().sort(dim=1, descending=True)  # [m, n]
    true_pos = truth[order].double().cumsum(dim=1)  # positives among the top i + 1
    group_end = torch.ones_like(ordered, dtype=torch.bool)
    group_end[:, :-1] = ordered[:, :-1] != ordered[:, 1:]  # the last of each tie group
    group_end[:, -1] = False  # the minimum's threshold marks every token
    predicted = torch.arange(1, n + 1, dtype=torch.float64)
    f1 = torch.where(group_end, 2 * true_pos / (P + predicted), -1.0)
    best = f1.argmax(dim=1, keepdim=True)
    best_f1 = f1.gather(1, best).squeeze(1)
    threshold = ordered.gather(1, best).squeeze(1).double()
    constant = ordered[:, 0] == ordered[:, -1]
    best_f1 = torch.where(constant, math.nan, best_f1.clamp(min=0.0))
    threshold = torch.where(constant, math.nan, threshold)
    return best_f1, threshold


@torch.no_grad()
def standardised_difference(acts: Tensor, labels: Tensor, weights: Tensor) -> Tensor:
    """[U, C] float64: (mean on positives - mean on negatives) / the pooled standard deviation, a
    scale-free ranking of units (float32 products, enough to rank). acts [N, U], labels [N, C] bool,
    weights [N, C] (0 leaves a token out). 0 for a constant unit."""
    x = acts.float()
    y = (labels & (weights > 0)).float()
    others = (~labels & (weights > 0)).float()
    P, Q = y.sum(0).double().clamp(min=1), others.sum(0).double().clamp(min=1)
    on, off = (x.T @ y).double() / P, (x.T @ others).double() / Q
    square = x * x
    on_sq, off_sq = (square.T @ y).double() / P, (square.T @ others).double() / Q
    pooled = ((on_sq - on * on) * P + (off_sq - off * off) * Q) / (P + Q)
    return (on - off) / pooled.clamp(min=1e-24).sqrt()


@torch.no_grad()
def fit_probes(
    x: Tensor, labels: Tensor, weights: Tensor, *, l2: float = 1e-4, steps: int = 8, tol: float = 1e-5
) -> dict[str, Tensor]:
    """A logistic probe per concept on its units, fitted by Newton's method with class-balanced weights
    and a ridge of l2 x tokens, for `steps` steps or until no weight moves by `tol` (a nearly separable
    concept converges slowly; its ranking of tokens settles early).

    x [N, C, k] each concept's k units' activations, labels [N, C] bool, weights [N, C] (0 leaves a token
    out of a concept's fit). Returns the standardisation (mean, std [C, 1, k]) and weights beta [C, k+1, 1].
    Products over tokens are float32 (Newton's steps correct their rounding), the solve float64."""
    _, C, k = x.shape
    x = x.float().permute(1, 0, 2)  # [C, N, k]
    w = weights.float().T.unsqueeze(-1)  # [C, N, 1]
    count = w.sum(1, keepdim=True).clamp(min=1)
    mean = (x * w).sum(1, keepdim=True) / count
    std = (((x - mean) ** 2 * w).sum(1, keepdim=True) / count).sqrt().clamp(min=1e-12)
    fitted = {"mean": mean, "std": std}
    X = _design(x, fitted)
    XT = X.transpose(1, 2).contiguous()  # [C, k + 1, N]: batched products run fast on a contiguous left side
    y = labels.float().T.unsqueeze(-1)  # [C, N, 1]
    P = (y * w).sum(1, keepdim=True)
    n = w.sum(1, keepdim=True)
    weight = w * torch.where(y > 0, n / (2 * P.clamp(min=1)), n / (2 * (n - P).clamp(min=1)))
    ridge = l2 * n.double() * torch.diag(torch.tensor([1.0] * k + [0.0], dtype=torch.float64))
    beta = torch.zeros(C, k + 1, 1, dtype=torch.float64)
    for _ in range(steps):
        p = torch.sigmoid(X @ beta.float())  # [C, N, 1]
        grad = (XT @ (weight * (p - y))).double() + ridge @ beta
        hessian = (XT @ (X * (weight * p * (1 - p)))).double() + ridge + 1e-9 * torch.eye(k + 1)
        update = torch.linalg.solve(hessian, grad)
        beta = beta - update
        if float(update.abs().max()) < tol:
            break
    fitted["beta"] = beta
    return fitted


def _design(x: Tensor, fitted: dict[str, Tensor]) -> Tensor:
    z = (x - fitted["mean"]) / fitted["std"]
    return torch.cat([z, torch.ones_like(z[..., :1])], dim=-1)  # [C, N, k + 1]


@torch.no_grad()
def probe_scores(x: Tensor, fitted: dict[str, Tensor]) -> Tensor:
    """[C, N] float: each concept's probe logit on x [N, C, k] (its units' activations)."""
    return (_design(x.float().permute(1, 0, 2), fitted) @ fitted["beta"].float()).squeeze(-1)


@torch.no_grad()
def max_correlation(a: Tensor, b: Tensor, *, chunk: int = 1024) -> Tensor:
    """[Ua] float: for each column of a [N, Ua], its largest Pearson correlation with any column of
    b [N, Ub] (NaN for a constant column of a; constant columns of b never match)."""

    def standardised(x: Tensor) -> tuple[Tensor, Tensor]:
        centred = x.float() - x.float().mean(dim=0)
        norm = centred.norm(dim=0)
        return centred / norm.clamp(min=1e-30), norm > 0

    za, alive_a = standardised(a)
    zb, alive_b = standardised(b)
    zb = zb[:, alive_b]
    best = torch.full((a.shape[1],), math.nan)
    if zb.shape[1] == 0:
        return best
    for start in range(0, a.shape[1], chunk):
        best[start : start + chunk] = (za[:, start : start + chunk].T @ zb).max(dim=1).values
    best[~alive_a] = math.nan
    return best


@torch.no_grad()
def logit_consistency(acts: Tensor, next_ids: Tensor, promoted: Tensor, *, examples: int = 20) -> Tensor:
    """[U] float: for each unit, the share of its `examples` highest activations (among tokens where
    it is positive and that have a next token, next_ids >= 0) whose next token is in `promoted`
    [U, m] (the unit's m most promoted token ids). NaN for a unit that is never positive."""
    has_next = next_ids >= 0
    values = torch.where(has_next[None, :] & (acts.T > 0), acts.T.float(), -math.inf)  # [U, N]: rows contiguous
    top = values.topk(min(examples, values.shape[1]), dim=1)
    valid = torch.isfinite(top.values.T)  # [e, U]
    following = next_ids[top.indices.T]  # [e, U]
    hits = (following.T.unsqueeze(-1) == promoted.unsqueeze(1)).any(-1).T & valid  # [e, U]
    share = hits.sum(0).double() / valid.sum(0).double()
    share[valid.sum(0) == 0] = math.nan
    return share


def histogram(values: Tensor, labels: Tensor, *, bins: int = 40) -> dict:
    """A unit's activations stacked by concept membership: the count of exact zeros for positives and
    negatives, and counts of the other values in `bins` equal bins over their range."""
    values = values.float().contiguous()
    zero = values == 0
    rest = values[~zero]
    low, high = (float(rest.min()), float(rest.max())) if rest.numel() else (0.0, 1.0)
    if high <= low:
        high = low + 1.0
    edges = torch.linspace(low, high, bins + 1)
    which = torch.bucketize(values, edges[1:-1], right=True)

    def counts(mask: Tensor) -> list[int]:
        return torch.bincount(which[mask & ~zero], minlength=bins).tolist()

    return {
        "edges": [round(float(e), 6) for e in edges],
        "positive": counts(labels),
        "negative": counts(~labels),
        "zero_positive": int((zero & labels).sum()),
        "zero_negative": int((zero & ~labels).sum()),
    }


def median(values: Tensor) -> float | None:
    """The median of the finite values, None if there are none."""
    finite = values[torch.isfinite(values)].double()
    return float(finite.median()) if finite.numel() else None


def value_histogram(values: Tensor, *, bins: int = 20, low: float = 0.0, high: float = 1.0) -> dict:
    """Counts of the finite values in `bins` equal bins over [low, high] (the ends clamp in)."""
    finite = values[torch.isfinite(values)].double().clamp(low, high)
    edges = torch.linspace(low, high, bins + 1, dtype=torch.float64)
    which = torch.bucketize(finite, edges[1:-1], right=True)
    return {"edges": [round(float(e), 6) for e in edges], "counts": torch.bincount(which, minlength=bins).tolist()}
