"""`interp report`, `interp export-neuronpedia` and `interp demo`: what people read, and the whole
pipeline that produces it."""

from __future__ import annotations

import argparse
from pathlib import Path

from interp.app.config import DemoOptions, ExportConfig, ReportConfig
from sae.command import add_command


def register(subparsers: argparse._SubParsersAction) -> None:
    add_command(subparsers, "report", ReportConfig, run_report, help="write the HTML feature dashboards of an analysis")
    add_command(
        subparsers,
        "export-neuronpedia",
        ExportConfig,
        run_export,
        help="write an analysis in Neuronpedia's data-export layout",
        description="Write the features of an analysis (with labels.json, if present) as Neuronpedia export files: "
        "OUT/<model id>/<layer>-<source set>/.",
    )
    add_command(
        subparsers,
        "demo",
        DemoOptions,
        run_demo_command,
        help="run the end-to-end pipeline on a built-in corpus",
        description="corpus -> tokenizer -> model -> activations -> SAE -> feature analysis -> HTML report, "
        "reusing every artifact that already exists and is complete. Budgets are token counts, so the same "
        "command builds the same artifacts on any machine.",
        allocator="keep",
    )


def run_report(cfg: ReportConfig) -> int:
    from interp.app.report.write import write_report

    timings = write_report(cfg)
    print(f"report written in {timings['total_s']:.1f} s: {Path(cfg.out).resolve() / 'index.html'}")
    return 0


def run_export(cfg: ExportConfig) -> int:
    from interp.app.neuronpedia import export_neuronpedia

    print(f"Neuronpedia export: {export_neuronpedia(cfg)}")
    return 0


def run_demo_command(options: DemoOptions) -> int:
    from interp.app.demo import run_demo

    cfg = options.config()
    run_demo(cfg)
    print(f"demo artifacts in {cfg.out}")
    print(f"report: {(cfg.report_dir / 'index.html').resolve()}")
    return 0
