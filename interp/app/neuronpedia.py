"""Export an analysis (and its labels) in Neuronpedia's data-export layout, so the features can be
loaded into a Neuronpedia instance (its admin import reads exactly this layout).

    interp export-neuronpedia --analysis DIR --out DIR [--model-id ID] [--source-set NAME] [--creator-id ID]

Layout, one folder per model and source, as Neuronpedia's exports bucket holds them:

    OUT/<model_id>/<source_id>/
        model.jsonl, sourceset.jsonl, source.jsonl   one record each (Model, SourceSet, Source)
        features/batch-N.jsonl.gz      one Neuron record per feature
        activations/batch-N.jsonl.gz   one Activation record per example (top, then interval samples)
        explanations/batch-N.jsonl.gz  one Explanation record per labelled feature (labels.json present)

Every record is a JSON object whose keys are column names of Neuronpedia's database tables
(Model, SourceSet, Source, Neuron, Activation, Explanation). The source id is
`<layer>-<source set>` (layer: the block index of the hook, 0 for hooks before the first block),
and a feature's `layer` field is that source id, its `index` the feature number as a string.

What each field holds, from the analysis (interp.features.analysis) and labels (interp.features.labels):
- Neuron: maxActApprox = max activation; frac_nonzero = density (firings / analysed tokens);
  pos_str/pos_values and neg_str/neg_values = the most promoted / suppressed tokens of the logit
  effects (strongest first); freq_hist_data_bar_heights/values = counts of the log-spaced activation
  histogram and each bin's geometric centre (the underflow bin at half its upper edge, the overflow
  bin at its lower edge); logits_hist_data_bar_heights/values = the logit-effect histogram and bin
  centres; topkCosSimIndices/Values = nearest features by decoder cosine; neuron_alignment_indices /
  values = the MLP neurons with the largest decoder weights and those weights (SAEs on MLP neurons).
- Activation: tokens (token text) and values (the feature's activation on each) of an example
  window, trimmed to the sequence; maxValue, maxValueTokenIndex, minValue; dataIndex = the sequence
  index; interval samples carry binMin/binMax (the octave) and binContains (its share of firings).
- Explanation: description = the label; notes = its held-out detection AUROC and correlation.
`creatorId` (authorId for explanations) must name an existing user of the Neuronpedia instance.
"""

from __future__ import annotations

import gzip
import json
import math
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from interp.activations.hooks import hook_layer
from interp.app.config import ExportConfig
from interp.features.analysis.artifact import Analysis
from interp.features.analysis.config import AnalysisConfig
from interp.features.analysis.statistics import histogram_edges
from interp.features.labels.files import read_labels
from sae.files import atomic_write, write_json

_ID_CHARS = re.compile(r"[^a-z0-9_-]+")


def neuronpedia_id(text: str) -> str:
    """Lower-case letters, digits, '-' and '_' only (Neuronpedia's rule for model ids)."""
    cleaned = _ID_CHARS.sub("-", text.lower()).strip("-")
    if not cleaned:
        raise ValueError(f"cannot make a Neuronpedia id from {text!r}; pass --model-id with letters or digits.")
    return cleaned


def histogram_centres(cfg: AnalysisConfig) -> list[float]:
    """x position of each activation-histogram bin: underflow, log-spaced bins, overflow."""
    edges = histogram_edges(cfg)
    inner = (edges[:-1] * edges[1:]).sqrt().tolist()
    return [float(edges[0]) / 2, *inner, float(edges[-1])]


def _finite(x: float) -> float:
    if not math.isfinite(x):
        raise ValueError(f"non-finite value {x} in the analysis; re-run `interp analyze`.")
    return float(x)


def _example(tokens: list[int], acts: list[float], vocab: list[str]) -> dict[str, Any] | None:
    """tokens/values of a window with the positions outside the sequence (-1) dropped."""
    kept = [(vocab[t], _finite(a)) for t, a in zip(tokens, acts) if t >= 0]
    if not kept:
        return None
    values = [a for _, a in kept]
    peak = max(range(len(values)), key=values.__getitem__)
    return {
        "tokens": [t for t, _ in kept],
        "values": values,
        "maxValue": values[peak],
        "maxValueTokenIndex": peak,
        "minValue": min(values),
    }


def feature_record(analysis: Analysis, i: int, ids: dict[str, str], cfg: AnalysisConfig) -> dict[str, Any]:
    """The Neuron record of feature i."""
    f = analysis.feature(i)
    vocab = analysis.token_strings
    record: dict[str, Any] = {
        "modelId": ids["model"],
        "layer": ids["source"],
        "index": str(i),
        "sourceSetName": ids["set"],
        "creatorId": ids["creator"],
        "hookName": analysis.meta["hook_name"],
        "maxActApprox": _finite(f["max_activation"]),
        "frac_nonzero": _finite(f["density"]),
        "freq_hist_data_bar_heights": [float(c) for c in f["histogram"]],
        "freq_hist_data_bar_values": histogram_centres(cfg),
    }
    if "logit_top" in f:
        record["pos_str"] = [vocab[p["id"]] for p in f["logit_top"]]
        record["pos_values"] = [_finite(p["value"]) for p in f["logit_top"]]
        record["neg_str"] = [vocab[p["id"]] for p in f["logit_bottom"]]
        record["neg_values"] = [_finite(p["value"]) for p in f["logit_bottom"]]
        lo, hi = f["logit_range"]
        width = (hi - lo) / len(f["logit_histogram"])
        record["logits_hist_data_bar_heights"] = [float(c) for c in f["logit_histogram"]]
        record["logits_hist_data_bar_values"] = [lo + (b + 0.5) * width for b in range(len(f["logit_histogram"]))]
    if "nearest" in f:
        record["topkCosSimIndices"] = [p["id"] for p in f["nearest"]]
        record["topkCosSimValues"] = [_finite(p["value"]) for p in f["nearest"]]
    if "neurons" in f:
        record["neuron_alignment_indices"] = [p["id"] for p in f["neurons"]]
        record["neuron_alignment_values"] = [_finite(p["value"]) for p in f["neurons"]]
    return record


def activation_records(analysis: Analysis, i: int, ids: dict[str, str]) -> Iterator[dict[str, Any]]:
    """Activation records of feature i: its top examples, then its interval samples."""
    f = analysis.feature(i)
    base = {"modelId": ids["model"], "layer": ids["source"], "index": str(i), "creatorId": ids["creator"]}
    prefix = f"{ids['model']}@{ids['source']}:{i}"
    for k, ex in enumerate(f["top_examples"]):
        body = _example(ex["tokens"], ex["acts"], analysis.token_strings)
        if body is not None:
            yield {"id": f"{prefix}:top{k}", **base, **body, "dataIndex": str(ex["sequence"])}
    for b, interval in enumerate(f["intervals"]):
        for s, ex in enumerate(interval["examples"]):
            body = _example(ex["tokens"], ex["acts"], analysis.token_strings)
            if body is not None:
                yield {
                    "id": f"{prefix}:bin{b}:{s}",
                    **base,
                    **body,
                    "dataIndex": str(ex["sequence"]),
                    "binMin": interval["low"],
                    "binMax": interval["high"],
                    "binContains": interval["share"],
                }


def explanation_record(label: dict[str, Any], i: int, ids: dict[str, str]) -> dict[str, Any]:
    """The Explanation record of feature i's label (a labels.json entry)."""
    score, corr = label.get("score"), label.get("correlation")
    notes = (
        "monosemantic label; held-out detection AUROC "
        + ("n/a" if score is None else f"{score:.3f}")
        + ", correlation "
        + ("n/a" if corr is None else f"{corr:.3f}")
    )
    return {
        "id": f"{ids['model']}@{ids['source']}:{i}:label",
        "modelId": ids["model"],
        "layer": ids["source"],
        "index": str(i),
        "description": label["label"],
        "authorId": ids["creator"],
        "notes": notes,
    }


def _write_jsonl_gz(path: Path, records: Iterable[dict[str, Any]]) -> int:
    """Gzipped JSON lines, written atomically; returns the number of records."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n" for record in records]

    def write(tmp: Path) -> None:
        with gzip.open(tmp, "wt", encoding="utf-8") as fh:
            fh.writelines(lines)

    atomic_write(path, write)
    return len(lines)


def _write_jsonl(path: Path, record: dict[str, Any]) -> None:
    write_json(path, record, indent=None)


def export_neuronpedia(cfg: ExportConfig) -> Path:
    """Write the export of the analysis in `cfg.analysis` (with its labels.json, if any) under `cfg.out`;
    returns OUT/<model_id>/<source_id>."""
    cfg.validate()
    analysis = Analysis.load(cfg.analysis)
    meta = analysis.meta
    analysis_cfg = AnalysisConfig(**meta["config"])
    sae = meta["sae"]
    layer = hook_layer(meta["hook_name"]) or 0  # hooks outside the blocks: layer 0
    ids = {
        "model": neuronpedia_id(cfg.model_id or meta["model"]["name"]),
        "set": neuronpedia_id(cfg.source_set or f"mono-{sae['architecture']}-{sae['d_sae']}"),
        "creator": cfg.creator_id,
    }
    ids["source"] = f"{layer}-{ids['set']}"
    labels = read_labels(cfg.analysis)
    folder = Path(cfg.out) / ids["model"] / ids["source"]
    folder.mkdir(parents=True, exist_ok=True)
    corpus = meta.get("corpus", {}).get("spec") if isinstance(meta.get("corpus"), dict) else None
    _write_jsonl(
        folder / "model.jsonl",
        {
            "id": ids["model"],
            "displayName": meta["model"]["name"],
            "displayNameShort": meta["model"]["name"],
            "creatorId": cfg.creator_id,
            "owner": cfg.creator_id,
            "layers": int(meta["model"]["n_layers"]),
            "neuronsPerLayer": int(meta["model"].get("d_mlp") or meta["model"]["d_model"]),
            "dimension": int(meta["model"]["d_model"]),
        },
    )
    _write_jsonl(
        folder / "sourceset.jsonl",
        {
            "modelId": ids["model"],
            "name": ids["set"],
            "creatorName": cfg.creator_id,
            "creatorId": cfg.creator_id,
            "urls": [],
            "description": f"{sae['architecture']} SAE, {sae['d_sae']} features on {meta['hook_name']} "
            "(exported by monosemantic)",
        },
    )
    _write_jsonl(
        folder / "source.jsonl",
        {
            "id": ids["source"],
            "modelId": ids["model"],
            "setName": ids["set"],
            "creatorId": cfg.creator_id,
            "hasDashboards": True,
            "dataset": corpus,
            "num_prompts": int(meta.get("sequences", 0)) or None,
            "num_tokens_in_prompt": int(meta["context_length"]),
        },
    )
    for start in range(0, analysis.d_sae, cfg.features_per_batch):
        batch = range(start, min(start + cfg.features_per_batch, analysis.d_sae))
        name = f"batch-{start // cfg.features_per_batch}.jsonl.gz"
        _write_jsonl_gz(folder / "features" / name, (feature_record(analysis, i, ids, analysis_cfg) for i in batch))
        _write_jsonl_gz(folder / "activations" / name, (r for i in batch for r in activation_records(analysis, i, ids)))
        labelled = [i for i in batch if i in labels]
        if labelled:
            _write_jsonl_gz(folder / "explanations" / name, (explanation_record(labels[i], i, ids) for i in labelled))
    return folder
