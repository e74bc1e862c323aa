"""`interp capture`, `interp train-sae` and `interp eval`: activations from a model, to disk, into
SAEs as the model runs, or through an SAE spliced back in."""

from __future__ import annotations

import argparse

from interp.activations.config import CaptureConfig, StreamConfig
from interp.interventions.config import EvalConfig
from sae.command import (
    JsonOutput,
    add_command,
    add_passthrough_command,
    add_process_options,
    add_training_options,
    apply_process_options,
    emit_json,
    peek_options,
)
from sae.options import DataclassOptions


def register(subparsers: argparse._SubParsersAction) -> None:
    add_command(
        subparsers,
        "capture",
        CaptureConfig,
        run_capture_command,
        help="write a model's activations at hooks to activation datasets",
        description="Run a model over a corpus and write the activations at each --hook to OUT/<hook>/ "
        "(manifest.json + safetensors shards). One forward pass serves all hooks and stops "
        "after the deepest one.",
        allocator="keep",
    )
    add_passthrough_command(
        subparsers,
        "train-sae",
        "train SAEs on a model's activations as it runs (no activations on disk)",
        run_train_sae,
    )
    add_command(
        subparsers,
        "eval",
        EvalConfig,
        run_eval_command,
        help="CE loss recovered, delta CE, KL score and reconstruction metrics of an SAE spliced into a model",
        description="Run the model on held-out corpus text three ways (clean, with the SAE's reconstruction at its "
        "hook, with the hook zero-ablated) and report CE loss recovered, delta CE, KL score and the "
        "reconstruction metrics of the hooked activations.",
        json=True,
        allocator="keep",
    )


def run_capture_command(cfg: CaptureConfig) -> int:
    from interp.activations.capture import run_capture

    for name, path in run_capture(cfg).items():
        print(f"{name}: {path}")
    return 0


def run_eval_command(cfg: EvalConfig, output: JsonOutput) -> int:
    from interp.interventions.evaluate import format_table, run_eval

    result = run_eval(cfg)
    if not emit_json(output, result):
        print(format_table(result))
    return 0


def run_train_sae(argv: list[str]) -> int:
    arch = peek_options(argv, "--arch").arch
    parser = argparse.ArgumentParser(
        prog="interp train-sae",
        allow_abbrev=False,
        description="Train SAEs on a model's activations as it runs, without writing them to disk. Each --hook gets "
        "its own SAE (or sweep: comma lists such as --k 16,32); all share one forward pass.",
        epilog=None if arch else "Give --arch NAME --help to list that architecture's options.",
    )
    stream_options = DataclassOptions(parser.add_argument_group("activations"), StreamConfig)
    add_process_options(parser)
    train_options, sae_options = add_training_options(parser, arch)
    args = parser.parse_args(argv)
    apply_process_options(args)
    from interp.activations.stream import train_from_model  # after the parse: --help imports no torch

    cfg = stream_options.build(args)
    trained, names = train_from_model(cfg, args.arch, sae_options.values(args), train_options.build(args))
    print(f"saved {len(trained)} SAE(s) to {cfg.out}" + (f": {', '.join(names)}" if len(trained) > 1 else ""))
    return 0
