"""`interp model train`, `interp model init`, `interp model sample` and `interp hooks`."""

from __future__ import annotations

import argparse

from interp.activations.config import HooksConfig
from interp.model.config import InitConfig, ModelConfig, ModelFolder, ModelTrainConfig, SampleConfig
from sae.command import add_command, add_process_options
from sae.options import DataclassOptions

MODEL_FIELDS_SET_ELSEWHERE = ("d_vocab", "act_fn", "normalization_type", "seed")  # tokenizer, fixed, --seed


def register(subparsers: argparse._SubParsersAction) -> None:
    model = subparsers.add_parser("model", help="train a small transformer, or sample from a model")
    commands = model.add_subparsers(dest="model_command", required=True)

    train = commands.add_parser("train", help="train the tokenizer and a small transformer on a corpus")
    folder = DataclassOptions(train, ModelFolder)
    add_process_options(train)
    train_options = DataclassOptions(train.add_argument_group("training"), ModelTrainConfig)
    model_options = DataclassOptions(train.add_argument_group("model"), ModelConfig, skip=MODEL_FIELDS_SET_ELSEWHERE)
    train.set_defaults(
        run=lambda args: run_train(folder.build(args), train_options.build(args), model_options.build(args))
    )

    add_command(
        commands,
        "init",
        InitConfig,
        run_init,
        help="save a trained model folder as it was at initialisation (the random-weights control)",
    )
    add_command(commands, "sample", SampleConfig, run_sample, help="continue a prompt with a model")
    add_command(
        subparsers, "hooks", HooksConfig, run_hooks, help="list every hook name of a model with its activation shape"
    )


def run_train(folder: ModelFolder, cfg: ModelTrainConfig, model_cfg: ModelConfig) -> int:
    from interp.model.record import TrainingRecord
    from interp.model.training import train_model

    train_model(cfg, model_cfg, folder.out, overwrite=folder.overwrite)
    summary = TrainingRecord.load(folder.out).summary
    print(
        f"saved {folder.out}: {summary['tokens']:,} tokens in {summary['train_seconds']:.0f} s of training steps "
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


def run_init(cfg: InitConfig) -> int:
    from interp.model.training import initial_model

    initial_model(cfg)
    print(f"saved {cfg.out}: {cfg.like} at initialisation (same config, seed and tokenizer, no training)")
    return 0


def run_sample(cfg: SampleConfig) -> int:
    from interp.model.transformer import load_model, sample_text

    loaded = load_model(cfg.model, device=cfg.device)
    text = sample_text(
        loaded.bridge,
        loaded.tokenizer,
        cfg.prompt,
        cfg.tokens,
        context_length=loaded.context_length,
        temperature=cfg.temperature,
        seed=cfg.seed,
    )
    print(cfg.prompt + text)
    return 0


def run_hooks(cfg: HooksConfig) -> int:
    from interp.activations.hooks import hook_shapes
    from interp.model.transformer import load_model

    loaded = load_model(cfg.model, device=cfg.device)
    shapes = hook_shapes(loaded)
    width = max(len(name) for name in shapes)
    print(f"# {loaded.name}: {len(shapes)} hooks, activation shapes for a [1, {loaded.context_length}] input")
    for name, shape in shapes.items():
        print(f"{name:<{width}}  {list(shape) if shape is not None else '(does not fire on a plain forward pass)'}")
    return 0
