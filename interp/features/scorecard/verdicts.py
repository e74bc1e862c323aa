"""The scorecard's tables: a row per concept and the summary whose verdicts the page states, every
figure with its document-bootstrap interval (`intervals`).

A concept is *token identity* when the token-id lookup alone reaches F1 >= TOKEN_SOLVED on it (its
cross-fitted F1); the others are *context* concepts, and the headline is on them: there a unit has to
read more than the current token to beat the baselines.
"""

from __future__ import annotations

import torch
from torch import Tensor

from interp.features.scorecard.crossfit import BASELINES, FAMILY_KS, PROBE_KS, SideScores
from interp.features.scorecard.intervals import Resampler, compare, interval, nanmedian_rows, skill_of

TOKEN_SOLVED = 0.9
SCORERS = ("k1", *[f"or{k}" for k in FAMILY_KS[1:]], "family", *[f"probe{k}" for k in PROBE_KS])
HEADLINE_SCORERS = ("k1", "family")
COMPARISONS = (  # (a, b): the headline's pairs of sides
    ("features", "neurons"),
    ("features", "control_features"),
    ("neurons", "control_neurons"),
)


class Scored:
    """Bootstrap F1 draws [1 + B, C] of every side's scorers and the baselines, and the concepts' kinds."""

    def __init__(
        self, sides: dict[str, SideScores], baselines: dict[str, Tensor], resampler: Resampler, scored: Tensor
    ):
        self.scored = scored
        self.f1 = {(side, s): resampler.f1(found.counts[s]) for side, found in sides.items() for s in SCORERS}
        self.baseline = {name: resampler.f1(counts) for name, counts in baselines.items()}
        self.base = torch.stack([self.baseline[name] for name in BASELINES]).nan_to_num(0.0).max(dim=0).values
        token_f1 = self.baseline["token"][0]
        self.token_identity = scored & (token_f1 >= TOKEN_SOLVED)
        self.context = scored & ~self.token_identity
        self.sides = list(sides)

    def kinds(self) -> dict[str, Tensor]:
        return {"context": self.context, "token identity": self.token_identity, "all": self.scored}


def concept_rows(concepts, scored_obj: Scored, tokens, sides: dict[str, SideScores]) -> list[dict]:
    """One row per concept: its counts, kind, baselines, and every side's scorers with intervals."""
    truth = tokens.labels & tokens.visible
    masked = tokens.labels & ~tokens.visible
    rows = []
    for c, concept in enumerate(concepts):
        row = {
            "name": concept.name,
            "source": concept.source,
            "description": concept.description,
            "positives": int(truth[:, c].sum()),
            "masked_positives": int(masked[:, c].sum()),
            "tokens": int(tokens.visible[:, c].sum()),
            "documents_with_positives": int(torch.unique(tokens.document[truth[:, c]]).numel()),
            "scored": bool(scored_obj.scored[c]),
        }
        if row["scored"]:
            row["kind"] = "token identity" if bool(scored_obj.token_identity[c]) else "context"
            row["baselines"] = {name: interval(draws[:, c]) for name, draws in scored_obj.baseline.items()}
            row["best_baseline"] = interval(scored_obj.base[:, c])
            row["sides"] = {}
            for side in scored_obj.sides:
                entry = {s: interval(scored_obj.f1[(side, s)][:, c]) for s in SCORERS}
                for s in HEADLINE_SCORERS:
                    entry[f"skill_{s}"] = interval(skill_of(scored_obj.f1[(side, s)][:, c], scored_obj.base[:, c]))
                entry["chosen"] = [fold[c] for fold in sides[side].chosen]
                row["sides"][side] = entry
        rows.append(row)
    return rows


def summary(scored_obj: Scored) -> dict:
    """Per kind of concept: every side's median F1 and skill per scorer, and the headline comparisons."""
    out: dict = {"token_solved_at": TOKEN_SOLVED, "kinds": {}}
    for kind, mask in scored_obj.kinds().items():
        entry: dict = {"concepts": int(mask.sum()), "medians": {}, "comparisons": []}
        if not bool(mask.any()):
            out["kinds"][kind] = entry
            continue
        base = scored_obj.base[:, mask]
        entry["medians"]["best baseline"] = {"f1": interval(nanmedian_rows(base))}
        for name, draws in scored_obj.baseline.items():
            entry["medians"][f"baseline {name}"] = {"f1": interval(nanmedian_rows(draws[:, mask]))}
        for side in scored_obj.sides:
            entry["medians"][side] = {
                s: {
                    "f1": interval(nanmedian_rows(scored_obj.f1[(side, s)][:, mask])),
                    "skill": interval(nanmedian_rows(skill_of(scored_obj.f1[(side, s)][:, mask], base))),
                }
                for s in SCORERS
            }
        for a, b in COMPARISONS:
            if a not in scored_obj.sides or b not in scored_obj.sides:
                continue
            for s in HEADLINE_SCORERS:
                found = compare(scored_obj.f1[(a, s)][:, mask], scored_obj.f1[(b, s)][:, mask], base, (a, b))
                entry["comparisons"].append({"scorer": s, **found})
        out["kinds"][kind] = entry
    return out
