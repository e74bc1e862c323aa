"""`interp capture`, `interp train-sae` and `interp eval`: activations from a model, to disk, into
SAEs as the model runs, or through an SAE spliced back in."""

from __future__ import annotations

import argparse
from pathlib import Path

from interp.cli.options import add_corpus, add_model
from interp.config import EVAL_BATCH_SIZE, EVAL_TOKENS, FORWARD_BATCH_SIZE, MODEL_AUTOCAST
from sae.cli import add_process_options, add_training_options, apply_process_options
from sae.config import TrainConfig
from sae.options import add_device, add_json, add_passthrough_command, add_sae, emit_json, peek_options


def add_hooks(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--hook",
        dest="hooks",
        action="append",
        required=True,
        metavar="NAME",
        help="hook name, e.g. blocks.0.mlp.hook_post; repeat for several (`interp hooks` lists them)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    capture = subparsers.add_parser(
        "capture",
        help="write a model's activations at hooks to activation datasets",
        description="Run a model over a corpus and write the activations at each --hook to OUT/<hook>/ "
        "(manifest.json + safetensors shards). One forward pass serves all hooks and stops "
        "after the deepest one.",
    )
    add_model(capture)
    add_hooks(capture)
    add_corpus(capture)
    capture.add_argument("--split", default="train", help="corpus split: train or heldout (default: train)")
    capture.add_argument("--tokens", type=int, required=True, help="number of tokens to capture")
    capture.add_argument("--out", type=Path, required=True, help="output folder; one dataset per hook inside")
    capture.add_argument("--dtype", default="float32", help="storage dtype: float32 (default), float16 or bfloat16")
    capture.add_argument("--batch-size", type=int, default=FORWARD_BATCH_SIZE, help="context windows per forward pass")
    capture.add_argument(
        "--shard-tokens",
        type=int,
        default=None,
        help="tokens per shard, a multiple of the context length (default: about 64 MiB per shard)",
    )
    capture.add_argument("--seed", type=int, default=0, help="seed of the corpus sequence order")
    capture.add_argument("--resume", action="store_true", help="continue a killed capture from its last complete shard")
    add_device(capture)
    add_process_options(capture)
    capture.set_defaults(run=run_capture_command)

    add_passthrough_command(
        subparsers,
        "train-sae",
        "train SAEs on a model's activations as it runs (no activations on disk)",
        run_train_sae,
    )

    evaluate = subparsers.add_parser(
        "eval",
        help="CE loss recovered, delta CE, KL score and reconstruction metrics of an SAE spliced into a model",
        description="Run the model on held-out corpus text three ways (clean, with the SAE's reconstruction at its "
        "hook, with the hook zero-ablated) and report CE loss recovered, delta CE, KL score and the "
        "reconstruction metrics of the hooked activations.",
    )
    add_model(evaluate)
    add_sae(evaluate)
    evaluate.add_argument("--tokens", type=int, default=EVAL_TOKENS, help=f"tokens to evaluate (default {EVAL_TOKENS})")
    add_corpus(evaluate, default=None)
    evaluate.add_argument(
        "--split",
        default="heldout",
        choices=("heldout", "train", "all"),
        help="corpus split (default heldout: text the model and SAE were not trained on)",
    )
    evaluate.add_argument("--hook", default=None, help="hook to splice at (default: the SAE's metadata hook_name)")
    evaluate.add_argument(
        "--context-length",
        type=int,
        default=None,
        help="tokens per window (default: the SAE's context_size, else the model's)",
    )
    evaluate.add_argument(
        "--batch-size",
        type=int,
        default=EVAL_BATCH_SIZE,
        help=f"windows per forward pass (default {EVAL_BATCH_SIZE})",
    )
    evaluate.add_argument("--seed", type=int, default=0, help="document-order seed of the token windows (default 0)")
    add_device(evaluate)
    add_json(evaluate)
    add_process_options(evaluate)
    evaluate.set_defaults(run=run_eval_command)


def run_capture_command(args: argparse.Namespace) -> int:
    from interp.capture import run_capture

    paths = run_capture(
        args.model,
        args.hooks,
        args.corpus,
        args.tokens,
        args.out,
        dtype=args.dtype,
        batch_size=args.batch_size,
        tokens_per_shard=args.shard_tokens,
        resume=args.resume,
        seed=args.seed,
        split=args.split,
        device=args.device,
    )
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def run_eval_command(args: argparse.Namespace) -> int:
    from interp.evaluate import format_table, run_eval

    result = run_eval(
        args.model,
        args.sae,
        tokens=args.tokens,
        corpus=args.corpus,
        split=args.split,
        hook=args.hook,
        context_length=args.context_length,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
    )
    if not emit_json(args, result):
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
    stream = parser.add_argument_group("activations")
    add_model(stream)
    add_hooks(stream)
    add_corpus(stream)
    stream.add_argument("--split", default="train", help="corpus split (default: train)")
    stream.add_argument(
        "--corpus-seed",
        type=int,
        default=0,
        help="seed of the corpus window order, as `interp capture --seed` (default 0)",
    )
    stream.add_argument("--tokens", type=int, required=True, help="tokens to stream through the model")
    stream.add_argument(
        "--epochs",
        type=int,
        default=1,
        help="passes over the corpus at most, reshuffled each pass; 0: as many as --tokens needs (default 1)",
    )
    stream.add_argument(
        "--forward-batch", type=int, default=FORWARD_BATCH_SIZE, help="context windows per forward pass"
    )
    stream.add_argument(
        "--model-autocast",
        default="none",
        choices=list(MODEL_AUTOCAST),
        help="autocast dtype of the model's forward pass (default none)",
    )
    parser.add_argument("--out", required=True, help="run folder: SAE(s), checkpoints, log.jsonl, train_config.json")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint (give the same arguments)",
    )
    add_process_options(parser)
    train_options, sae_options, _ = add_training_options(parser, arch, argv)
    args = parser.parse_args(argv)
    apply_process_options(args)
    from interp.stream import train_from_model  # after the parse: --help imports no torch

    trained, names = train_from_model(
        args.model,
        args.hooks,
        args.arch,
        sae_options.values(args),
        TrainConfig(**train_options.values(args)),
        args.out,
        tokens=args.tokens,
        corpus=args.corpus,
        split=args.split,
        corpus_seed=args.corpus_seed,
        epochs=args.epochs or None,
        forward_batch=args.forward_batch,
        model_autocast=args.model_autocast,
        resume=args.resume,
    )
    print(f"saved {len(trained)} SAE(s) to {args.out}" + (f": {', '.join(names)}" if len(trained) > 1 else ""))
    return 0
