"""`interp` command line. Each module with a CLI face exposes `register_cli(subparsers)`;
this file only lists them, so adding a command never touches another command's code."""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules that add subcommands, in the order `interp --help` lists them.
COMMAND_MODULES: list[str] = [
    "interp.model",
    "interp.capture",
    "interp.stream",
    "interp.evaluate",
    "interp.demo",
    "interp.analysis",
    "interp.report",
    "interp.labels",
    "interp.neurons",
    "interp.search",
    "interp.neuronpedia",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="interp", description="Models, activations, feature analysis and reports.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register_cli(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        print(f"interp {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
