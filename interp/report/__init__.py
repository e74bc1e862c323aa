"""HTML dashboards of an analysis artifact: `interp report --analysis DIR --out reports/NAME`.

See `interp.report.write` for the folder a report is, and `interp.report.data` for what it shows.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from interp.report.write import write_report

__all__ = ["register_cli", "write_report"]


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="write the HTML feature dashboards of an analysis")
    parser.add_argument("--analysis", required=True, help="analysis folder written by `interp analyze`")
    parser.add_argument("--out", required=True, help="report folder to write (e.g. reports/NAME)")
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    timings = write_report(args.analysis, args.out)
    print(f"report written in {timings['total_s']:.1f} s: {Path(args.out).resolve() / 'index.html'}")
    return 0
