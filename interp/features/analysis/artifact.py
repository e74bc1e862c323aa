"""The analysis artifact: a folder written once by the pass and read by labels, neurons, search,
reports and exports without the model.

    analysis.json           format, version, model, hook, SAE, corpus, options, counts, flags, and
                            the fingerprint of this analysis (what labels.json records it was built for)
    features.safetensors    the per-feature tensors of FEATURE_TENSORS
    vocab.json              {"token_strings": [...]} one readable string per token id
    training.json, training_tensors.safetensors   the model's training record, when it has one
    neurons/                for SAEs on MLP neurons: the raw neurons analysed as features, same layout
    labels.json             written later by `interp label` (interp.features.labels.files); saving an analysis
                            deletes the labels.json files of the one it replaces
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sae.files import atomic_write, read_json, read_safetensors, write_json, write_safetensors

ANALYSIS_FORMAT = "monosemantic-analysis"
ANALYSIS_FORMAT_VERSION = 1
META_FILE = "analysis.json"
TENSORS_FILE = "features.safetensors"
VOCAB_FILE = "vocab.json"
TRAINING_FILES = ("training.json", "training_tensors.safetensors")
NEURONS_DIR = "neurons"  # sub-folder: the MLP neurons analysed as features (same layout), see interp.features.neurons
LABELS_FILE = "labels.json"  # the labels of the features in the same folder (interp.features.labels.files)


@dataclass(frozen=True)
class TensorField:
    """One tensor of features.safetensors: its shape (F = features, K = top_k, W = window,
    I = intervals, S = interval_samples, B = histogram bins, N = neighbours, V = vocabulary) and meaning."""

    shape: str
    meaning: str
    per_feature: bool = True  # first dimension F


# The schema of features.safetensors. `required` tensors come from every pass; the others from the
# decoder (nearest_*, logit_* when the hook reaches the logits, neuron_* for SAEs on MLP neurons) or
# from the neurons' own analysis (peak_driver_*).
FEATURE_TENSORS: dict[str, TensorField] = {
    "fire_count": TensorField("[F] int64", "tokens on which the feature fired (f > 0)"),
    "density": TensorField("[F] float64", "fire_count / analysed tokens"),
    "mean_activation": TensorField("[F] float32", "mean activation over firings"),
    "max_activation": TensorField("[F] float32", "largest activation"),
    "activation_sum": TensorField("[F] float64", "sum of activations over the analysed tokens"),
    "sequences_fired": TensorField("[F] int64", "context windows in which the feature fired"),
    "histogram": TensorField("[F, B] int64", "firings per log-spaced activation bin (under- and overflow at the ends)"),
    "histogram_edges": TensorField("[B - 1] float64", "edges of the log-spaced bins", per_feature=False),
    "token_counts": TensorField("[V] int64", "analysed occurrences of each token id", per_feature=False),
    "top_value": TensorField("[F, K] float32", "peak activation of each top example (-inf: empty slot)"),
    "top_seq": TensorField("[F, K] int64", "window index of each top example (-1: empty)"),
    "top_pos": TensorField("[F, K] int64", "position of the peak in its window"),
    "top_tokens": TensorField("[F, K, W] int32", "token ids around the peak (-1 beyond the window)"),
    "top_acts": TensorField("[F, K, W] float32", "the feature's activation on those tokens"),
    "top_seq_share": TensorField("[F, K] float32", "share of the example's window the feature fired on"),
    "interval_octave": TensorField("[F, I] int64", "interval i holds activations in [2^o, 2^(o+1))"),
    "interval_count": TensorField("[F, I] int64", "firings in each interval"),
    "interval_key": TensorField("[F, I, S] int64", "hash key of each sampled firing (the sample's order)"),
    "interval_seq": TensorField("[F, I, S] int64", "window index of each sample (-1: empty)"),
    "interval_pos": TensorField("[F, I, S] int64", "position of each sample in its window"),
    "interval_tokens": TensorField("[F, I, S, W] int32", "token ids around each sample"),
    "interval_acts": TensorField("[F, I, S, W] float32", "the feature's activation on those tokens"),
    "interval_value": TensorField("[F, I, S] float32", "activation of each sample"),
    "token_mass_ids": TensorField("[F, top_tokens] int32", "tokens with the most activation mass (-1: empty)"),
    "token_mass": TensorField("[F, top_tokens] float32", "activation mass on each of those tokens"),
    "token_mass_count": TensorField("[F, top_tokens] int64", "firings on each of those tokens"),
    "cofire_ids": TensorField("[F, N] int32", "features firing on the same tokens, by Jaccard index (-1: empty)"),
    "cofire_count": TensorField("[F, N] int64", "tokens on which both fired"),
    "cofire_jaccard": TensorField("[F, N] float32", "their Jaccard index"),
    "random_tokens": TensorField("[R, T] int32", "randomly sampled whole windows", per_feature=False),
    "random_ptr": TensorField("[R T + 1] int64", "CSR row pointers of their firings", per_feature=False),
    "random_features": TensorField("[nnz] int32", "feature of each firing", per_feature=False),
    "random_values": TensorField("[nnz] float32", "activation of each firing", per_feature=False),
    "random_seq": TensorField("[R] int64", "window index of each sampled window", per_feature=False),
    "decoder": TensorField("[F, d_in] float32", "decoder rows"),
    "decoder_norm": TensorField("[F] float32", "their L2 norms"),
    "nearest_ids": TensorField("[F, N] int32", "features with the most similar decoder rows"),
    "nearest_cosine": TensorField("[F, N] float32", "their cosine similarity"),
    "logit_top_ids": TensorField("[F, N] int32", "tokens the feature promotes most (direct logit effect)"),
    "logit_top_values": TensorField("[F, N] float32", "their logit effects"),
    "logit_bottom_ids": TensorField("[F, N] int32", "tokens it suppresses most"),
    "logit_bottom_values": TensorField("[F, N] float32", "their logit effects"),
    "logit_histogram": TensorField("[F, logit_bins] int64", "histogram of the effects on every token"),
    "logit_range": TensorField("[F, 2] float32", "smallest and largest effect (the histogram's range)"),
    "logit_directions": TensorField("[F, d_model] float32", "decoder rows as the unembedding reads them"),
    "unembed": TensorField("[d_model, V] float32", "W_U", per_feature=False),
    "neuron_ids": TensorField("[F, N] int32", "neurons with the largest |decoder weight| (SAEs on MLP neurons)"),
    "neuron_weights": TensorField("[F, N] float32", "those decoder weights"),
    "ablation_change": TensorField(
        "[F, K] float32", "change in log p of each top example's next token when the feature is ablated (NaN: not run)"
    ),
    "ablation_mean": TensorField("[F] float32", "mean of ablation_change over the examples run (NaN: none)"),
    "ablation_drop_ids": TensorField("[F, N] int32", "tokens whose log p falls most when the feature is ablated"),
    "ablation_drop_values": TensorField("[F, N] float32", "their mean change in log p (nats)"),
    "peak_driver_ids": TensorField("[F, K, drivers] int32", "neurons only: features driving each top example's peak"),
    "peak_driver_values": TensorField("[F, K, drivers] float32", "their contributions f_i W_dec[i, j]"),
}
# from the decoder (absent where it does not apply), the ablation runs, or the neurons' analysis only
OPTIONAL_PREFIXES = ("decoder", "nearest_", "logit_", "unembed", "neuron_", "ablation_", "peak_driver_")
REQUIRED_TENSORS = tuple(name for name in FEATURE_TENSORS if not name.startswith(OPTIONAL_PREFIXES))


def check_tensors(tensors: dict[str, Tensor], d_sae: int, where: str) -> None:
    """ValueError naming the tensor when `tensors` does not follow FEATURE_TENSORS."""
    unknown = sorted(set(tensors) - set(FEATURE_TENSORS))
    if unknown:
        raise ValueError(f"{where}: tensor(s) {unknown} are not in the analysis schema (FEATURE_TENSORS).")
    missing = [name for name in REQUIRED_TENSORS if name not in tensors]
    if missing:
        raise ValueError(f"{where}: tensor(s) {missing} are missing; re-run `interp analyze`.")
    for name, tensor in tensors.items():
        if FEATURE_TENSORS[name].per_feature and (tensor.ndim == 0 or tensor.shape[0] != d_sae):
            raise ValueError(
                f"{where}: tensor {name!r} has shape {list(tensor.shape)}, not [{d_sae}, ...] (d_sae in analysis.json)."
            )


@dataclass
class Analysis:
    """An analysis artifact in memory: `meta` (analysis.json), `tensors` (features.safetensors; names
    in `Analysis.feature`), `token_strings` (one per token id)."""

    meta: dict[str, Any]
    tensors: dict[str, Tensor]
    token_strings: list[str]
    path: Path | None = None
    neurons: Analysis | None = None  # for SAEs on MLP neurons: the neurons analysed as features (NEURONS_DIR)

    @property
    def d_sae(self) -> int:
        return int(self.meta["sae"]["d_sae"])

    def save(self, out: str | os.PathLike, training_from: Path | None = None) -> Path:
        """Write the folder (files replaced atomically); copy a model's training record beside it.

        analysis.json, the mark of a complete analysis, is removed first and written last (after
        neurons/), so a save that is killed leaves a folder every reader refuses, never a mixture of
        two analyses. The labels and neurons/ of the analysis this one replaces are deleted."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / META_FILE).unlink(missing_ok=True)
        for folder in (out, out / NEURONS_DIR):  # labels of the analysis this one replaces are stale
            (folder / LABELS_FILE).unlink(missing_ok=True)
        if self.neurons is None and (out / NEURONS_DIR).is_dir():
            shutil.rmtree(out / NEURONS_DIR)
        self.meta = {**self.meta, "fingerprint": fingerprint(self.meta)}
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.tensors.items()}
        check_tensors(tensors, self.d_sae, "Analysis.save")
        write_safetensors(out / TENSORS_FILE, tensors, metadata={"format": ANALYSIS_FORMAT})
        write_json(out / VOCAB_FILE, {"token_strings": self.token_strings}, indent=None)
        if training_from is not None and all((training_from / name).is_file() for name in TRAINING_FILES):
            for name in TRAINING_FILES:
                atomic_write(out / name, lambda tmp, name=name: shutil.copyfile(training_from / name, tmp))
        if self.neurons is not None:
            self.neurons.save(out / NEURONS_DIR)
        write_json(out / META_FILE, self.meta)
        self.path = out
        return out

    @classmethod
    def load(cls, path: str | os.PathLike) -> Analysis:
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"analysis folder {path} does not exist; create it with `interp analyze`.")
        for name in (META_FILE, TENSORS_FILE, VOCAB_FILE):
            if not (path / name).is_file():
                raise FileNotFoundError(f"analysis folder {path} has no {name}; re-run `interp analyze --out {path}`.")
        fix = f"re-run `interp analyze --out {path}`"
        meta = read_json(path / META_FILE, fix=fix)
        if meta.get("format") != ANALYSIS_FORMAT:
            raise ValueError(
                f"{path / META_FILE}: field 'format' is {meta.get('format')!r}, not {ANALYSIS_FORMAT!r}; "
                "this folder was not written by `interp analyze`."
            )
        if meta.get("format_version") != ANALYSIS_FORMAT_VERSION:
            raise ValueError(
                f"{path / META_FILE}: field 'format_version' is {meta.get('format_version')!r}; this toolkit "
                f"reads version {ANALYSIS_FORMAT_VERSION}. Re-run `interp analyze` to rebuild it."
            )
        sae = meta.get("sae")
        if not isinstance(sae, dict) or not isinstance(sae.get("d_sae"), int) or sae["d_sae"] <= 0:
            raise ValueError(
                f"{path / META_FILE}: field 'sae' must be an object with a positive integer 'd_sae', "
                f"found {sae!r:.80}; {fix}."
            )
        vocab = read_json(path / VOCAB_FILE, fix=fix).get("token_strings")
        if not isinstance(vocab, list):
            raise ValueError(
                f"{path / VOCAB_FILE}: field 'token_strings' must be a list of strings; re-run `interp analyze`."
            )
        tensors = read_safetensors(path / TENSORS_FILE, fix="re-run `interp analyze`")
        check_tensors(tensors, sae["d_sae"], str(path / TENSORS_FILE))
        neurons = cls.load(path / NEURONS_DIR) if (path / NEURONS_DIR / META_FILE).is_file() else None
        return cls(meta=meta, tensors=tensors, token_strings=vocab, path=path, neurons=neurons)

    def feature(self, i: int) -> dict[str, Any]:
        """Everything about feature i as plain Python values (lists cut to their filled entries)."""
        if not 0 <= i < self.d_sae:
            raise ValueError(f"feature {i} is out of range; this analysis has features 0..{self.d_sae - 1}.")
        t = self.tensors
        top_valid = t["top_seq"][i] >= 0
        record: dict[str, Any] = {
            "id": i,
            "fire_count": int(t["fire_count"][i]),
            "density": float(t["density"][i]),
            "mean_activation": float(t["mean_activation"][i]),
            "max_activation": float(t["max_activation"][i]),
            "sequences_fired": int(t["sequences_fired"][i]),
            "histogram": t["histogram"][i].tolist(),
            "top_examples": [
                {
                    "value": float(t["top_value"][i, k]),
                    "sequence": int(t["top_seq"][i, k]),
                    "position": int(t["top_pos"][i, k]),
                    "seq_share": float(t["top_seq_share"][i, k]),
                    "tokens": t["top_tokens"][i, k].tolist(),
                    "acts": t["top_acts"][i, k].tolist(),
                }
                for k in torch.nonzero(top_valid).squeeze(1).tolist()
            ],
            "intervals": [],
            "token_mass": _pairs(t["token_mass_ids"][i], t["token_mass"][i], t["token_mass_count"][i]),
            "cofire": _pairs(t["cofire_ids"][i], t["cofire_jaccard"][i], t["cofire_count"][i]),
        }
        fired = max(record["fire_count"], 1)
        for k in range(t["interval_count"].shape[1]):
            octave, count = int(t["interval_octave"][i, k]), int(t["interval_count"][i, k])
            if count == 0:
                continue
            filled = torch.nonzero(t["interval_seq"][i, k] >= 0).squeeze(1).tolist()
            record["intervals"].append(
                {
                    "low": 2.0**octave,
                    "high": 2.0 ** (octave + 1),
                    "count": count,
                    "share": count / fired,
                    "examples": [
                        {
                            "value": float(t["interval_value"][i, k, s]),
                            "sequence": int(t["interval_seq"][i, k, s]),
                            "position": int(t["interval_pos"][i, k, s]),
                            "tokens": t["interval_tokens"][i, k, s].tolist(),
                            "acts": t["interval_acts"][i, k, s].tolist(),
                        }
                        for s in filled
                    ],
                }
            )
        if "nearest_ids" in t:
            record["nearest"] = _pairs(t["nearest_ids"][i], t["nearest_cosine"][i])
        if "logit_top_ids" in t:
            record["logit_top"] = _pairs(t["logit_top_ids"][i], t["logit_top_values"][i])
            record["logit_bottom"] = _pairs(t["logit_bottom_ids"][i], t["logit_bottom_values"][i])
            record["logit_histogram"] = t["logit_histogram"][i].tolist()
            record["logit_range"] = t["logit_range"][i].tolist()
        if "neuron_ids" in t:
            record["neurons"] = _pairs(t["neuron_ids"][i], t["neuron_weights"][i])
        if "ablation_mean" in t:
            mean = float(t["ablation_mean"][i])
            record["ablation"] = {
                "mean_change": None if mean != mean else mean,
                "example_changes": [None if c != c else float(c) for c in t["ablation_change"][i][top_valid].tolist()],
                "drops": _pairs(t["ablation_drop_ids"][i], t["ablation_drop_values"][i]),
            }
        return record


def _pairs(ids: Tensor, values: Tensor, counts: Tensor | None = None) -> list[dict[str, Any]]:
    keep = ids >= 0
    out = [{"id": int(a), "value": float(v)} for a, v in zip(ids[keep].tolist(), values[keep].tolist())]
    if counts is not None:
        for item, c in zip(out, counts[keep].tolist()):
            item["count"] = int(c)
    return out


def fingerprint(meta: dict[str, Any]) -> str:
    """A short hash of an analysis's meta (model, SAE, corpus, options, creation time), without any
    earlier fingerprint: the identity that labels.json records."""
    body = {k: v for k, v in meta.items() if k != "fingerprint"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_fingerprint(folder: str | os.PathLike) -> str | None:
    """The fingerprint in folder/analysis.json; None when there is no such file or field."""
    path = Path(folder) / META_FILE
    return read_json(path).get("fingerprint") if path.is_file() else None
