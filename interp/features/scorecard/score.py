"""Concept rows: for one dictionary of units (SAE features or neurons), the best unit of each concept
and how well it detects the concept, with sparse probes.

To keep the comparison fair between 512 neurons and thousands of features, nothing is chosen on the
tokens it is scored on: the best unit, its threshold and the probes' units and weights are chosen
on the selection tokens (the first half of the windows) and scored on the test tokens (the second).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from interp.features.scorecard.measures import auroc_of, detection, histogram, sparse_probes, threshold_scores

PROBE_KS = (1, 2, 5)
HEADLINE = "f1"
HEADLINE_WHY = (
    "The headline is the F1 of each side's best unit at its best threshold (unit and threshold chosen on "
    "the selection tokens, F1 measured on the test tokens). AUROC is reported beside it but does not "
    "decide: a sparse feature is exactly zero, and so tied, on most tokens, which caps its AUROC near "
    "0.5 + recall/2 however precise it is, while a dense neuron ranks every token."
)


def _finite(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


def _unit_row(unit: int, values: Tensor, labels: Tensor, threshold: float) -> dict:
    at_best = threshold_scores(values, labels, threshold)
    firing = threshold_scores(values, labels, 0.0, strict=True)
    return {
        "id": unit,
        "auroc": _finite(auroc_of(values, labels)),
        "f1": _finite(at_best["f1"]),
        "threshold": _finite(threshold),
        "precision": _finite(firing["precision"]),
        "recall": _finite(firing["recall"]),
        "fires": firing["fires"],
    }


def score_dictionary(
    acts: Tensor,
    labels: Tensor,
    select: Tensor,
    test: Tensor,
    *,
    min_positives: int,
    ks: tuple[int, ...] = PROBE_KS,
) -> list[dict | None]:
    """One row per concept (None where either half has fewer than `min_positives` positives).

    acts [N, U], labels [N, C] bool, select/test [N] bool masks. A row holds the best unit by the
    headline F1 and by AUROC (each scored on the test tokens: AUROC, F1 at the selection threshold,
    and precision/recall/firings at the firing rule "activation > 0"), the probes at each k, and the
    histogram of the headline unit's test activations split by the concept."""
    sel_acts, sel_labels = acts[select], labels[select]
    test_acts, test_labels = acts[test], labels[test]
    scored = (sel_labels.sum(0) >= min_positives) & (test_labels.sum(0) >= min_positives)
    scored &= (sel_labels.sum(0) < len(sel_labels)) & (test_labels.sum(0) < len(test_labels))
    chosen = detection(sel_acts, sel_labels)
    probes = sparse_probes(sel_acts, sel_labels, test_acts, test_labels, ks)
    rows: list[dict | None] = []
    for c in range(labels.shape[1]):
        if not scored[c]:
            rows.append(None)
            continue
        y = test_labels[:, c]
        f1, auroc = chosen["f1"][:, c].nan_to_num(-1.0), chosen["auroc"][:, c].nan_to_num(-1.0)
        by_f1, by_auroc = int(f1.argmax()), int(auroc.argmax())
        rows.append(
            {
                "best": _unit_row(by_f1, test_acts[:, by_f1], y, float(chosen["threshold"][by_f1, c])),
                "best_by_auroc": _unit_row(
                    by_auroc, test_acts[:, by_auroc], y, float(chosen["threshold"][by_auroc, c])
                ),
                "selection_f1": _finite(float(chosen["f1"][by_f1, c])),
                "probe": {
                    str(k): {
                        "units": probe["units"][c].tolist(),
                        "accuracy": _finite(float(probe["accuracy"][c])),
                        "balanced_accuracy": _finite(float(probe["balanced_accuracy"][c])),
                        "f1": _finite(float(probe["f1"][c])),
                    }
                    for k, probe in probes.items()
                },
                "histogram": histogram(test_acts[:, by_f1], y),
            }
        )
    return rows


def compare(rows: dict[str, list[dict | None]]) -> dict:
    """Medians per side and, for trained features against each other side, who wins how many
    concepts by the headline F1, by AUROC and by the k=1 probe's F1."""

    def values(side: str, pick) -> list[float]:
        return [pick(r) for r in rows[side] if r is not None]

    def med(side: str, pick) -> float | None:
        found = [v for v in values(side, pick) if v is not None]
        return _finite(float(torch.tensor(found, dtype=torch.float64).median())) if found else None

    measures = {
        "f1": lambda r: r["best"]["f1"],
        "auroc": lambda r: r["best_by_auroc"]["auroc"],
        **{f"probe_f1_k{k}": (lambda r, k=k: r["probe"][str(k)]["f1"]) for k in PROBE_KS},
    }
    out = {"concepts_scored": sum(r is not None for r in rows["features"]), "median": {}, "wins": {}}
    for side in rows:
        out["median"][side] = {name: med(side, pick) for name, pick in measures.items()}
    for other in (s for s in rows if s != "features"):
        tally = {}
        for name, pick in measures.items():
            wins = [0, 0, 0]  # features, other, ties
            for a, b in zip(rows["features"], rows[other], strict=True):
                if a is None or b is None or pick(a) is None or pick(b) is None:
                    continue
                wins[0 if pick(a) > pick(b) else 1 if pick(b) > pick(a) else 2] += 1
            tally[name] = {"features": wins[0], other: wins[1], "ties": wins[2]}
        out["wins"][f"features vs {other}"] = tally
    return out
