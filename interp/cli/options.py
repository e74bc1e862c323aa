"""The options several `interp` commands share, each defined once, and what the entry point does
with the process-wide ones.

    --model SPEC   a folder written by `interp model train`, a local Hugging Face checkpoint folder,
                   or a Hugging Face model name
    --sae DIR      an SAE folder (SAELens or sparsify layout)
    --corpus SPEC  stdlib, a text file or glob, a .jsonl file, or hf:NAME[:CONFIG[:SPLIT]]
    --device DEV   a torch device
    --json [FILE]  the result as JSON: to FILE, or to standard output in place of the text
    --threads N    torch CPU threads (a process setting, applied by the entry point with the glibc
                   allocator policy of the command)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from sae.files import write_text
from sae.hardware import tune_allocator

STDOUT = "-"


def add_model(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument(
        "--model",
        required=required,
        metavar="SPEC",
        help="model folder (`interp model train`), local Hugging Face checkpoint folder, or Hugging Face model name",
    )


def add_sae(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sae", required=True, metavar="DIR", help="SAE folder (SAELens or sparsify layout)")


def add_corpus(parser: argparse.ArgumentParser, *, default: str | None = "stdlib", required: bool = False) -> None:
    shown = "required" if required else f"default: {default}" if default else "default: the model's training corpus"
    parser.add_argument(
        "--corpus",
        default=default,
        required=required,
        metavar="SPEC",
        help=f"corpus: stdlib, a text file or glob, a .jsonl file (field text), or hf:NAME[:CONFIG[:SPLIT]] ({shown})",
    )


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda:0 (default: the model's)")


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        nargs="?",
        const=STDOUT,
        metavar="FILE",
        help="the result as JSON: written to FILE, or printed in place of the text when no FILE is given",
    )


def add_process_options(parser: argparse.ArgumentParser, *, allocator: str = "keep") -> None:
    """--threads, and the glibc allocator policy the command runs under (sae.hardware.tune_allocator:
    "keep" for training and most work, "release" for the analysis pass)."""
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.set_defaults(allocator=allocator)


def apply_process_options(args: argparse.Namespace) -> None:
    """The one place `interp` changes process-wide state: torch's thread count (--threads) and
    glibc's allocator (the command's policy)."""
    if args.threads is not None:
        if args.threads <= 0:
            raise ValueError(f"--threads must be positive, got {args.threads}")
        torch.set_num_threads(args.threads)
    tune_allocator(args.allocator)


def emit_json(args: argparse.Namespace, result: Any) -> bool:
    """Write `result` where --json says; True when it went to standard output (print nothing else)."""
    if args.json is None:
        return False
    if args.json == STDOUT:
        json.dump(result, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return True
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    write_text(args.json, json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {args.json}")
    return False
