"""`interp analyze`, `interp label`, `interp neurons` and `interp search`: the analysis pass and what
is built from its artifact without the model (search by text runs it once)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from interp.features.analysis.config import AnalyzeConfig
from interp.features.config import NeuronsConfig, SearchConfig
from interp.features.labels.config import ENV_API_KEY, ENV_BASE_URL, ENV_MODEL, LabelRunConfig, LLMOptions
from sae.command import JsonOutput, add_command, emit_json

if TYPE_CHECKING:
    from interp.features.labels.llm import LLMLabeller


def register(subparsers: argparse._SubParsersAction) -> None:
    add_command(
        subparsers,
        "analyze",
        AnalyzeConfig,
        run_analyze,
        help="one pass over held-out tokens: every feature's statistics, saved for reports",
        allocator="release",
    )
    add_command(
        subparsers,
        "label",
        LabelRunConfig,
        run_label,
        help="label every feature (and MLP neuron) of an analysis, scored on held-out examples",
        description="Writes labels.json beside the analysis (and neurons/labels.json): for each feature a rule "
        "built from the analysis and its held-out detection AUROC and correlation.",
        allocator="keep",
    )
    add_command(
        subparsers,
        "neurons",
        NeuronsConfig,
        run_neurons,
        help="the most polysemantic MLP neurons and the features they split into",
        description="Reads an analysis of an SAE on MLP neurons (and its labels, when `interp label` has run): "
        "neurons ranked by the effective number of features driving them, and label scores of neurons against "
        "features.",
        json=True,
    )
    add_command(
        subparsers,
        "search",
        SearchConfig,
        run_search,
        help="find features by text, token, label, logit effect or direction",
        description="Queries an analysis folder (and its labels.json). Kinds: text (runs the model on the query), "
        "token (a token string exactly as in the vocabulary, or #ID), label (regex), logit (features promoting a "
        "token), nearest (a feature id).",
        json=True,
    )


def llm_labeller(options: LLMOptions) -> LLMLabeller | None:
    """The labeller the options ask for (None without --llm); the API key only from the environment."""
    if not options.llm:
        return None
    from interp.features.labels.llm import LLMConfig, LLMLabeller

    base_url = options.llm_base_url or os.environ.get(ENV_BASE_URL)
    model = options.llm_model or os.environ.get(ENV_MODEL)
    if not base_url or not model:
        raise ValueError(
            f"--llm needs an endpoint and a model: pass --llm-base-url and --llm-model or set {ENV_BASE_URL} "
            f"and {ENV_MODEL}."
        )
    if options.llm_features <= 0:
        raise ValueError(f"--llm-features must be positive, got {options.llm_features}.")
    return LLMLabeller(
        LLMConfig(
            base_url=base_url,
            model=model,
            api_key=os.environ.get(ENV_API_KEY),
            cache_dir=Path(options.llm_cache) if options.llm_cache else None,
            features=options.llm_features,
        )
    )


def run_analyze(cfg: AnalyzeConfig) -> int:
    from interp.features.analysis.run import run_analysis

    analysis = run_analysis(cfg)
    dead = int((analysis.tensors["fire_count"] == 0).sum())
    print(
        f"analysed {analysis.meta['tokens_analysed']} tokens x {analysis.d_sae} features "
        f"({dead} never fired) -> {cfg.out}"
    )
    return 0


def run_label(cfg: LabelRunConfig) -> int:
    import numpy as np

    from interp.features.labels.files import read_labels
    from interp.features.labels.labeller import run_labels

    written = run_labels(cfg.analysis, cfg.labels, neurons=cfg.neurons, llm=llm_labeller(cfg.explanations))
    for name, path in written.items():
        labels = read_labels(path.parent)
        scores = [v["score"] for v in labels.values() if v.get("score") is not None]
        median = f", median held-out AUROC {float(np.median(scores)):.3f}" if scores else ""
        print(f"{name}: {len(labels)} labels{median} -> {path}")
    return 0


def run_neurons(cfg: NeuronsConfig, output: JsonOutput) -> int:
    from interp.features.analysis.artifact import Analysis
    from interp.features.neurons import label_scores, labels_of, neuron_summaries, score_comparison

    analysis = Analysis.load(cfg.analysis)
    summaries = neuron_summaries(analysis, drivers=cfg.drivers)[: cfg.top]
    feature_labels, neuron_labels = labels_of(analysis), labels_of(analysis.neurons)
    comparisons = {
        "all labels, held-out AUROC": score_comparison(label_scores(feature_labels), label_scores(neuron_labels)),
        f"labels with >= {cfg.min_positives} held-out positives, AUROC": score_comparison(
            label_scores(feature_labels, min_positives=cfg.min_positives),
            label_scores(neuron_labels, min_positives=cfg.min_positives),
        ),
        "all labels, held-out correlation": score_comparison(
            label_scores(feature_labels, key="correlation"), label_scores(neuron_labels, key="correlation")
        ),
    }
    comparison = comparisons["all labels, held-out AUROC"]
    result = {"neurons": [s.to_dict() for s in summaries], "label_scores": comparison, "comparisons": comparisons}
    if emit_json(output, result):
        return 0
    for s in summaries:
        own = f"  own label: {s.label} ({format_evidence(s.label_score, s.label_positives)})" if s.label else ""
        print(f"neuron {s.neuron}: {s.effective_features:.1f} effective features{own}")
        for d in s.drivers:
            print(
                f"    feature {d.feature:>6}  {d.share:6.1%} of its activation mass  {d.label or '(unlabelled)'}"
                + (f"  ({format_evidence(d.label_score, d.positives)})" if d.label else "")
            )
    for title, comparison in comparisons.items():
        print(f"{title}:")
        for who, stats in comparison.items():
            if stats["count"]:
                print(
                    f"    {who:<8} n={stats['count']:<5} mean {stats['mean']:.3f}  median {stats['median']:.3f}  "
                    f"IQR {stats['q25']:.3f}-{stats['q75']:.3f}  >=0.9: {stats['share_ge_0.9']:.1%}  >=0.75: "
                    f"{stats['share_ge_0.75']:.1%}"
                )
            else:
                print(f"    {who:<8} none (run `interp label --analysis {cfg.analysis}`)")
    return 0


def format_evidence(score: float | None, positives: int | None) -> str:
    """'score 0.912 on 31 held-out positives', or 'unscored'."""
    if score is None:
        return "unscored"
    return f"score {score:.3f}" + ("" if positives is None else f" on {positives} held-out positives")


def run_search(cfg: SearchConfig, output: JsonOutput) -> int:
    from interp.features.search import SCORE_NAMES, FeatureIndex, format_hits, run_query

    cfg.validate()
    index = FeatureIndex.load(cfg.index)
    filters = dict(min_density=cfg.min_density, max_density=cfg.max_density, min_label_score=cfg.min_label_score)
    results = run_query(index, cfg.kind, cfg.query, top=cfg.top, suppress=cfg.suppress, rank=cfg.rank, **filters)
    if emit_json(output, [r.to_dict() for r in results]):
        return 0
    if cfg.kind == "text":
        for r in results:
            print(f"[{r.position}] {r.token!r}")
            print("    " + format_hits(r.hits, SCORE_NAMES["text"]).replace("\n", "\n    "))
    else:
        print(format_hits(results, SCORE_NAMES[cfg.kind]))
    return 0
