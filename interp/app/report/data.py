"""What the report's pages show, as JSON-ready values built from an analysis artifact.

Shapes kept small for 16k-feature reports: token windows are token ids (the page looks them up in
the vocabulary; -1 is padding past a sequence's edge) with activations as integers in 0..1000,
thousandths of the feature's max; other numbers are rounded to 3-4 significant digits.

Labels, when present, come from `labels.json` in the analysis folder (interp.features.labels.files).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from interp.features.analysis.artifact import Analysis
from interp.model.record import TrainingRecord

SHOWN_TOKENS = 3  # top tokens / promoted tokens per row of the index
ACT_SCALE = 1000  # window activations as integer thousandths of the feature's max


def sig(x: float, digits: int = 4) -> float | None:
    """`x` rounded to `digits` significant digits (short in JSON); None for NaN/inf."""
    if not math.isfinite(x):
        return None
    return float(f"{x:.{digits}g}")


def sig_list(values: list[float], digits: int = 4) -> list[float | None]:
    return [sig(v, digits) for v in values]


def sig_array(t: Tensor, digits: int = 4) -> list:
    """Every value of `t` rounded to `digits` significant digits (non-finite values become 0), as
    nested lists. Vectorised: an integer divided by an exact power of ten gives the double nearest
    the decimal, so JSON writes it short (0.1235, not 0.12349999)."""
    x = t.detach().double().cpu().numpy()
    x = np.where(np.isfinite(x), x, 0.0)
    nonzero = x != 0
    exp = np.zeros_like(x)
    exp[nonzero] = np.floor(np.log10(np.abs(x[nonzero])))
    decimals = np.clip(digits - 1 - exp, -300, 300)
    up = decimals >= 0
    out = np.empty_like(x)
    out[up] = np.round(x[up] * 10.0 ** decimals[up]) / 10.0 ** decimals[up]
    out[~up] = np.round(x[~up] / 10.0 ** -decimals[~up]) * 10.0 ** -decimals[~up]
    return out.tolist()


class ReportData:
    """The analysis tensors converted to rounded Python lists once (vectorised), sliced per feature.

    Windows keep their padding (token id -1, which the page skips) so the example's own token is
    always at index `window_left`."""

    FLOATS = {
        "density": 4,
        "mean_activation": 4,
        "max_activation": 4,
        "activation_sum": 4,
        "top_value": 4,
        "top_seq_share": 3,
        "interval_value": 4,
        "token_mass": 4,
        "cofire_jaccard": 3,
        "nearest_cosine": 3,
        "logit_top_values": 4,
        "logit_bottom_values": 4,
        "logit_range": 4,
        "ablation_change": 3,
        "ablation_mean": 3,
        "ablation_drop_values": 3,
    }
    INTS = (
        "fire_count",
        "sequences_fired",
        "histogram",
        "top_seq",
        "top_tokens",
        "interval_octave",
        "interval_count",
        "interval_seq",
        "interval_tokens",
        "token_mass_ids",
        "token_mass_count",
        "cofire_ids",
        "cofire_count",
        "nearest_ids",
        "logit_top_ids",
        "logit_bottom_ids",
        "logit_histogram",
        "ablation_drop_ids",
    )

    def __init__(
        self,
        analysis: Analysis,
        labels: dict[int, dict[str, Any]],
        driven: list[list[tuple[int, float, int]]] | None = None,
    ):
        """`driven`: for SAEs on MLP neurons, each feature's neurons as `interp.features.neurons.neurons_driven`
        gives them."""
        self.analysis, self.labels, self.driven = analysis, labels, driven
        t = analysis.tensors
        self.F = analysis.d_sae
        self.vocab = analysis.token_strings
        self.token_counts = t["token_counts"].tolist()
        self.has_logits = "logit_top_ids" in t
        self.has_nearest = "nearest_ids" in t
        self.has_ablation = "ablation_mean" in t
        self.ablation_run = t["ablation_change"].isfinite().tolist() if self.has_ablation else None
        L = {name: sig_array(t[name], digits) for name, digits in self.FLOATS.items() if name in t}
        L.update({name: t[name].tolist() for name in self.INTS if name in t})
        scale = t["max_activation"].clamp_min(1e-30)
        L["top_acts"] = _quantised(t["top_acts"], scale[:, None, None]).tolist()
        L["interval_acts"] = _quantised(t["interval_acts"], scale[:, None, None, None]).tolist()
        self.lists = L

    # ---- the index -------------------------------------------------------------------------
    def summary_rows(self) -> list[list[Any]]:
        """One row per feature: [id, density, max, mean, fire count, top token ids, promoted token ids,
        label, label score, held-out positives behind the score, the score's 95% lower bound]."""
        L = self.lists
        rows = []
        for i in range(self.F):
            tokens = [t for t in L["token_mass_ids"][i][:SHOWN_TOKENS] if t >= 0]
            promoted = L["logit_top_ids"][i][:SHOWN_TOKENS] if self.has_logits else []
            label = self.labels.get(i, {})
            score = label.get("score")
            rows.append(
                [
                    i,
                    L["density"][i],
                    L["max_activation"][i],
                    L["mean_activation"][i],
                    L["fire_count"][i],
                    tokens,
                    promoted,
                    label.get("label", ""),
                    sig(score) if isinstance(score, (int, float)) else None,
                    *_evidence(label),
                ]
            )
        return rows

    # ---- one feature -----------------------------------------------------------------------
    def feature(self, i: int) -> dict[str, Any]:
        L = self.lists
        fired = max(L["fire_count"][i], 1)
        hist = L["histogram"][i]
        nonzero = [b for b, c in enumerate(hist) if c]
        first, last = (nonzero[0], nonzero[-1]) if nonzero else (0, -1)
        top_seq, top_value, top_share = L["top_seq"][i], L["top_value"][i], L["top_seq_share"][i]
        top_tokens, top_acts = L["top_tokens"][i], L["top_acts"][i]
        record: dict[str, Any] = {
            "id": i,
            "fire_count": L["fire_count"][i],
            "density": L["density"][i],
            "max": L["max_activation"][i],
            "mean": L["mean_activation"][i],
            "sequences": L["sequences_fired"][i],
            "hist": {"first": first, "counts": hist[first : last + 1]},
            "top": [],
            "intervals": [],
            "mass": [
                [t, m, c]
                for t, m, c in zip(L["token_mass_ids"][i], L["token_mass"][i], L["token_mass_count"][i])
                if t >= 0
            ],
            "mass_total": L["activation_sum"][i],
            "cofire": [
                [j, v, c] for j, v, c in zip(L["cofire_ids"][i], L["cofire_jaccard"][i], L["cofire_count"][i]) if j >= 0
            ],
        }
        # examples whose windows show the same text are shown once, the strongest, with their count
        kept = [k for k in range(len(top_seq)) if top_seq[k] >= 0]
        shown: dict[tuple[int, ...], list] = {}
        first_of: list[int] = []  # the top slot each shown example comes from
        for k in kept:
            text = tuple(top_tokens[k])
            if text in shown:
                shown[text][3] += 1
                continue
            shown[text] = [top_value[k], top_share[k], [top_tokens[k], top_acts[k]], 1]
            first_of.append(k)
        record["top"] = list(shown.values())
        for k, octave in enumerate(L["interval_octave"][i]):
            count = L["interval_count"][i][k]
            if count == 0:
                continue
            seqs, values = L["interval_seq"][i][k], L["interval_value"][i][k]
            tokens, acts = L["interval_tokens"][i][k], L["interval_acts"][i][k]
            examples, seen, repeats = [], set(shown), 0  # none repeats a top example or another sample
            for s in range(len(seqs)):
                if seqs[s] < 0:
                    continue
                if tuple(tokens[s]) in seen:
                    repeats += 1
                    continue
                seen.add(tuple(tokens[s]))
                examples.append([values[s], [tokens[s], acts[s]]])
            share = sig(count / fired, 3)
            record["intervals"].append([2.0**octave, 2.0 ** (octave + 1), count, share, examples, repeats])
        if self.has_nearest:
            record["nearest"] = [list(pair) for pair in zip(L["nearest_ids"][i], L["nearest_cosine"][i])]
        if self.has_logits:
            record["logits"] = {
                "top": [list(pair) for pair in zip(L["logit_top_ids"][i], L["logit_top_values"][i])],
                "bottom": [list(pair) for pair in zip(L["logit_bottom_ids"][i], L["logit_bottom_values"][i])],
                "hist": L["logit_histogram"][i],
                "range": L["logit_range"][i],
            }
        if self.driven is not None:  # [neuron, share of its activation mass, rank among its drivers]
            record["drives"] = [[j, sig(share, 3), rank] for j, share, rank in self.driven[i]]
        if self.has_ablation and any(self.ablation_run[i]):
            run = self.ablation_run[i]
            record["ablation"] = {
                "mean": L["ablation_mean"][i],
                "runs": sum(run),
                "examples": [L["ablation_change"][i][k] if run[k] else None for k in first_of],
                "drops": [
                    list(pair) for pair in zip(L["ablation_drop_ids"][i], L["ablation_drop_values"][i]) if pair[0] >= 0
                ],
            }
        label = label_record(self.labels.get(i))
        if label:
            record["label"] = label
        return record


def _quantised(acts: Tensor, scale: Tensor) -> Tensor:
    return (acts / scale * ACT_SCALE).round().clamp(0, ACT_SCALE).to(torch.int32)


def report_meta(analysis: Analysis) -> dict[str, Any]:
    """Header facts shown on every page."""
    m, t = analysis.meta, analysis.tensors
    fire = t["fire_count"]
    tokens = max(int(m.get("tokens_analysed", 0)), 1)
    cfg = m.get("config", {})
    return {
        "model": m.get("model", {}).get("name") or m.get("model", {}).get("spec"),
        "hook": m.get("hook_name"),
        "architecture": m.get("sae", {}).get("architecture"),
        "d_in": m.get("sae", {}).get("d_in"),
        "d_sae": analysis.d_sae,
        "sae_path": m.get("sae", {}).get("path"),
        "sae_weights": m.get("sae", {}).get("weights"),
        "corpus": m.get("corpus", {}).get("spec"),
        "split": m.get("corpus", {}).get("split"),
        "tokens": int(m.get("tokens_analysed", 0)),
        "dead": int((fire == 0).sum()),
        "l0": sig(float(fire.sum()) / tokens),
        "logit_basis": m.get("logit_effects"),
        "logit_missing": m.get("logit_effects_missing"),
        "hist": {
            "low": cfg.get("histogram_low_exp"),
            "high": cfg.get("histogram_high_exp"),
            "bpo": cfg.get("bins_per_octave"),
        },
        "window_left": cfg.get("window_left"),
        "act_scale": ACT_SCALE,
        "special_ids": m.get("ignored_token_ids", []),
        "fragment_ids": m.get("fragment_token_ids", []),
        "token_mass_exact": m.get("token_mass_exact", True),
        "cofire_exact": m.get("cofire_exact", True),
        "created": m.get("created"),
        "ablation": m.get("ablation"),
        "model_spec": m.get("model", {}).get("spec"),
    }


def training_data(folder: Path) -> dict[str, Any] | None:
    """The model's training record copied beside the analysis, for the model page; None without one."""
    try:
        record = TrainingRecord.load(folder)
    except FileNotFoundError:
        return None
    tensors = record.tensors
    out: dict[str, Any] = {
        "prompt": record.prompt,
        "prompt_tokens": record.prompt_token_strings,
        "train": {k: sig_list(v) if k in ("loss", "lr") else v for k, v in record.train_curve.items()},
        "heldout": {k: sig_list(v) if k == "loss" else v for k, v in record.heldout_curve.items()},
        "samples": [
            {
                "step": s.step,
                "tokens": s.tokens,
                "progress": sig(s.progress, 3),
                "greedy": s.greedy,
                "sampled": s.sampled,
            }
            for s in record.samples
        ],
        "temperature": record.sample_temperature,
        "summary": record.summary,
        "config": record.config,
    }
    summary = record.summary
    if summary.get("heldout_bytes"):
        per_nat = summary["heldout_predictions"] / math.log(2) / summary["heldout_bytes"]
        out["heldout"]["bits_per_byte"] = sig_list([loss * per_nat for loss in record.heldout_curve["loss"]])
    if "mlp_post.init" in tensors and "mlp_post.final" in tensors:
        init, final = tensors["mlp_post.init"].float(), tensors["mlp_post.final"].float()  # [n_layers, pos, d_mlp]
        both = torch.cat([init, final], dim=1)  # [n_layers, 2 pos, d_mlp]
        out["heatmap"] = {
            "init": [[sig_list(row, 3) for row in layer] for layer in init.tolist()],
            "final": [[sig_list(row, 3) for row in layer] for layer in final.tolist()],
            "order": [heatmap_order(layer).tolist() for layer in final],
            "zmin": [sig(min(0.0, float(layer.min())), 3) for layer in both],
            "zmax": [sig(max(float(layer.abs().flatten().quantile(0.99)), 1e-6), 3) for layer in both],
        }
    return out


def heatmap_order(acts: Tensor) -> Tensor:
    """Neuron order [d_mlp] for a heatmap of acts [pos, d_mlp]: by the position at which each neuron
    peaks, then by its peak, highest first, so neurons that answer the same token sit together."""
    peak, position = acts.max(dim=0)
    return torch.from_numpy(np.lexsort((-peak.numpy(), position.numpy())))


def auroc_lower_bound(auroc: float, positives: int, negatives: int, z: float = 1.96) -> float:
    """What a score from few positives is worth: the AUROC, first shrunk by one pseudo-positive at
    chance ((A P + 0.5) / (P + 1), so that a perfect score from 3 firings is not certain), less z
    Hanley-McNeil (1982) standard errors."""
    a = (auroc * positives + 0.5) / (positives + 1)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    variance = (a * (1 - a) + (positives - 1) * (q1 - a * a) + (negatives - 1) * (q2 - a * a)) / (positives * negatives)
    return a - z * math.sqrt(max(variance, 0.0))


def _evidence(label: dict) -> list[Any]:
    """[held-out positives, the score's lower bound] of a label (None where it has no score)."""
    score, held_out = label.get("score"), label.get("held_out") or {}
    positives, negatives = held_out.get("positives"), held_out.get("negatives")
    if not isinstance(score, (int, float)) or not positives or not negatives:
        return [positives, None]
    return [positives, sig(auroc_lower_bound(score, positives, negatives))]


def label_record(label: dict | None) -> dict[str, Any] | None:
    """A labels.json entry as the pages show it: {text, score, positives, lower} (None without a label)."""
    if not label or not label.get("label"):
        return None
    score = label.get("score")
    positives, lower = _evidence(label)
    return {
        "text": label["label"],
        "score": sig(score) if isinstance(score, (int, float)) else None,
        "positives": positives,
        "lower": lower,
    }
