"""The scorecard's measures: how well units (features or neurons) detect concepts, probe them,
match across runs, and predict the next token. Units are columns of `acts` [N tokens, U units];
concept labels are `labels` [N, C] bool. Every function works on all units and concepts at once.

- `detection`: per unit and concept, the AUROC of the activation as a score (ties count one half,
  from the Mann-Whitney rank sum) and the F1 at the unit's best threshold ("positive when the
  activation >= t", over every value t the unit takes but its minimum, which would mark every
  token: a unit that cannot say no is not a detector).
- `threshold_scores`: F1, precision and recall of chosen units at given thresholds.
- `sparse_probes`: a class-balanced logistic probe on the top-k units by mean difference.
- `max_correlation`: each column's largest Pearson correlation with any column of another matrix.
- `logit_consistency`: the share of a unit's top examples whose next token it promotes most.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

SPARSE_FRACTION = 0.125  # units non-zero on at most this share of tokens take the sparse path


@torch.no_grad()
def detection(acts: Tensor, labels: Tensor, *, max_entries: int = 1 << 19) -> dict[str, Tensor]:
    """AUROC, best F1 and its threshold [U, C] float64 (NaN for a concept with no positive or no
    negative) of each unit's activation (acts [N, U]) as a detector of each concept (labels [N, C]).

    Exact for every unit and threshold. A sparse unit (zero on all but SPARSE_FRACTION of the
    tokens, as a TopK feature) is scored from its non-zero entries, its zeros being one tie group;
    a dense one (a neuron) from the ranks of its tokens. Units go in chunks of at most
    `max_entries` entries."""
    N, U = acts.shape
    C = labels.shape[1]
    y_all = labels.to(torch.int32)
    P = y_all.sum(0).double()  # [C]
    out = {name: torch.full((U, C), math.nan, dtype=torch.float64) for name in ("auroc", "f1", "threshold")}
    nonzero_per_unit = (acts != 0).sum(0)
    sparse = (nonzero_per_unit <= N * SPARSE_FRACTION).nonzero().flatten()
    dense = (nonzero_per_unit > N * SPARSE_FRACTION).nonzero().flatten()
    start = 0
    while start < len(sparse):  # chunks of at most max_entries non-zero entries
        stop = start + 1
        while stop < len(sparse) and int(nonzero_per_unit[sparse[start : stop + 1]].sum()) <= max_entries:
            stop += 1
        _store(out, sparse[start:stop], _detect_sparse(acts[:, sparse[start:stop]], y_all, P))
        start = stop
    positives = [y_all[:, c].nonzero().flatten() for c in range(C)]
    step = max(1, max_entries // N)
    for start in range(0, len(dense), step):
        _store(out, dense[start : start + step], _detect_dense(acts[:, dense[start : start + step]], y_all, positives))
    scored = (P > 0) & (P < N)
    for value in out.values():
        value[:, ~scored] = math.nan
    return out


def _store(out: dict[str, Tensor], units: Tensor, values: dict[str, Tensor]) -> None:
    for name, value in values.items():
        out[name][units] = value


def _detect_dense(acts: Tensor, y_all: Tensor, positives: list[Tensor]) -> dict[str, Tensor]:
    """`detection` for units that are rarely zero: ranks of every token, then per concept the
    positives' ranks sorted (the work is the concept's positives times the units)."""
    N, U = acts.shape
    C = y_all.shape[1]
    ordered, order = acts.T.contiguous().float().sort(dim=1)  # [U, N]
    positions = torch.arange(N, dtype=torch.int32).expand(U, N)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    first = torch.where(starts, positions, 0).cummax(dim=1).values  # where each value's tie group starts
    last = torch.where(ends, positions, N).flip(1).cummin(dim=1).values.flip(1)  # and where it ends
    below = torch.empty_like(first).scatter_(1, order, first)  # tokens of the unit with a smaller value
    upto = torch.empty_like(last).scatter_(1, order, last + 1)
    rank_sum = ((below + upto + 1).double() / 2) @ y_all.double()  # [U, C] rank sums of the positives
    P = y_all.sum(0).double()
    out = {
        "auroc": (rank_sum - P * (P + 1) / 2) / (P * (N - P)),
        "f1": torch.full((U, C), math.nan, dtype=torch.float64),
        "threshold": torch.full((U, C), math.nan, dtype=torch.float64),
    }
    for c, index in enumerate(positives):
        if len(index) == 0:
            continue
        ranks = below[:, index].sort(dim=1).values  # [U, P]: tokens below each positive, ascending
        first = torch.ones_like(ranks, dtype=torch.bool)
        first[:, 1:] = ranks[:, 1:] != ranks[:, :-1]
        positions = torch.arange(len(index)).expand_as(ranks)
        ties_start = torch.where(first, positions, 0).cummax(dim=1).values  # first positive of each tie group
        true_pos = (len(index) - ties_start).double()  # positives >= this value
        scores = 2 * true_pos / (len(index) + (N - ranks).double())
        scores[ranks == 0] = -1.0  # a threshold at the unit's minimum marks every token: not a detector
        best = scores.argmax(dim=1, keepdim=True)
        found = scores.gather(1, best).squeeze(1) >= 0  # else every positive sits at the unit's minimum
        out["f1"][:, c] = torch.where(found, scores.gather(1, best).squeeze(1), 0.0)
        at = ordered.gather(1, ranks.gather(1, best).long()).squeeze(1)
        out["threshold"][:, c] = torch.where(found, at, ordered[:, -1]).double()
    constant = ordered[:, 0] == ordered[:, -1]
    out["f1"][constant], out["threshold"][constant] = math.nan, math.nan
    return out


def _detect_sparse(acts: Tensor, y_all: Tensor, P: Tensor) -> dict[str, Tensor]:
    """`detection` for mostly-zero units: the zeros are one tie group; the work is over the
    non-zero entries, sorted by unit then value, times the concepts."""
    N, U = acts.shape
    C = y_all.shape[1]
    token, unit = (acts != 0).nonzero(as_tuple=True)
    value = acts[token, unit].double()
    order = torch.sort(value, stable=True).indices
    order = order[torch.sort(unit[order], stable=True).indices]  # by unit, then by value
    token, unit, value = token[order], unit[order], value[order]
    E = len(value)
    zeros = (N - torch.bincount(unit, minlength=U)).double()  # [U] tokens at exactly 0
    negatives = torch.zeros(U, dtype=torch.float64).index_add_(0, unit, (value < 0).double())
    first = torch.ones(E, dtype=torch.bool)
    first[1:] = (unit[1:] != unit[:-1]) | (value[1:] != value[:-1])
    group = first.cumsum(0) - 1
    group_start = first.nonzero().flatten()[group]  # entry index where each entry's tie group starts
    group_size = torch.bincount(group)[group]
    unit_start = torch.searchsorted(unit, torch.arange(U), side="left")[unit]
    shift = torch.where(value > 0, zeros[unit], torch.zeros_like(value))  # the zeros lie below a positive value
    below = (group_start - unit_start).double() + shift  # tokens of the unit below this value
    upto = below + group_size.double()
    y = y_all[token].double()  # [E, C]
    rank = (below + upto + 1) / 2  # 1-based average rank among all N tokens
    rank_sum = torch.zeros(U, C, dtype=torch.float64).index_add_(0, unit, y * rank[:, None])
    nonzero_pos = torch.zeros(U, C, dtype=torch.float64).index_add_(0, unit, y)
    zero_pos = P - nonzero_pos  # positives at exactly 0
    rank_sum += zero_pos * (negatives + (zeros + 1) / 2)[:, None]
    auroc = (rank_sum - P * (P + 1) / 2) / (P * (N - P))

    # F1 of "positive when >= t" at each tie group's value, and at t = 0 when the unit has zeros
    cum = torch.zeros(E + 1, C, dtype=torch.float64)
    torch.cumsum(y, dim=0, out=cum[1:])
    pos_below = (cum[group_start] - cum[unit_start]).double()  # positives of the unit below this value
    pos_below += torch.where(value > 0, 1.0, 0.0)[:, None].double() * zero_pos[unit]
    true_pos = P - pos_below
    predicted = N - below
    f1_at = 2 * true_pos / (P + predicted[:, None])
    f1_at[below == 0] = -1.0  # a threshold at the unit's minimum marks every token: not a detector
    neg_pos = torch.zeros(U, C, dtype=torch.float64).index_add_(0, unit, y * (value < 0).double()[:, None])
    allowed = (zeros > 0) & (negatives > 0)  # t = 0 marks every token unless some are negative
    f1_zero = torch.where(allowed[:, None], 2 * (P - neg_pos) / (P + N - negatives[:, None]), -1.0)
    f1 = f1_zero.clone().scatter_reduce_(0, unit[:, None].expand(E, C), f1_at, reduce="amax")
    f1[f1 < 0] = math.nan  # a constant unit
    at_best = f1_at == f1[unit]
    candidates = torch.where(at_best, value[:, None].expand(E, C), -math.inf)
    threshold = torch.where(f1_zero == f1, 0.0, -math.inf).double()
    threshold = threshold.scatter_reduce_(0, unit[:, None].expand(E, C), candidates, reduce="amax")
    return {"auroc": auroc, "f1": f1, "threshold": threshold}


@torch.no_grad()
def auroc_of(scores: Tensor, labels: Tensor) -> float:
    """AUROC of one score vector [N] for one label vector [N] bool (ties one half); NaN if one class is empty."""
    return float(detection(scores[:, None], labels[:, None])["auroc"][0, 0])


@torch.no_grad()
def threshold_scores(scores: Tensor, labels: Tensor, threshold: float, *, strict: bool = False) -> dict[str, float]:
    """F1, precision, recall and the count of firings of `scores` [N] as a detector of `labels` [N]:
    positive when score >= threshold (> when strict). Precision is NaN when it never fires."""
    fired = scores > threshold if strict else scores >= threshold
    true_pos = float((fired & labels).sum())
    n_fired, P = float(fired.sum()), float(labels.sum())
    return {
        "f1": 2 * true_pos / (P + n_fired) if P + n_fired else math.nan,
        "precision": true_pos / n_fired if n_fired else math.nan,
        "recall": true_pos / P if P else math.nan,
        "fires": int(n_fired),
    }


@torch.no_grad()
def mean_difference(acts: Tensor, labels: Tensor) -> Tensor:
    """[U, C] float64: mean activation on a concept's positives minus on its negatives."""
    y = labels.float()
    P = y.sum(0).double()
    on = (acts.float().T @ y).double()  # float32 products, exact enough to rank units
    total = acts.double().sum(0)[:, None]
    return on / P.clamp(min=1) - (total - on) / (len(y) - P).clamp(min=1)


@torch.no_grad()
def sparse_probes(
    train: Tensor,
    train_labels: Tensor,
    test: Tensor,
    test_labels: Tensor,
    ks: tuple[int, ...],
    *,
    l2: float = 1e-4,
    steps: int = 15,
    tol: float = 1e-5,
) -> dict[int, dict[str, Tensor]]:
    """For every concept and k, a logistic probe on the k units with the largest |mean difference|
    on the training tokens, fitted by Newton's method with class-balanced weights (so 0.5 is the
    natural threshold for a rare concept) and a ridge of l2 x tokens, for `steps` steps or until no
    weight moves by `tol` (a nearly separable concept converges slowly; its predictions settle
    early); scored on the test tokens.

    train/test [N, U] activations, labels [N, C] bool. Returns per k: units [C, k] long and test
    accuracy, balanced_accuracy, f1 [C] float64."""
    ranking = mean_difference(train, train_labels).abs().argsort(dim=0, descending=True)  # [U, C]
    return {
        k: _probe(
            train, train_labels, test, test_labels, ranking[: min(k, len(ranking))].T, l2=l2, steps=steps, tol=tol
        )
        for k in ks
    }


def _probe(train: Tensor, train_labels: Tensor, test: Tensor, test_labels: Tensor, units: Tensor, *, l2, steps, tol):
    """Products over tokens in float32 (Newton's steps correct their rounding), the solve in float64."""
    C, k = units.shape
    x = train[:, units].float().permute(1, 0, 2)  # [C, N, k]
    mean, std = x.mean(dim=1, keepdim=True), x.std(dim=1, keepdim=True).clamp(min=1e-12)

    def design(values: Tensor) -> Tensor:
        z = (values - mean) / std
        return torch.cat([z, torch.ones_like(z[..., :1])], dim=-1)  # [C, N, k + 1]

    X = design(x)
    y = train_labels.float().T.unsqueeze(-1)  # [C, N, 1]
    N = y.shape[1]
    P = y.sum(1, keepdim=True)
    weight = torch.where(y > 0, N / (2 * P.clamp(min=1)), N / (2 * (N - P).clamp(min=1)))
    ridge = l2 * N * torch.diag(torch.tensor([1.0] * k + [0.0], dtype=torch.float64))
    beta = torch.zeros(C, k + 1, 1, dtype=torch.float64)
    for _ in range(steps):
        p = torch.sigmoid(X @ beta.float())  # [C, N, 1]
        grad = (X.transpose(1, 2) @ (weight * (p - y))).double() + ridge @ beta
        hessian = (X.transpose(1, 2) @ (X * (weight * p * (1 - p)))).double() + ridge + 1e-9 * torch.eye(k + 1)
        update = torch.linalg.solve(hessian, grad)
        beta = beta - update
        if float(update.abs().max()) < tol:
            break
    predicted = (design(test[:, units].float().permute(1, 0, 2)) @ beta.float()).squeeze(-1) > 0
    truth = test_labels.T
    tp = (predicted & truth).sum(1).double()
    tn = (~predicted & ~truth).sum(1).double()
    n_pos, n_neg = truth.sum(1).double(), (~truth).sum(1).double()
    return {
        "units": units,
        "accuracy": (tp + tn) / truth.shape[1],
        "balanced_accuracy": (tp / n_pos + tn / n_neg) / 2,
        "f1": 2 * tp / (n_pos + predicted.sum(1).double()),
    }


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
