"""Find features from Python or the shell: `FeatureIndex.load(analysis_dir)` once, then fast queries.

    index = FeatureIndex.load("artifacts/demo/analysis")
    index.by_token(" def")                 # features with the most activation per occurrence of ` def`
    index.by_label("import|module")        # labels matching a regex (needs `interp label`)
    index.by_logit(" (")                   # features whose decoder direction promotes ` (` most
    index.nearest(812)                     # decoder-cosine neighbours of feature 812 (or of any vector)
    index.by_text("def main():")           # runs the model: features active on each token

Every query takes the same filters (min_density, max_density, min_label_score) and returns typed
records with `to_dict()`; `format_hits` prints them as a table. Queries other than `by_text` use only
the analysis artifact, with its per-token tables inverted and its decoder normalised at load time;
`by_text` loads the model and SAE recorded in analysis.json on first use.

`interp search --index DIR {text,token,label,logit,nearest} QUERY [--top N] [--json] [filters]`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from interp.activations.hooks import ActivationHooks, plan_capture
from interp.activations.sources import open_model_and_sae
from interp.features.analysis.artifact import Analysis
from interp.features.config import QUERY_KINDS
from interp.features.labels.files import read_labels

FILTERS = ("min_density", "max_density", "min_label_score")  # the keyword filters every query takes


@dataclass
class FeatureHit:
    """One feature a query found. `score` is what the query ranks by (see each method)."""

    feature: int
    score: float
    density: float
    max_activation: float
    label: str | None = None
    label_score: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TokenFeatures:
    """The features active on one token of a text query, strongest first."""

    position: int
    token: str
    hits: list[FeatureHit]

    def to_dict(self) -> dict[str, Any]:
        return {"position": self.position, "token": self.token, "hits": [h.to_dict() for h in self.hits]}


class FeatureIndex:
    """An analysis (and its labels) held in memory in the shapes queries need."""

    def __init__(self, analysis: Analysis, labels: dict[int, dict[str, Any]]):
        t = analysis.tensors
        self.analysis, self.meta, self.vocab = analysis, analysis.meta, analysis.token_strings
        self.F = analysis.d_sae
        self.density = t["density"].double()
        self.max_activation = t["max_activation"].float()
        self.token_counts = t["token_counts"].double()
        self.labels = labels
        self.label_text = [labels.get(i, {}).get("label") for i in range(self.F)]
        self.label_score = torch.tensor(
            [_number(labels.get(i, {}).get("score")) for i in range(self.F)], dtype=torch.float64
        )
        # all labels as one text, one line each, so a regex scans them in one call: line i is feature i
        lines = [(text or "").replace("\n", " ") for text in self.label_text]
        self._label_blob = "\n".join(lines)
        self._line_starts = np.cumsum([0] + [len(line) + 1 for line in lines[:-1]])
        self._token_ids = {s: i for i, s in reversed(list(enumerate(self.vocab)))}  # first id of a repeated string
        # per-token table inverted: for token v, its listing features are rows ptr[v]:ptr[v+1]
        ids = t["token_mass_ids"].long()
        feature = torch.arange(self.F)[:, None].expand_as(ids)
        valid = ids >= 0
        tokens, order = torch.sort(ids[valid], stable=True)
        self.token_feature = feature[valid][order]
        self.token_mass = t["token_mass"].double()[valid][order]
        self.token_fire_count = t["token_mass_count"].long()[valid][order]
        self.token_ptr = torch.searchsorted(tokens, torch.arange(len(self.vocab) + 1))
        self.activation_sum = t["activation_sum"].double()
        decoder = t.get("decoder")
        self.unit_decoder = (
            decoder.float() / decoder.float().norm(dim=1, keepdim=True).clamp_min(1e-12)
            if decoder is not None
            else None
        )
        self.logit_directions = t["logit_directions"].float() if "logit_directions" in t else None
        self.unembed_rows = t["unembed"].float().T.contiguous() if "unembed" in t else None  # [V, d_model]
        self._runner: _TextRunner | None = None

    @classmethod
    def load(cls, analysis_dir: str | os.PathLike) -> FeatureIndex:
        """The analysis in `analysis_dir` with its labels.json when `interp label` has written one."""
        analysis = Analysis.load(analysis_dir)
        return cls(analysis, read_labels(analysis_dir))

    # ---- filters and records -----------------------------------------------------------------
    def mask(self, **filters: float | None) -> Tensor:
        """bool [F]: the features that pass the filters FILTERS (a label-score filter drops unscored
        features). A misspelled filter, or one that no feature could pass, raises ValueError."""
        unknown = sorted(set(filters) - set(FILTERS))
        if unknown:
            raise ValueError(f"unknown filter(s) {unknown}; the filters are {', '.join(FILTERS)}.")
        for name, value in filters.items():
            if value is not None and not (isinstance(value, (int, float)) and 0 <= value <= 1):
                raise ValueError(f"filter {name}={value!r} must be a number in [0, 1] (densities and label scores).")
        min_density, max_density = filters.get("min_density"), filters.get("max_density")
        min_label_score = filters.get("min_label_score")
        if min_density is not None and max_density is not None and min_density > max_density:
            raise ValueError(f"min_density={min_density} is above max_density={max_density}: no feature can pass.")
        keep = torch.ones(self.F, dtype=torch.bool)
        if min_density is not None:
            keep &= self.density >= min_density
        if max_density is not None:
            keep &= self.density <= max_density
        if min_label_score is not None:
            keep &= self.label_score >= min_label_score  # NaN (unscored) compares False
        return keep

    def hit(self, i: int, score: float, **detail: Any) -> FeatureHit:
        s = float(self.label_score[i])
        return FeatureHit(
            i,
            float(score),
            float(self.density[i]),
            float(self.max_activation[i]),
            self.label_text[i],
            None if math.isnan(s) else s,
            detail,
        )

    def token_id(self, token: str) -> int:
        """The id of a token string exactly as in the vocabulary (`#123` names id 123)."""
        if token in self._token_ids:
            return self._token_ids[token]
        if re.fullmatch(r"#\d+", token) and int(token[1:]) < len(self.vocab):
            return int(token[1:])
        near = [s for s in self.vocab if s.strip() == token.strip() and s.strip()]
        near += [s for s in difflib.get_close_matches(token, self.vocab, n=5, cutoff=0.5) if s not in near]
        hint = f"; the closest are {', '.join(repr(s) for s in near[:5])}" if near else ""
        raise ValueError(f"token {token!r} is not in this analysis's vocabulary{hint} (write #ID to give a token id).")

    # ---- queries ------------------------------------------------------------------------------
    def by_token(self, token: str, *, top: int = 10, **filters: float | None) -> list[FeatureHit]:
        """Features that fire most on `token`: score = mean activation per occurrence of the token
        (activation mass on it / its count); detail: firings on it, share of the feature's mass.
        From each feature's top-token table, so a feature is found when the token is among its top tokens."""
        top = _top(top)
        keep_all = self.mask(**filters)
        v = self.token_id(token)
        if int(self.token_counts[v]) == 0:
            raise ValueError(
                f"token {token!r} is in the vocabulary but never occurs in the {self.meta.get('sequences', '?')} "
                "analysed windows, so no feature can be found by it; analyse text that holds it."
            )
        a, b = int(self.token_ptr[v]), int(self.token_ptr[v + 1])
        features, mass, fired = self.token_feature[a:b], self.token_mass[a:b], self.token_fire_count[a:b]
        keep = keep_all[features]
        features, mass, fired = features[keep], mass[keep], fired[keep]
        order = torch.argsort(mass, descending=True, stable=True)[:top]
        occurrences = max(float(self.token_counts[v]), 1.0)
        return [
            self.hit(
                int(features[k]),
                float(mass[k]) / occurrences,
                firings=int(fired[k]),
                mass_share=float(mass[k] / self.activation_sum[features[k]].clamp_min(1e-300)),
            )
            for k in order.tolist()
        ]

    def by_label(self, pattern: str, *, top: int | None = None, **filters: float | None) -> list[FeatureHit]:
        """Features whose label matches `pattern` (a regular expression, case-insensitive, ^ and $ at
        each label's ends; plain words work as keywords), best label score first; score = label score
        (NaN when unscored)."""
        if not self.labels:
            raise ValueError(
                f"{self.analysis.path} has no labels.json; run `interp label --analysis {self.analysis.path}` first."
            )
        top = None if top is None else _top(top)
        try:
            regex = re.compile(pattern, re.IGNORECASE | re.MULTILINE)
        except re.error as err:
            raise ValueError(f"label pattern {pattern!r} is not a valid regular expression ({err}).") from err
        starts = [m.start() for m in regex.finditer(self._label_blob)]
        found = np.unique(np.searchsorted(self._line_starts, starts, side="right") - 1)
        labelled = np.array([self.label_text[i] is not None for i in found], dtype=bool)
        found = found[labelled & self.mask(**filters).numpy()[found]] if len(found) else found
        scores = self.label_score.nan_to_num(-1.0).numpy()[found]
        found = found[np.lexsort((found, -scores))]  # best score first, then by id
        return [self.hit(int(i), float(self.label_score[i])) for i in found[:top]]

    def logit_effects(self, token: str) -> Tensor:
        """[F]: every feature's direct effect on the logit of `token` (decoder direction through the unembedding)."""
        if self.logit_directions is None or self.unembed_rows is None:
            why = (
                self.meta.get("logit_effects_missing")
                or "this analysis was written without 'logit_directions'; re-run `interp analyze`"
            )
            raise ValueError(f"{self.analysis.path}: no logit effects to search ({why}).")
        return self.logit_directions @ self.unembed_rows[self.token_id(token)]

    def by_logit(
        self, token: str, *, top: int = 10, suppress: bool = False, **filters: float | None
    ) -> list[FeatureHit]:
        """Features that promote `token` most (or suppress it, `suppress=True`); score = logit effect."""
        top = _top(top)
        effects = self.logit_effects(token)
        ranked = torch.where(self.mask(**filters), -effects if suppress else effects, -math.inf)
        best = ranked.topk(min(top, self.F))
        return [
            self.hit(i, float(effects[i])) for i, r in zip(best.indices.tolist(), best.values.tolist()) if r > -math.inf
        ]

    def nearest(self, query: int | Tensor, *, top: int = 10, **filters: float | None) -> list[FeatureHit]:
        """Features whose decoder direction is nearest (cosine) to feature `query`'s, or to a vector [d_in]."""
        if self.unit_decoder is None:
            raise ValueError(f"{self.analysis.path}: features.safetensors has no 'decoder'; re-run `interp analyze`.")
        top = _top(top)
        keep = self.mask(**filters)
        if isinstance(query, (str, bytes, bool)) or not isinstance(query, (int, np.integer, Tensor, list, tuple)):
            raise ValueError(
                f"nearest() takes a feature id (int) or a direction of d_in numbers, got {type(query).__name__} "
                f"{query!r:.40}."
            )
        if isinstance(query, (int, np.integer)):
            query = int(query)
            if not 0 <= query < self.F:
                raise ValueError(f"feature {query} is out of range; this index has features 0..{self.F - 1}.")
            direction = self.unit_decoder[query]
            keep[query] = False
        else:
            direction = torch.as_tensor(query, dtype=torch.float32).flatten()
            if direction.numel() != self.unit_decoder.shape[1]:
                raise ValueError(
                    f"a direction for nearest() needs {self.unit_decoder.shape[1]} values (the SAE's d_in), got "
                    f"{direction.numel()}."
                )
            if not bool(direction.isfinite().all()) or float(direction.norm()) == 0:
                raise ValueError("the direction for nearest() must be finite and non-zero; it has no direction.")
            direction = direction / direction.norm()
        cosine = self.unit_decoder @ direction
        best = torch.where(keep, cosine, -math.inf).topk(min(top, self.F))
        return [self.hit(i, c) for i, c in zip(best.indices.tolist(), best.values.tolist()) if c > -math.inf]

    def by_text(
        self,
        prompt: str,
        *,
        top: int = 5,
        positions: list[int] | None = None,
        rank: str = "activation",
        **filters: float | None,
    ) -> list[TokenFeatures]:
        """Run the model on BOS + `prompt` and return, for each prompt token (or the chosen positions,
        0 = first prompt token, negative from the end), the features active on it, strongest first;
        score = activation, detail: activation as a share of the feature's max over the analysis.
        rank="share_of_max" orders by that share instead, so that a dense feature active on every
        token does not head each list (max_density=... drops dense features altogether)."""
        top = _top(top)
        if rank not in ("activation", "share_of_max"):
            raise ValueError(f"rank must be 'activation' or 'share_of_max', got {rank!r}.")
        if self._runner is None:
            self._runner = _TextRunner(self.meta)
        tokens, f = self._runner.features(prompt)  # [n] ids without BOS, [n, F]
        if f.shape[1] != self.F:
            raise ValueError(
                f"the SAE at {self._runner.sae_path} has {f.shape[1]} features but the index has {self.F}."
            )
        n = len(tokens)
        chosen = range(n) if positions is None else [p + n if p < 0 else p for p in positions]
        keep = self.mask(**filters)
        out = []
        for p in chosen:
            if not 0 <= p < n:
                raise ValueError(f"position {p} is outside the prompt's {n} tokens.")
            share = f[p] / self.max_activation.clamp_min(1e-30)
            row = torch.where(keep & (f[p] > 0), f[p] if rank == "activation" else share, 0.0)
            best = row.topk(min(top, self.F))
            hits = [
                self.hit(i, float(f[p, i]), share_of_max=float(share[i]))
                for i, r in zip(best.indices.tolist(), best.values.tolist())
                if r > 0
            ]
            out.append(
                TokenFeatures(p, self.vocab[tokens[p]] if tokens[p] < len(self.vocab) else f"<{tokens[p]}>", hits)
            )
        return out


def _top(top: Any) -> int:
    """A query's `top`: a positive number of results."""
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top <= 0:
        raise ValueError(f"top must be a positive integer (how many results), got {top!r}.")
    return int(top)


def _number(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else math.nan


class _TextRunner:
    """The model and SAE named in analysis.json, loaded once: prompt -> feature activations per token."""

    def __init__(self, meta: dict[str, Any]):
        spec, sae_path = meta.get("model", {}).get("spec"), meta.get("sae", {}).get("path")
        if not spec or not sae_path:
            raise ValueError(
                "analysis.json names no model spec (field model.spec) or SAE path (field sae.path); text "
                "queries need both, as written by `interp analyze`."
            )
        opened = open_model_and_sae(spec, sae_path, hook=meta["hook_name"])
        self.model, self.sae, self.sae_path, self.hook = opened.model, opened.sae, opened.sae_path, opened.hook
        plan = plan_capture(self.model.bridge, [self.hook], self.model.context_length)
        self.spec = plan.hooks[0]
        self.hooks = ActivationHooks(self.model.bridge, [self.hook], plan.stop_at_layer)

    @torch.no_grad()
    def features(self, prompt: str) -> tuple[list[int], Tensor]:
        ids = self.model.tokenizer.encode(prompt)[: self.model.context_length - 1]
        if not ids:
            raise ValueError("the text query is empty after tokenisation; give some text.")
        tokens = torch.tensor([[self.model.bos_id, *ids]])
        with self.hooks:
            acts = self.hooks.run(tokens)[self.hook]
        x = self.spec.rows(acts).to(self.sae.W_dec.dtype)
        return ids, self.sae.encode(x).float()[1:]


# ---- printing ----------------------------------------------------------------------------------------


def format_hits(hits: list[FeatureHit], score_name: str = "score") -> str:
    """A fixed-width table: feature, score, density, max activation, label (score)."""
    if not hits:
        return "(no features)"
    lines = [f"{'feature':>8}  {score_name:>10}  {'density':>9}  {'max act':>8}  label"]
    for h in hits:
        label = "" if h.label is None else h.label + ("" if h.label_score is None else f"  [{h.label_score:.2f}]")
        lines.append(f"{h.feature:>8}  {h.score:>10.4g}  {h.density:>9.3g}  {h.max_activation:>8.3g}  {label}")
    return "\n".join(lines)


SCORE_NAMES = {
    "token": "act/occur",
    "label": "label scr",
    "logit": "logit eff",
    "nearest": "cosine",
    "text": "activation",
}


def run_query(
    index: FeatureIndex,
    kind: str,
    query: str,
    *,
    top: int,
    suppress: bool = False,
    rank: str = "activation",
    **filters: float | None,
) -> list[FeatureHit] | list[TokenFeatures]:
    """One query by name, as the CLI gives it (a nearest query takes a feature id)."""
    if kind == "text":
        return index.by_text(query, top=top, rank=rank, **filters)
    if kind == "token":
        return index.by_token(query, top=top, **filters)
    if kind == "label":
        return index.by_label(query, top=top, **filters)
    if kind == "logit":
        return index.by_logit(query, top=top, suppress=suppress, **filters)
    if kind == "nearest":
        if not query.strip().isdigit():
            raise ValueError(f"a nearest query takes a feature id, got {query!r}.")
        return index.nearest(int(query), top=top, **filters)
    raise ValueError(f"unknown query kind {kind!r}; one of {', '.join(QUERY_KINDS)}.")
