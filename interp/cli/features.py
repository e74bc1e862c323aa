"""`interp analyze`, `interp label`, `interp neurons` and `interp search`: the analysis pass and what
is built from its artifact without the model (search by text runs it once)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from interp.analysis.config import AnalysisConfig
from interp.cli.options import add_corpus, add_model
from interp.config import CACHE_DIR, DRIVERS_LISTED, ENV_API_KEY, ENV_BASE_URL, ENV_MODEL, QUERY_KINDS, LabelConfig
from sae.cli import add_process_options
from sae.options import DataclassOptions, add_device, add_json, add_sae, emit_json

if TYPE_CHECKING:
    from interp.labels.llm import LLMLabeller


def add_analysis(parser: argparse.ArgumentParser, *, name: str = "--analysis") -> None:
    parser.add_argument(name, required=True, metavar="DIR", help="analysis folder written by `interp analyze`")


def register(subparsers: argparse._SubParsersAction) -> None:
    analyze = subparsers.add_parser(
        "analyze", help="one pass over held-out tokens: every feature's statistics, saved for reports"
    )
    add_model(analyze)
    add_sae(analyze)
    add_corpus(analyze, default=None)
    analyze.add_argument("--out", required=True, help="analysis folder to write")
    analyze.add_argument("--hook", default=None, help="hook name (default: the one in the SAE's cfg.json)")
    analyze.add_argument(
        "--split", default="heldout", choices=["heldout", "train", "all"], help="corpus split (default heldout)"
    )
    add_device(analyze)
    add_process_options(analyze, allocator="release")
    analysis_options = DataclassOptions(analyze.add_argument_group("analysis"), AnalysisConfig)
    analyze.set_defaults(run=lambda args: run_analyze(args, analysis_options))

    label = subparsers.add_parser(
        "label",
        help="label every feature (and MLP neuron) of an analysis, scored on held-out examples",
        description="Writes labels.json beside the analysis (and neurons/labels.json): "
        "for each feature a rule built from the analysis and its held-out "
        "detection AUROC and correlation.",
    )
    add_analysis(label)
    label.add_argument(
        "--no-neurons", action="store_true", help="label the features only, not the MLP neurons of the analysis"
    )
    add_process_options(label)
    label_options = DataclassOptions(label.add_argument_group("labels"), LabelConfig)
    add_llm_options(label)
    label.set_defaults(run=lambda args: run_label(args, label_options))

    neurons = subparsers.add_parser(
        "neurons",
        help="the most polysemantic MLP neurons and the features they split into",
        description="Reads an analysis of an SAE on MLP neurons (and its labels, when "
        "`interp label` has run): neurons ranked by the effective number of "
        "features driving them, and label scores of neurons against features.",
    )
    add_analysis(neurons)
    neurons.add_argument("--top", type=int, default=10, help="neurons to list (default 10)")
    neurons.add_argument(
        "--drivers",
        type=int,
        default=DRIVERS_LISTED,
        help=f"driving features listed per neuron (default {DRIVERS_LISTED})",
    )
    neurons.add_argument(
        "--min-positives",
        type=int,
        default=20,
        help="also compare only labels scored on at least this many held-out positives (default 20)",
    )
    add_json(neurons)
    neurons.set_defaults(run=run_neurons)

    search = subparsers.add_parser(
        "search",
        help="find features by text, token, label, logit effect or direction",
        description="Queries an analysis folder (and its labels.json). Kinds: text (runs the "
        "model on the query), token (a token string exactly as in the vocabulary, "
        "or #ID), label (regex), logit (features promoting a token), nearest (a feature id).",
    )
    add_analysis(search, name="--index")
    search.add_argument("kind", choices=QUERY_KINDS, help="what the query is")
    search.add_argument("query", help="the text, token, pattern or feature id")
    search.add_argument("--top", type=int, default=10, help="results per query (per token for text; default 10)")
    search.add_argument(
        "--min-density", type=float, default=None, help="keep features firing on at least this share of tokens"
    )
    search.add_argument(
        "--max-density", type=float, default=None, help="keep features firing on at most this share of tokens"
    )
    search.add_argument(
        "--min-label-score", type=float, default=None, help="keep features whose label scores at least this"
    )
    search.add_argument("--suppress", action="store_true", help="logit: features that suppress the token instead")
    search.add_argument(
        "--rank",
        choices=("activation", "share_of_max"),
        default="activation",
        help="text: order each token's features by activation, or by activation as a share of the feature's max "
        "(keeps a dense feature from heading every token; default activation)",
    )
    add_json(search)
    search.set_defaults(run=run_search)


def add_llm_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("language-model explanations (optional, off by default)")
    group.add_argument(
        "--llm", action="store_true", help="also explain and score features with a chat-completions endpoint"
    )
    group.add_argument(
        "--llm-base-url",
        default=None,
        help=f"endpoint base URL, e.g. http://localhost:8000/v1 (default ${ENV_BASE_URL})",
    )
    group.add_argument("--llm-model", default=None, help=f"model name (default ${ENV_MODEL})")
    group.add_argument("--llm-cache", default=None, help=f"response cache folder (default <analysis>/{CACHE_DIR})")
    group.add_argument(
        "--llm-features", type=int, default=50, help="features to explain, most often firing first (default 50)"
    )


def llm_from_args(args: argparse.Namespace) -> LLMLabeller | None:
    """The labeller the options ask for (None without --llm); the API key only from the environment."""
    if not args.llm:
        return None
    from interp.labels.llm import LLMConfig, LLMLabeller

    base_url, model = args.llm_base_url or os.environ.get(ENV_BASE_URL), args.llm_model or os.environ.get(ENV_MODEL)
    if not base_url or not model:
        raise ValueError(
            f"--llm needs an endpoint and a model: pass --llm-base-url and --llm-model or set {ENV_BASE_URL} "
            f"and {ENV_MODEL}."
        )
    if args.llm_features <= 0:
        raise ValueError(f"--llm-features must be positive, got {args.llm_features}.")
    return LLMLabeller(
        LLMConfig(
            base_url=base_url,
            model=model,
            api_key=os.environ.get(ENV_API_KEY),
            cache_dir=Path(args.llm_cache) if args.llm_cache else None,
            features=args.llm_features,
        )
    )


def run_analyze(args: argparse.Namespace, options: DataclassOptions) -> int:
    from interp.analysis.run import run_analysis
    from interp.pipeline import model_corpus

    cfg = AnalysisConfig(**options.values(args))
    analysis = run_analysis(
        args.model,
        args.sae,
        args.corpus or model_corpus(args.model),
        args.out,
        cfg,
        hook_name=args.hook,
        split=args.split,
        device=args.device,
    )
    dead = int((analysis.tensors["fire_count"] == 0).sum())
    print(
        f"analysed {analysis.meta['tokens_analysed']} tokens x {analysis.d_sae} features "
        f"({dead} never fired) -> {args.out}"
    )
    return 0


def run_label(args: argparse.Namespace, options: DataclassOptions) -> int:
    import numpy as np

    from interp.labels.files import read_labels
    from interp.labels.labeller import run_labels

    cfg = LabelConfig(**options.values(args))
    written = run_labels(args.analysis, cfg, neurons=not args.no_neurons, llm=llm_from_args(args))
    for name, path in written.items():
        labels = read_labels(path.parent)
        scores = [v["score"] for v in labels.values() if v.get("score") is not None]
        median = f", median held-out AUROC {float(np.median(scores)):.3f}" if scores else ""
        print(f"{name}: {len(labels)} labels{median} -> {path}")
    return 0


def run_neurons(args: argparse.Namespace) -> int:
    from interp.analysis.artifact import Analysis
    from interp.neurons import label_scores, labels_of, neuron_summaries, score_comparison

    analysis = Analysis.load(args.analysis)
    summaries = neuron_summaries(analysis, drivers=args.drivers)[: args.top]
    feature_labels, neuron_labels = labels_of(analysis), labels_of(analysis.neurons)
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
    result = {"neurons": [s.to_dict() for s in summaries], "label_scores": comparison, "comparisons": comparisons}
    if emit_json(args, result):
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
                print(f"    {who:<8} none (run `interp label --analysis {args.analysis}`)")
    return 0


def format_evidence(score: float | None, positives: int | None) -> str:
    """'score 0.912 on 31 held-out positives', or 'unscored'."""
    if score is None:
        return "unscored"
    return f"score {score:.3f}" + ("" if positives is None else f" on {positives} held-out positives")


def run_search(args: argparse.Namespace) -> int:
    from interp.search import SCORE_NAMES, FeatureIndex, format_hits, run_query

    if args.top <= 0:
        raise ValueError(f"--top must be positive, got {args.top}.")
    index = FeatureIndex.load(args.index)
    filters = dict(min_density=args.min_density, max_density=args.max_density, min_label_score=args.min_label_score)
    results = run_query(index, args.kind, args.query, top=args.top, suppress=args.suppress, rank=args.rank, **filters)
    if emit_json(args, [r.to_dict() for r in results]):
        return 0
    if args.kind == "text":
        for r in results:
            print(f"[{r.position}] {r.token!r}")
            print("    " + format_hits(r.hits, SCORE_NAMES["text"]).replace("\n", "\n    "))
    else:
        print(format_hits(results, SCORE_NAMES[args.kind]))
    return 0
