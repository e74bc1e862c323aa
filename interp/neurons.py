"""Polysemantic neurons: which SAE features drive each MLP neuron, how many, and how well the
neuron itself can be labelled next to its features.

For an SAE on MLP activations (`blocks.L.mlp.hook_post`, d_in = d_mlp = N), a token's neuron vector
is x ≈ Σ_i f_i W_dec[i] + b_dec, so over the analysed tokens feature i puts the activation mass

    D[j, i] = Σ_tokens f_i · W_dec[i, j] = activation_sum[i] · W_dec[i, j]

into neuron j. The features with D[j, i] > 0 drive the neuron; their shares p_ji = D[j, i] / Σ_i D⁺[j, i]
(negative mass, a feature pushing the neuron down, is left out); the neuron's polysemanticity is their
effective number exp(−Σ_i p_ji ln p_ji): 1 for a neuron one feature drives, k for k equal drivers.

The analysis pass also treats the raw neurons as a second dictionary (`NeuronPass`, called by
`interp.analysis.analyze`): the same statistics as for features, saved as the analysis's `neurons/`
sub-artifact, so `interp label` labels and scores neurons exactly as it does features. For each
neuron's top examples the pass also records the features contributing most (f_i · W_dec[i, j]) at the
peak token — tensors `peak_driver_ids` / `peak_driver_values` [N, top_k, PEAK_DRIVERS] — which groups
the examples by the responsible feature.

`interp neurons --analysis DIR` prints the most polysemantic neurons with the features they split
into, and the label scores of neurons against features.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from interp.analysis import Analysis, AnalysisConfig, FeatureStatistics, LogitMap, decoder_statistics

PEAK_DRIVERS = 4  # features recorded per top example of a neuron


class NeuronPass:
    """The neurons' side of the analysis pass.

    W_dec [F, N]: the SAE's decoder (N = d_mlp); the other arguments as for `FeatureStatistics`.
    `update(x [B, T, N], f [B, T, F], tokens [B, T])` once per batch."""

    def __init__(
        self,
        W_dec: Tensor,
        vocab_size: int,
        context_length: int,
        cfg: AnalysisConfig,
        *,
        ignored_ids: Iterable[int] = (),
        expected_sequences: int = 1,
    ):
        self.W_dec = W_dec.detach()
        F, N = self.W_dec.shape
        self.cfg = dataclasses.replace(
            cfg, cofire_max_active=0
        )  # neurons are dense: no co-firing counts (the costliest part)
        self.stats = FeatureStatistics(
            N, vocab_size, context_length, self.cfg, ignored_ids=ignored_ids, expected_sequences=expected_sequences
        )
        m = min(PEAK_DRIVERS, F)
        self.driver_ids = torch.full((N, self.cfg.top_k, m), -1, dtype=torch.int32)
        self.driver_values = torch.zeros((N, self.cfg.top_k, m), dtype=torch.float32)

    @torch.no_grad()
    def update(self, x: Tensor, f: Tensor, tokens: Tensor, chunk: int = 512) -> None:
        first = self.stats.sequences_seen
        top = self.stats.top.fields
        old_seq = top["seq"].clone()
        self.stats.update(x, tokens)
        seq, pos = top["seq"], top["pos"]  # [N, K]: kept examples re-ordered, some replaced
        # examples kept from earlier batches carry their drivers to their new slot (one example per sequence)
        same = (seq[:, :, None] == old_seq[:, None, :]) & (seq[:, :, None] >= 0)
        carried, source = same.any(2), same.int().argmax(2)
        m = self.driver_ids.shape[2]
        ids = self.driver_ids.gather(1, source[..., None].expand(-1, -1, m))
        values = self.driver_values.gather(1, source[..., None].expand(-1, -1, m))
        ids[~carried], values[~carried] = -1, 0.0
        # examples from this batch: the features contributing most to the neuron at the peak
        neuron, slot = torch.nonzero(seq >= first, as_tuple=True)
        for start in range(0, len(neuron), chunk):
            j, k = neuron[start : start + chunk], slot[start : start + chunk]
            b, p = (seq[j, k] - first).to(f.device), pos[j, k].to(f.device)
            contribution = f[b, p].float().clamp_min(0) * self.W_dec[:, j.to(f.device)].T.float()  # [c, F]
            best = contribution.topk(m, dim=1)
            positive = best.values > 0
            ids[j, k] = torch.where(positive, best.indices, -1).to(torch.int32).cpu()
            values[j, k] = torch.where(positive, best.values, 0.0).cpu()
        self.driver_ids, self.driver_values = ids, values

    def analysis(self, feature_meta: dict[str, Any], token_strings: list[str], logits: LogitMap | None) -> Analysis:
        """The neurons as an analysis artifact of their own (`d_sae` = N); `feature_meta` is the SAE's analysis.json."""
        N = self.W_dec.shape[1]
        tensors = self.stats.result()
        effects = decoder_statistics(
            torch.eye(N), logits, self.cfg, neurons=False
        )  # a neuron's direction is its unit vector
        tensors.update({k: v for k, v in effects.items() if k.startswith("logit_")})
        tensors["peak_driver_ids"], tensors["peak_driver_values"] = self.driver_ids, self.driver_values
        meta = copy.deepcopy(feature_meta)
        meta.update(
            {
                "dictionary": "neurons",
                "features_sae": feature_meta.get("sae"),
                "sae": {"d_in": N, "d_sae": N, "architecture": "neurons", "config": None},
                "config": dataclasses.asdict(self.cfg),
                "neurons_written": False,
                **self.stats.flags(),
            }
        )
        return Analysis(meta=meta, tensors=tensors, token_strings=token_strings)


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
    groups: list[NeuronGroup] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def sentence(self) -> str:
        """'neuron 137 fires for A, B and C — features 812, 40, 2291' (the three strongest drivers)."""
        shown = self.drivers[:3]
        if not shown:
            return f"neuron {self.neuron}: no feature drives it"
        names = [d.label or f"feature {d.feature}" for d in shown]
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        return f"neuron {self.neuron} fires for {listed} — feature{'s' if len(shown) > 1 else ''} " + ", ".join(
            str(d.feature) for d in shown
        )


def _labels_of(analysis: Analysis | None) -> dict[int, dict[str, Any]]:
    from interp.labels import read_labels

    if analysis is None or analysis.path is None:
        return {}
    return read_labels(analysis.path)


def neuron_summaries(analysis: Analysis, *, drivers: int = 8) -> list[NeuronSummary]:
    """Every neuron's summary, most polysemantic first. Labels come from the analysis folder's
    labels.json (features) and neurons/labels.json (neurons) when `interp label` has written them."""
    D = driver_mass(analysis)  # [N, F]
    n_eff = effective_number(D)
    positive = D.clamp_min(0)
    shares = positive / positive.sum(1, keepdim=True).clamp_min(1e-300)
    top = shares.topk(min(drivers, shares.shape[1]), dim=1)
    feature_labels, neurons = _labels_of(analysis), analysis.neurons
    neuron_labels = _labels_of(neurons)
    out = []
    for j in range(D.shape[0]):
        listed = [
            Driver(
                int(i),
                float(s),
                feature_labels.get(int(i), {}).get("label"),
                feature_labels.get(int(i), {}).get("score"),
            )
            for i, s in zip(top.indices[j].tolist(), top.values[j].tolist())
            if s > 0
        ]
        own = neuron_labels.get(j, {})
        summary = NeuronSummary(j, float(n_eff[j]), listed, 0.0, 0.0, own.get("label"), own.get("score"))
        if neurons is not None:
            t = neurons.tensors
            summary.density, summary.max_activation = float(t["density"][j]), float(t["max_activation"][j])
            summary.groups = _group_examples(t["top_seq"][j], t["peak_driver_ids"][j])
        out.append(summary)
    out.sort(key=lambda s: (-s.effective_features, s.neuron))
    return out


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


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "neurons",
        help="the most polysemantic MLP neurons and the features they split into",
        description="Reads an analysis of an SAE on MLP neurons (and its labels, when "
        "`interp label` has run): neurons ranked by the effective number of "
        "features driving them, and label scores of neurons against features.",
    )
    parser.add_argument("--analysis", required=True, help="analysis folder written by `interp analyze`")
    parser.add_argument("--top", type=int, default=10, help="neurons to list (default 10)")
    parser.add_argument("--drivers", type=int, default=5, help="driving features listed per neuron (default 5)")
    parser.add_argument(
        "--min-positives",
        type=int,
        default=20,
        help="also compare only labels scored on at least this many held-out positives (default 20)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(run=_run_cli)


def _run_cli(args: argparse.Namespace) -> int:
    analysis = Analysis.load(args.analysis)
    summaries = neuron_summaries(analysis, drivers=args.drivers)[: args.top]
    feature_labels, neuron_labels = _labels_of(analysis), _labels_of(analysis.neurons)
    comparisons = {
        "all labels, held-out AUROC": score_comparison(label_scores(feature_labels), label_scores(neuron_labels)),
        f"labels with >= {args.min_positives} held-out positives, AUROC": score_comparison(
            label_scores(feature_labels, min_positives=args.min_positives),
            label_scores(neuron_labels, min_positives=args.min_positives),
        ),
        "all labels, held-out correlation": score_comparison(
            label_scores(feature_labels, key="correlation"), label_scores(neuron_labels, key="correlation")
        ),
    }
    comparison = comparisons["all labels, held-out AUROC"]
    if args.json:
        print(
            json.dumps(
                {"neurons": [s.to_dict() for s in summaries], "label_scores": comparison, "comparisons": comparisons},
                indent=2,
            )
        )
        return 0
    for s in summaries:
        own = f"  own label: {s.label} (score {_fmt(s.label_score)})" if s.label else ""
        print(f"neuron {s.neuron}: {s.effective_features:.1f} effective features{own}")
        for d in s.drivers:
            print(
                f"    feature {d.feature:>6}  {d.share:6.1%} of drive  {d.label or '(unlabelled)'}"
                + (f"  (score {_fmt(d.label_score)})" if d.label else "")
            )
    for title, comparison in comparisons.items():
        print(f"{title}:")
        for who, stats in comparison.items():
            if stats["count"]:
                print(
                    f"    {who:<8} n={stats['count']:<5} mean {stats['mean']:.3f}  median {stats['median']:.3f}  "
                    f"IQR {stats['q25']:.3f}-{stats['q75']:.3f}  >=0.9: {stats['share_ge_0.9']:.1%}  >=0.75: {stats['share_ge_0.75']:.1%}"
                )
            else:
                print(f"    {who:<8} none (run `interp label --analysis {args.analysis}`)")
    return 0


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"
