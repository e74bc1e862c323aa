"""What both command lines (`sae` and `interp`) share besides each command's own config: the options
every command may take (--json, --threads), the one place a command changes process-wide state, and
the two-phase parse of commands whose options depend on one of them (`--arch` decides which config
fields become options).

Each is a config dataclass rendered by sae.options like every other, so that each option is defined once.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sae.config import SAE_CONFIGS, TrainConfig, sae_config_class
from sae.files import write_text
from sae.options import DataclassOptions

STDOUT = "-"


def json_target(value: str) -> str:
    """--json's argument, checked when parsed: a file path (not a folder) or STDOUT."""
    if value != STDOUT and Path(value).is_dir():
        raise ValueError(f"{value} is a folder; give a file path such as {Path(value) / 'result.json'}")
    return value


@dataclass
class JsonOutput:
    """Where a command's result goes as JSON."""

    json: str | None = field(
        default=None,
        metadata={
            "option": "--json",
            "metavar": "FILE",
            "const": STDOUT,
            "check": json_target,
            "help": "the result as JSON: written to FILE, or printed in place of the text when no FILE is given",
        },
    )


@dataclass
class ProcessOptions:
    """Process-wide settings the entry point applies before a command runs."""

    threads: int | None = field(
        default=None, metadata={"option": "--threads", "help": "torch CPU threads; none: torch's choice"}
    )


@dataclass
class ArchChoice:
    """Which architecture a training command trains; its config's fields become options once it is known."""

    arch: str = field(metadata={"option": "--arch", "help": "SAE architecture; registered: " + ", ".join(SAE_CONFIGS)})


def add_process_options(parser: argparse.ArgumentParser, *, allocator: str = "keep") -> None:
    """--threads, and the glibc allocator policy the command runs under (sae.hardware.tune_allocator:
    "keep" for training and most work, "release" for a long analysis pass)."""
    DataclassOptions(parser, ProcessOptions)
    parser.set_defaults(allocator=allocator)


def apply_process_options(args: argparse.Namespace) -> None:
    """The one place a command line changes process-wide state: torch's thread count (--threads)
    and glibc's allocator (the command's policy)."""
    import torch

    from sae.hardware import tune_allocator

    if args.threads is not None:
        cpus = os.cpu_count() or 1
        if not 1 <= args.threads <= cpus:
            raise ValueError(f"--threads must be between 1 and this machine's {cpus} CPUs, got {args.threads}")
        torch.set_num_threads(args.threads)
    tune_allocator(args.allocator)


def emit_json(output: JsonOutput, result: Any) -> bool:
    """Write `result` where --json says; True when it went to standard output (print nothing else).
    NaN and infinity are written as JavaScript reads them (NaN, Infinity)."""
    if output.json is None:
        return False
    text = json.dumps(result, indent=1, ensure_ascii=False)
    if output.json == STDOUT:
        print(text)
        return True
    Path(output.json).parent.mkdir(parents=True, exist_ok=True)
    write_text(output.json, text + "\n")
    print(f"wrote {output.json}")
    return False


def add_command(
    subparsers: argparse._SubParsersAction,
    name: str,
    config: type,
    run: Callable[..., int],
    *,
    help: str,
    description: str | None = None,
    json: bool = False,
    allocator: str | None = None,
) -> argparse.ArgumentParser:
    """A command whose options are the fields of the dataclass `config`: `run(cfg)` gets the config the
    arguments give (`run(cfg, output)` with the JsonOutput too when `json`). allocator: the command takes
    --threads and runs under this glibc allocator policy (`add_process_options`)."""
    parser = subparsers.add_parser(name, help=help, description=description)
    options = DataclassOptions(parser, config)
    output = DataclassOptions(parser, JsonOutput) if json else None
    if allocator is not None:
        add_process_options(parser, allocator=allocator)
    if output is None:
        parser.set_defaults(run=lambda args: run(options.build(args)))
    else:
        parser.set_defaults(run=lambda args: run(options.build(args), output.build(args)))
    return parser


def peek_options(argv: list[str], *names: str) -> argparse.Namespace:
    """The values of a few options, read ahead of the full parse (whose options depend on them).
    Every other argument is left alone."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for name in names:
        parser.add_argument(name)
    known, _ = parser.parse_known_args(argv)
    return known


def add_passthrough_command(subparsers: argparse._SubParsersAction, name: str, help_text: str, run) -> None:
    """A subcommand whose own parser is built by `run(argv)` once `peek_options` has read what its
    options depend on. The subparser only hands over every argument: its option prefix is '+', so
    it claims no '-' option (`--help` included) for itself."""
    parser = subparsers.add_parser(name, help=help_text, prefix_chars="+", add_help=False)
    parser.add_argument("argv", nargs=argparse.REMAINDER)
    parser.set_defaults(run=lambda args: run(args.argv))


def add_training_options(
    parser: argparse.ArgumentParser,
    arch: str | None,
    *,
    train_defaults: dict[str, Any] | None = None,
    sae_defaults: dict[str, Any] | None = None,
    source: str = "defaults",
    sweep: bool = True,
    train_help: dict[str, str] | None = None,
) -> tuple[DataclassOptions, DataclassOptions | None]:
    """--arch, TrainConfig's options and, once the architecture is known, its config's options (comma
    lists sweep when `sweep`), for every command that trains SAEs (`sae train`, `sae bench-synthetic`,
    `interp train-sae`). Without an architecture --arch is a required option, so the parse prints the
    help or the error that it is missing."""
    DataclassOptions(parser, ArchChoice, defaults=None if arch is None else {"arch": arch})
    train_options = DataclassOptions(
        parser.add_argument_group("training"), TrainConfig, defaults=train_defaults, source=source, help=train_help
    )
    if arch is None:
        return train_options, None
    sae_options = DataclassOptions(
        parser.add_argument_group(f"{arch} SAE" + (" (comma lists sweep)" if sweep else "")),
        sae_config_class(arch),
        defaults=sae_defaults,
        source=source,
        sweep=sweep,
        skip=("d_in",),
    )
    return train_options, sae_options


# --- sae train ---------------------------------------------------------------------------
