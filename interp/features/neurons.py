"""Polysemantic neurons: which SAE features drive each MLP neuron, how many, and how well the
neuron itself can be labelled next to its features.

For an SAE on MLP activations (`blocks.L.mlp.hook_post`, d_in = d_mlp = N), a token's neuron vector
is x ≈ Σ_i f_i W_dec[i] + b_dec, so over the analysed tokens feature i puts the activation mass

    D[j, i] = Σ_tokens f_i · W_dec[i, j] = activation_sum[i] · W_dec[i, j]

into neuron j. The features with D[j, i] > 0 drive the neuron; their shares p_ji = D[j, i] / Σ_i D⁺[j, i]
(negative mass, a feature pushing the neuron down, is left out); the neuron's polysemanticity is their
effective number exp(−Σ_i p_ji ln p_ji): 1 for a neuron one feature drives, k for k equal drivers.

The shares link the two dictionaries both ways by one measure: a neuron lists its DRIVERS_LISTED
largest drivers, and a feature lists exactly the neurons that list it (`neurons_driven`), each with
the share of that neuron's activation mass it puts in.

The analysis pass also treats the raw neurons as a second dictionary
(`interp.features.analysis.neuron_pass`), so `interp label` labels and scores neurons exactly as it does
features.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from interp.features.analysis.artifact import Analysis
from interp.features.config import DRIVERS_LISTED
from interp.features.labels.files import read_labels

# ---- drivers and polysemanticity -----------------------------------------------------------------


def driver_mass(analysis: Analysis) -> Tensor:
    """D [N, F] (float64): activation mass feature i puts into neuron j over the analysed tokens,
    activation_sum[i] · W_dec[i, j]. Needs an analysis of an SAE on MLP neurons."""
    t = analysis.tensors
    if not analysis.meta.get("neurons_written") or "decoder" not in t:
        raise ValueError(
            f"the analysis in {analysis.path or 'memory'} is of hook {analysis.meta.get('hook_name')!r}, not of "
            "MLP neurons (analysis.json field 'neurons_written' is false); neuron drivers need an SAE "
            "trained on blocks.L.mlp.hook_post."
        )
    return (t["activation_sum"].double()[:, None] * t["decoder"].double()).T


def driver_shares(analysis: Analysis) -> Tensor:
    """S [N, F] (float64): feature i's share of neuron j's positive activation mass, D⁺[j, i] / Σ_i D⁺[j, i]."""
    positive = driver_mass(analysis).clamp_min(0)
    return positive / positive.sum(1, keepdim=True).clamp_min(1e-300)


def listed_drivers(shares: Tensor, listed: int = DRIVERS_LISTED) -> tuple[Tensor, Tensor]:
    """The `listed` largest drivers of each neuron: (shares [N, m], feature ids [N, m]), largest
    first, m = min(listed, F); entries with share 0 drive nothing and are not listed."""
    top = shares.topk(min(listed, shares.shape[1]), dim=1)
    return top.values, top.indices


def neurons_driven(analysis: Analysis, listed: int = DRIVERS_LISTED) -> list[list[tuple[int, float, int]]]:
    """For each feature [F], the neurons that list it among their `listed` largest drivers, largest
    share first: (neuron, share of that neuron's activation mass, rank among its drivers, 1 = largest)."""
    values, ids = listed_drivers(driver_shares(analysis), listed)
    out: list[list[tuple[int, float, int]]] = [[] for _ in range(analysis.d_sae)]
    for j, (row_values, row_ids) in enumerate(zip(values.tolist(), ids.tolist())):
        for rank, (share, i) in enumerate(zip(row_values, row_ids), start=1):
            if share > 0:
                out[i].append((j, share, rank))
    for neurons in out:
        neurons.sort(key=lambda entry: (-entry[1], entry[0]))
    return out


def effective_number(mass: Tensor) -> Tensor:
    """exp(entropy) of each row's positive part, normalised [..., F] -> [...]; 0 for a row with no positive entry."""
    positive = mass.double().clamp_min(0)
    total = positive.sum(-1, keepdim=True)
    p = positive / total.clamp_min(1e-300)
    entropy = -(torch.where(p > 0, p * p.log(), 0.0)).sum(-1)
    return torch.where(total.squeeze(-1) > 0, entropy.exp(), 0.0)


@dataclass
class Driver:
    """A feature driving a neuron: its share of the neuron's positive drive."""

    feature: int
    share: float
    label: str | None = None
    label_score: float | None = None
    positives: int | None = None  # held-out positives behind the label score


@dataclass
class NeuronGroup:
    """Top examples of a neuron whose peak the same feature drives most (feature -1: none recorded)."""

    feature: int
    examples: list[int]  # indices into the neuron's top examples (0 = strongest)


@dataclass
class NeuronSummary:
    """One neuron: its polysemanticity, drivers, own label and top examples grouped by driver."""

    neuron: int
    effective_features: float
    drivers: list[Driver]
    density: float
    max_activation: float
    label: str | None = None
    label_score: float | None = None
    label_positives: int | None = None  # held-out positives behind the label score
    groups: list[NeuronGroup] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def labels_of(analysis: Analysis | None) -> dict[int, dict[str, Any]]:
    """The labels.json records of an analysis folder ({} for an analysis not on disk)."""
    if analysis is None or analysis.path is None:
        return {}
    return read_labels(analysis.path)


def neuron_summaries(analysis: Analysis, *, drivers: int = DRIVERS_LISTED) -> list[NeuronSummary]:
    """Every neuron's summary, most polysemantic first, with its `drivers` largest drivers. Labels come
    from the analysis folder's labels.json (features) and neurons/labels.json (neurons) when
    `interp label` has written them."""
    shares = driver_shares(analysis)  # [N, F]
    n_eff = effective_number(shares)
    top_values, top_ids = listed_drivers(shares, drivers)
    feature_labels, neurons = labels_of(analysis), analysis.neurons
    neuron_labels = labels_of(neurons)
    out = []
    for j in range(shares.shape[0]):
        listed = [
            Driver(int(i), float(s), *_label_evidence(feature_labels.get(int(i), {})))
            for i, s in zip(top_ids[j].tolist(), top_values[j].tolist())
            if s > 0
        ]
        summary = NeuronSummary(j, float(n_eff[j]), listed, 0.0, 0.0, *_label_evidence(neuron_labels.get(j, {})))
        if neurons is not None:
            t = neurons.tensors
            summary.density, summary.max_activation = float(t["density"][j]), float(t["max_activation"][j])
            summary.groups = _group_examples(t["top_seq"][j], t["peak_driver_ids"][j])
        out.append(summary)
    out.sort(key=lambda s: (-s.effective_features, s.neuron))
    return out


def _label_evidence(record: dict[str, Any]) -> tuple[str | None, float | None, int | None]:
    """(label, score, held-out positives) of a labels.json entry."""
    return record.get("label"), record.get("score"), record.get("held_out", {}).get("positives")


def _group_examples(top_seq: Tensor, peak_ids: Tensor) -> list[NeuronGroup]:
    """Top examples grouped by the feature contributing most at the peak, groups in order of their best example."""
    groups: dict[int, list[int]] = {}
    for k, seq in enumerate(top_seq.tolist()):
        if seq >= 0:
            groups.setdefault(int(peak_ids[k, 0]), []).append(k)
    return [NeuronGroup(feature, examples) for feature, examples in groups.items()]


# ---- neurons against features ----------------------------------------------------------------------


def score_comparison(feature_scores: list[float], neuron_scores: list[float]) -> dict[str, Any]:
    """Summary of two label-score distributions (held-out detection AUROC): count, mean, median,
    quartiles and the share at or above 0.9 / 0.75, for features and for neurons."""

    def describe(scores: list[float]) -> dict[str, float | int | None]:
        if not scores:
            return {
                "count": 0,
                "mean": None,
                "median": None,
                "q25": None,
                "q75": None,
                "share_ge_0.9": None,
                "share_ge_0.75": None,
            }
        x = torch.tensor(scores, dtype=torch.float64)
        q = torch.quantile(x, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)).tolist()
        return {
            "count": len(scores),
            "mean": float(x.mean()),
            "median": q[1],
            "q25": q[0],
            "q75": q[2],
            "share_ge_0.9": float((x >= 0.9).double().mean()),
            "share_ge_0.75": float((x >= 0.75).double().mean()),
        }

    return {"features": describe(feature_scores), "neurons": describe(neuron_scores)}


def label_scores(labels: dict[int, dict[str, Any]], *, key: str = "score", min_positives: int = 0) -> list[float]:
    """The finite values of `key` ("score": held-out AUROC, or "correlation") of a labels.json's entries
    scored on at least `min_positives` held-out positives."""
    return [
        float(v[key])
        for v in labels.values()
        if isinstance(v.get(key), (int, float))
        and math.isfinite(v[key])
        and v.get("held_out", {}).get("positives", 0) >= min_positives
    ]


# ---- command line ----------------------------------------------------------------------------------
