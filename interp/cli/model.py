"""`interp model train`, `interp model init`, `interp model sample` and `interp hooks`."""

from __future__ import annotations

import argparse

from interp.cli.options import add_corpus, add_model
from interp.config import ModelConfig, ModelTrainConfig
from sae.cli import add_process_options
from sae.options import DataclassOptions, add_device

MODEL_FIELDS_SET_ELSEWHERE = ("d_vocab", "act_fn", "normalization_type", "seed")  # tokenizer, fixed, --seed


def register(subparsers: argparse._SubParsersAction) -> None:
    model = subparsers.add_parser("model", help="train a small transformer, or sample from a model")
    commands = model.add_subparsers(dest="model_command", required=True)

    train = commands.add_parser("train", help="train the tokenizer and a small transformer on a corpus")
    train.add_argument("--out", required=True, help="folder to write the model into")
    train.add_argument(
        "--overwrite", action="store_true", help="replace a model already in --out (what was built on it goes stale)"
    )
    add_corpus(train)
    add_device(train)
    add_process_options(train)
    train_options = DataclassOptions(train.add_argument_group("training"), ModelTrainConfig, skip=("corpus", "device"))
    model_options = DataclassOptions(train.add_argument_group("model"), ModelConfig, skip=MODEL_FIELDS_SET_ELSEWHERE)
    train.set_defaults(run=lambda args: run_train(args, train_options, model_options))

    init = commands.add_parser(
        "init", help="save a trained model folder as it was at initialisation (the random-weights control)"
    )
    init.add_argument("--like", required=True, metavar="DIR", help="a model folder saved by `interp model train`")
    init.add_argument("--out", required=True, help="folder to write the untrained model into")
    init.add_argument("--overwrite", action="store_true", help="replace a model already in --out")
    init.set_defaults(run=run_init)

    sample = commands.add_parser("sample", help="continue a prompt with a model")
    add_model(sample)
    sample.add_argument("--prompt", required=True, help="text to continue")
    sample.add_argument("--tokens", type=int, default=64, help="number of tokens to generate (default 64)")
    sample.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default 0)")
    sample.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    add_device(sample)
    sample.set_defaults(run=run_sample)

    hooks = subparsers.add_parser("hooks", help="list every hook name of a model with its activation shape")
    add_model(hooks)
    add_device(hooks)
    hooks.set_defaults(run=run_hooks)


def run_train(args: argparse.Namespace, train_options: DataclassOptions, model_options: DataclassOptions) -> int:
    from interp.model_training import train_model
    from interp.training_record import TrainingRecord

    cfg = ModelTrainConfig(**train_options.values(args), corpus=args.corpus, device=args.device or "cpu")
    train_model(cfg, ModelConfig(**model_options.values(args)), args.out, overwrite=args.overwrite)
    summary = TrainingRecord.load(args.out).summary
    print(
        f"saved {args.out}: {summary['tokens']:,} tokens in {summary['train_seconds']:.0f} s of training steps "
        f"({summary['tokens_per_second']:,.0f} tokens/s; {summary['wall_seconds']:.0f} s in all), "
        f"train loss {summary['final_train_loss']:.3f}, "
        f"held-out loss {summary['heldout_loss']:.3f} nats/token"
    )
    compressors = ", ".join(f"{name} {bpb:.3f}" for name, bpb in summary["compressors_bits_per_byte"].items())
    print(
        f"held-out bits per byte: model {summary['heldout_bits_per_byte']:.3f}; on the same "
        f"{summary['heldout_bytes']:,} bytes {compressors}"
    )
    return 0


def run_init(args: argparse.Namespace) -> int:
    from interp.model_training import initial_model

    initial_model(args.like, args.out, overwrite=args.overwrite)
    print(f"saved {args.out}: {args.like} at initialisation (same config, seed and tokenizer, no training)")
    return 0


def run_sample(args: argparse.Namespace) -> int:
    from interp.model import load_model, sample_text

    loaded = load_model(args.model, device=args.device)
    text = sample_text(
        loaded.bridge,
        loaded.tokenizer,
        args.prompt,
        args.tokens,
        context_length=loaded.context_length,
        temperature=args.temperature,
        seed=args.seed,
    )
    print(args.prompt + text)
    return 0


def run_hooks(args: argparse.Namespace) -> int:
    from interp.hooks import hook_shapes
    from interp.model import load_model

    loaded = load_model(args.model, device=args.device)
    shapes = hook_shapes(loaded)
    width = max(len(name) for name in shapes)
    print(f"# {loaded.name}: {len(shapes)} hooks, activation shapes for a [1, {loaded.context_length}] input")
    for name, shape in shapes.items():
        print(f"{name:<{width}}  {list(shape) if shape is not None else '(does not fire on a plain forward pass)'}")
    return 0
