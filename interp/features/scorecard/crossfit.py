"""Cross-fitted concept detectors: per fold, choices made on the selection documents, predictions on
the fold's own documents, summed into counts per document (the unit the intervals resample).

Scorers of one side's units (acts [N, U], features or neurons):
- `k1`: the best single unit at its best threshold, by F1 on the concept's visible selection tokens,
  exact among CANDIDATES units per concept (half the best by F1 when firing, activation > 0, which
  finds sparse features; half the best by |standardised mean difference|, which finds dense units);
- `or2`, `or4`, `or8`: a greedy OR of up to k candidates, each at its own best threshold (add the unit
  that raises the selection F1 most, stop when none does);
- `family`: per concept, the OR prefix among FAMILY_KS with the best selection F1;
- `probe1`, `probe8`: a class-balanced logistic probe on the k units of largest |standardised mean
  difference| (a scale-free ranking), its threshold tuned for F1 on the selection tokens.

Baselines (`baseline_counts`), chosen the same way:
- `token`: a lookup of token ids: each id scores its concept precision on the selection tokens;
- `prev+token`: the same for (previous id, id) pairs, an unseen pair backing off to its id's score;
- `every`: every token marked.

Counts are [D, C, 3] int64: true positives, false positives and false negatives of each document's
visible (token, concept) pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from interp.features.scorecard.measures import best_thresholds, fit_probes, probe_scores, standardised_difference
from interp.features.scorecard.tokens import ScoredTokens

CANDIDATES = 16
FAMILY_KS = (1, 2, 4, 8)
PROBE_KS = (1, 8)
BASELINES = ("token", "prev+token", "every")


@dataclass
class SideScores:
    """One side's cross-fitted scorers: counts per scorer, the k=1 test predictions and each fold's choices."""

    counts: dict[str, Tensor]  # scorer -> [D, C, 3]
    fired: Tensor  # [N, C] bool: the k=1 unit's prediction on each token (chosen without its document)
    chosen: list[list[dict | None]]  # [fold][concept] -> the fold's k=1 unit and family


def _counts(predicted: Tensor, truth: Tensor, document: Tensor, D: int) -> Tensor:
    """[D, 3] tp, fp, fn of predictions [n] bool against truth [n] bool, by document [n]."""
    stats = torch.stack([predicted & truth, predicted & ~truth, ~predicted & truth], dim=1).long()
    return torch.zeros(D, 3, dtype=torch.long).index_add_(0, document, stats)


def _greedy_or(fires: Tensor, truth: Tensor, k_max: int) -> tuple[list[int], list[float]]:
    """Indices of up to k_max columns of fires [n, m] bool whose OR raises F1 most at each step, and the
    selection F1 after each step. Stops when no column raises F1."""
    P = float(truth.sum())
    current = torch.zeros(len(truth), dtype=torch.bool)
    chosen: list[int] = []
    f1s: list[float] = []
    best = 0.0
    hits = fires & truth[:, None]
    for _ in range(min(k_max, fires.shape[1])):
        tp = (hits | (current & truth)[:, None]).sum(0).double()
        predicted = (fires | current[:, None]).sum(0).double()
        f1 = 2 * tp / (P + predicted)
        if chosen:
            f1[chosen] = -1.0
        j = int(f1.argmax())
        if float(f1[j]) <= best:
            break
        best = float(f1[j])
        chosen.append(j)
        f1s.append(best)
        current |= fires[:, j]
    return chosen, f1s


def _candidates(acts: Tensor, truth: Tensor, visible: Tensor) -> tuple[list[list[int]], Tensor]:
    """Per concept, up to CANDIDATES unit ids (half the best by firing F1, the rest the best by |standardised
    difference| not already in), and the |standardised difference| [U, C]. acts [n, U], truth/visible [n, C]."""
    separation = standardised_difference(acts, truth, visible.float()).abs().nan_to_num(0.0)  # [U, C]
    fires = (acts > 0).float()
    P = truth.sum(0).double()
    firing_f1 = 2 * (fires.T @ truth.float()).double() / (P + fires.sum(0).double()[:, None]).clamp(min=1)
    half = min(CANDIDATES // 2, acts.shape[1])
    by_firing = firing_f1.topk(half, dim=0).indices.T  # [C, half]
    by_separation = separation.topk(min(CANDIDATES, acts.shape[1]), dim=0).indices.T
    out = []
    for c in range(truth.shape[1]):
        seen = dict.fromkeys(by_firing[c].tolist())
        for u in by_separation[c].tolist():
            if len(seen) >= CANDIDATES:
                break
            seen.setdefault(u)
        out.append(list(seen))
    return out, separation


def score_side(acts: Tensor, tokens: ScoredTokens, concepts: Tensor, *, probes: bool = True) -> SideScores:
    """Cross-fitted scorers of units acts [N, U] on the concepts marked True in concepts [C] bool (the
    probes left out, their counts zero, when `probes` is False)."""
    N, C = tokens.labels.shape
    D = tokens.documents
    names = ["k1", *[f"or{k}" for k in FAMILY_KS[1:]], "family", *[f"probe{k}" for k in PROBE_KS]]
    counts = {name: torch.zeros(D, C, 3, dtype=torch.long) for name in names}
    fired = torch.zeros(N, C, dtype=torch.bool)
    chosen_by_fold: list[list[dict | None]] = []
    which = concepts.nonzero().flatten()
    by_unit = acts.T.float().contiguous()  # [U, N]: a unit's activations are one contiguous row
    for select, test in tokens.fold_masks():
        candidates, separation = _candidates(
            acts[select], (tokens.labels & tokens.visible)[select][:, which], tokens.visible[select][:, which]
        )
        chosen: list[dict | None] = [None] * C
        for i, c in enumerate(which.tolist()):
            units = torch.tensor(candidates[i])
            sel_c, test_c = select & tokens.visible[:, c], test & tokens.visible[:, c]
            truth = tokens.labels[sel_c, c]
            rows = by_unit[units]  # [m, N]
            f1, threshold = best_thresholds(rows[:, sel_c].T, truth)
            usable = f1.isfinite() & (f1 > 0)
            units, threshold, rows = units[usable], threshold[usable], rows[usable]
            order, f1s = _greedy_or(threshold <= rows[:, sel_c].T, truth, FAMILY_KS[-1])
            family_k = 1
            if order:
                family_k = max((k for k in FAMILY_KS if k <= len(order)), key=lambda k: f1s[k - 1])
                chosen[c] = {
                    "units": units[order].tolist(),
                    "thresholds": threshold[order].tolist(),
                    "selection_f1": f1s,
                    "family_k": family_k,
                }
            y_test, docs = tokens.labels[test_c, c], tokens.document[test_c]
            fires_test = threshold[order] <= rows[order][:, test_c].T  # [n, len(order)]
            for name, k in [("k1", 1), *[(f"or{k}", k) for k in FAMILY_KS[1:]], ("family", family_k)]:
                predicted = fires_test[:, :k].any(dim=1)
                counts[name][:, c] += _counts(predicted, y_test, docs, D)
            fired[test_c, c] = fires_test[:, :1].any(dim=1)
        if probes:
            ranking = separation.argsort(dim=0, descending=True)  # [U, C'] by |standardised difference|
            _probe_counts(acts, tokens, select, test, which, ranking, counts)
        chosen_by_fold.append(chosen)
    return SideScores(counts=counts, fired=fired, chosen=chosen_by_fold)


def _probe_counts(acts, tokens: ScoredTokens, select, test, which, ranking, counts) -> None:
    """Fit each k's probes (on the k units of largest |standardised difference|) on the selection tokens,
    tune their thresholds there, count on the test tokens."""
    D = tokens.documents
    labels, visible = tokens.labels[:, which], tokens.visible[:, which]
    for k in PROBE_KS:
        units = ranking[: min(k, len(ranking))].T  # [C', k]
        x = acts[:, units]  # [N, C', k]
        fitted = fit_probes(x[select], labels[select], visible[select].float())
        scores = probe_scores(x, fitted)  # [C', N]
        for i, c in enumerate(which.tolist()):
            sel_c, test_c = select & visible[:, i], test & visible[:, i]
            _, threshold = best_thresholds(scores[i, sel_c, None], labels[sel_c, i])
            predicted = scores[i, test_c] >= threshold[0]  # never, for a NaN threshold (a constant probe)
            counts[f"probe{k}"][:, c] += _counts(predicted, labels[test_c, i], tokens.document[test_c], D)


def baseline_counts(tokens: ScoredTokens, concepts: Tensor, vocab: int) -> dict[str, Tensor]:
    """The trivial detectors' counts [D, C, 3], cross-fitted like the units."""
    N, C = tokens.labels.shape
    D = tokens.documents
    counts = {name: torch.zeros(D, C, 3, dtype=torch.long) for name in BASELINES}
    truth_all = (tokens.labels & tokens.visible).double()
    pair_keys, pair = torch.unique(tokens.prev_ids * vocab + tokens.ids, return_inverse=True)
    for select, test in tokens.fold_masks():
        seen = tokens.visible[select].double()
        token_score = _precision_table(tokens.ids[select], truth_all[select], seen, vocab)[tokens.ids]  # [N, C]
        pair_table = _precision_table(pair[select], truth_all[select], seen, len(pair_keys))
        pair_seen = torch.zeros(len(pair_keys), C, dtype=torch.float64).index_add_(0, pair[select], seen) > 0
        pair_score = torch.where(pair_seen[pair], pair_table[pair], token_score)
        for c in concepts.nonzero().flatten().tolist():
            sel_c, test_c = select & tokens.visible[:, c], test & tokens.visible[:, c]
            truth, y_test, docs = tokens.labels[sel_c, c], tokens.labels[test_c, c], tokens.document[test_c]
            for name, score in (("token", token_score), ("prev+token", pair_score)):
                _, threshold = best_thresholds(score[sel_c, c, None], truth)
                predicted = score[test_c, c] >= threshold[0]  # never, for a NaN threshold
                counts[name][:, c] += _counts(predicted, y_test, docs, D)
            counts["every"][:, c] += _counts(torch.ones_like(y_test), y_test, docs, D)
    return counts


def _precision_table(keys: Tensor, truth: Tensor, seen: Tensor, size: int) -> Tensor:
    """[size, C] float64: per key, the share of its visible tokens that are positive (0 for an unseen key).
    keys [n] long, truth/seen [n, C] float64."""
    positives = torch.zeros(size, truth.shape[1], dtype=torch.float64).index_add_(0, keys, truth)
    total = torch.zeros(size, truth.shape[1], dtype=torch.float64).index_add_(0, keys, seen)
    return positives / total.clamp(min=1)
