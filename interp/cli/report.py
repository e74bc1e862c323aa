"""`interp report`, `interp export-neuronpedia` and `interp demo`: what people read, and the whole
pipeline that produces it."""

from __future__ import annotations

import argparse
from pathlib import Path

from interp.cli.features import add_analysis
from interp.config import BUILTIN_CORPORA, DEFAULT_CREATOR, FEATURES_PER_BATCH, PRESETS, DemoConfig, demo_config
from sae.cli import add_process_options


def register(subparsers: argparse._SubParsersAction) -> None:
    report = subparsers.add_parser("report", help="write the HTML feature dashboards of an analysis")
    add_analysis(report)
    report.add_argument("--out", required=True, help="report folder to write (e.g. reports/NAME)")
    report.add_argument(
        "--scorecard", metavar="DIR", help="a scorecard folder (`interp scorecard --out DIR`) to include"
    )
    report.set_defaults(run=run_report)

    export = subparsers.add_parser(
        "export-neuronpedia",
        help="write an analysis in Neuronpedia's data-export layout",
        description="Write the features of an analysis (with labels.json, if present) as "
        "Neuronpedia export files: OUT/<model id>/<layer>-<source set>/.",
    )
    add_analysis(export)
    export.add_argument("--out", required=True, help="output folder")
    export.add_argument("--model-id", default=None, help="Neuronpedia model id (default: the analysis's model name)")
    export.add_argument("--source-set", default=None, help="source set name (default: mono-<architecture>-<d_sae>)")
    export.add_argument(
        "--creator-id",
        default=DEFAULT_CREATOR,
        help=f"id of the Neuronpedia user who owns the records (default {DEFAULT_CREATOR})",
    )
    export.add_argument("--features-per-batch", type=int, default=FEATURES_PER_BATCH, help="features per batch-N file")
    export.set_defaults(run=run_export)

    demo = subparsers.add_parser(
        "demo",
        help="run the end-to-end pipeline on a built-in corpus",
        description="corpus -> tokenizer -> model -> activations -> SAE -> feature analysis -> HTML report, "
        "reusing every artifact that already exists and is complete. Budgets are token counts, so the same "
        "command builds the same artifacts on any machine.",
    )
    demo.add_argument(
        "--preset",
        choices=list(PRESETS),
        default="demo",
        help="demo: about 10 minutes on 2 cores; paper: about an hour (a longer model, 4096 latents on 50M tokens) "
        "(default demo)",
    )
    demo.add_argument(
        "--corpus", choices=list(BUILTIN_CORPORA), default="stdlib", help="built-in corpus (default stdlib)"
    )
    demo.add_argument(
        "--out", type=Path, default=None, help="artifact folder (default artifacts/PRESET[-CORPUS]: artifacts/demo)"
    )
    demo.add_argument(
        "--report", type=Path, default=None, help="report folder (default reports/PRESET[-CORPUS]: reports/demo)"
    )
    demo.add_argument(
        "--capture-tokens",
        type=int,
        default=DemoConfig.capture_tokens,
        help=f"tokens of activations to capture per hook (default {DemoConfig.capture_tokens})",
    )
    add_process_options(demo)
    demo.set_defaults(run=run_demo_command)


def run_report(args: argparse.Namespace) -> int:
    from interp.report.write import write_report

    timings = write_report(args.analysis, args.out, scorecard=args.scorecard)
    print(f"report written in {timings['total_s']:.1f} s: {Path(args.out).resolve() / 'index.html'}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from interp.neuronpedia import export_neuronpedia

    folder = export_neuronpedia(
        args.analysis,
        args.out,
        model_id=args.model_id,
        source_set=args.source_set,
        creator_id=args.creator_id,
        features_per_batch=args.features_per_batch,
    )
    print(f"Neuronpedia export: {folder}")
    return 0


def run_demo_command(args: argparse.Namespace) -> int:
    from interp.demo import run_demo

    if args.capture_tokens <= 0:
        raise ValueError(f"--capture-tokens must be positive, got {args.capture_tokens}.")
    name = args.preset if args.corpus == "stdlib" else f"{args.preset}-{args.corpus}"
    out = args.out if args.out is not None else Path("artifacts") / name
    report = args.report if args.report is not None else Path("reports") / name
    cfg = demo_config(args.preset, args.corpus, out=out, report=report, capture_tokens=args.capture_tokens)
    run_demo(cfg)
    print(f"demo artifacts in {cfg.out}")
    print(f"report: {(cfg.report_dir / 'index.html').resolve()}")
    return 0
