"""The report's neuron section, for analyses of SAEs on MLP neurons (those with a `neurons/` sub-artifact):

  neurons.html      every neuron sorted by polysemanticity (effective number of driving features),
                    with its drivers and own label; the label scores of neurons against features
  neuron.html#J     one neuron: the features that drive it most, with their shares and labels,
                    its top examples grouped by the feature driving each peak, its logit effects
  data/neurons.js   monoReport.neurons (one record per neuron), monoReport.neuronScores

Neuron pages link to their drivers' feature pages (feature.html#i) and feature pages link back to
exactly the neurons that list them (interp.features.neurons.neurons_driven), by the same share. Numbers are
rounded and windows quantised as for feature pages (interp.app.report.data).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from interp.app.report.data import ACT_SCALE, label_record, sig, sig_array
from interp.app.report.html import ASSETS, script_json, write_page
from interp.features.analysis.artifact import Analysis
from interp.features.labels.files import read_labels
from interp.features.neurons import label_scores, neuron_summaries, score_comparison
from sae.files import write_text

NEURON_FILES = ("neurons.js", "neuron.js")


def neuron_report_data(analysis: Analysis) -> dict[str, Any]:
    """{"neurons": [record per neuron, by id], "scores": {"features": [...], "neurons": [...], "summary": {...}}}."""
    neurons = analysis.neurons
    t = neurons.tensors
    summaries = {s.neuron: s for s in neuron_summaries(analysis)}
    top_value = sig_array(t["top_value"])
    top_share = sig_array(t["top_seq_share"], 3)
    scale = t["max_activation"].clamp_min(1e-30)[:, None, None]
    top_acts = (t["top_acts"].clamp_min(0) / scale * ACT_SCALE).round().clamp(0, ACT_SCALE).to(torch.int32).tolist()
    top_tokens = t["top_tokens"].tolist()
    driver_ids, driver_values = t["peak_driver_ids"].tolist(), sig_array(t["peak_driver_values"], 3)
    has_logits = "logit_top_ids" in t
    neuron_labels = read_labels(neurons.path) if neurons.path else {}
    records = []
    for j in range(neurons.d_sae):
        s = summaries[j]
        valid = [k for k, seq in enumerate(t["top_seq"][j].tolist()) if seq >= 0]
        record: dict[str, Any] = {
            "id": j,
            "neff": sig(s.effective_features, 4),
            "density": sig(s.density, 4),
            "max": sig(s.max_activation, 4),
            "mean": sig(float(t["mean_activation"][j]), 4),
            "fire_count": int(t["fire_count"][j]),
            "drivers": [[d.feature, sig(d.share, 3)] for d in s.drivers],
            "label": label_record(neuron_labels.get(j)),
            "top": [
                [
                    top_value[j][k],
                    top_share[j][k],
                    [top_tokens[j][k], top_acts[j][k]],
                    [[f, v] for f, v in zip(driver_ids[j][k], driver_values[j][k]) if f >= 0],
                ]
                for k in valid
            ],
            "groups": [[g.feature, [valid.index(k) for k in g.examples]] for g in s.groups],
        }
        if has_logits:
            record["logits"] = {
                "top": [
                    [int(a), sig(float(b), 4)]
                    for a, b in zip(t["logit_top_ids"][j][:10], t["logit_top_values"][j][:10])
                ],
                "bottom": [
                    [int(a), sig(float(b), 4)]
                    for a, b in zip(t["logit_bottom_ids"][j][:10], t["logit_bottom_values"][j][:10])
                ],
            }
        records.append(record)
    feature_scores = label_scores(read_labels(analysis.path)) if analysis.path else []
    neuron_scores = label_scores(neuron_labels)
    return {
        "neurons": records,
        "scores": {
            "features": [sig(x, 4) for x in feature_scores],
            "neurons": [sig(x, 4) for x in neuron_scores],
            "summary": _rounded(score_comparison(feature_scores, neuron_scores)),
        },
    }


def _rounded(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return sig(value, 4) if isinstance(value, float) else value


def write_neuron_pages(analysis: Analysis, out: Path, title: str) -> None:
    """neurons.html, neuron.html, their scripts and data/neurons.js into the report folder `out`."""
    data = neuron_report_data(analysis)
    for name in NEURON_FILES:
        shutil.copyfile(ASSETS / name, out / name)
    write_text(
        out / "data" / "neurons.js",
        f"monoReport.neurons = {script_json(data['neurons'])};\n"
        f"monoReport.neuronScores = {script_json(data['scores'])};\n",
    )
    data_scripts = ("data/meta.js", "data/vocab.js", "data/summary.js", "data/neurons.js")
    write_page(out, "neurons", f"Neurons · {title}", scripts=data_scripts, plots=True)
    write_page(out, "neuron", f"Neuron · {title}", scripts=data_scripts)
