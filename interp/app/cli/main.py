"""`interp` command line (`python -m interp` is the same): the command families in the order
`interp --help` lists them. Each family module registers its commands; the process-wide options
(`--threads`, the allocator) are applied here, once, before a command runs.

Building the parser imports no torch: every command's options come from its config, a torch-free dataclass
in the config module of its room (interp.<room>/config.py, sae.config), rendered by sae.options; each
command imports the library when it runs, so `--help` answers at once (tests/test_cli_help.py)."""

from __future__ import annotations

import argparse
import sys

from interp.app.cli import activations, features, live, model, report, scorecard
from sae.command import apply_process_options

FAMILIES = (model, activations, features, scorecard, report, live)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="interp", description="Models, activations, feature analysis and reports.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for family in FAMILIES:
        family.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if "threads" in args:  # pass-through commands (train-sae) apply them after their own parse
            apply_process_options(args)
        return int(args.run(args) or 0)
    except (ValueError, OSError) as err:  # bad input, or the machine refusing (a full disk, a permission)
        print(f"interp {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
