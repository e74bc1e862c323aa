"""The options several `interp` commands share that only `interp` has, each defined once:

    --model SPEC   a folder written by `interp model train`, a local Hugging Face checkpoint folder,
                   or a Hugging Face model name
    --corpus SPEC  stdlib, a text file or glob, a .jsonl file, or hf:NAME[:CONFIG[:SPLIT]]

Those the `sae` command line has too are defined in sae.options (--sae DIR, --device DEV,
--json [FILE]) and sae.cli (--threads N and the glibc allocator policy of each command, applied
by the entry point).
"""

from __future__ import annotations

import argparse


def add_model(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument(
        "--model",
        required=required,
        metavar="SPEC",
        help="model folder (`interp model train`), local Hugging Face checkpoint folder, or Hugging Face model name",
    )


def add_corpus(parser: argparse.ArgumentParser, *, default: str | None = "stdlib", required: bool = False) -> None:
    shown = "required" if required else f"default: {default}" if default else "default: the model's training corpus"
    parser.add_argument(
        "--corpus",
        default=default,
        required=required,
        metavar="SPEC",
        help="corpus: stdlib, shakespeare, a text file or glob, a .jsonl file (field text), or "
        f"hf:NAME[:CONFIG[:SPLIT]] ({shown})",
    )
