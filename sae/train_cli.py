"""`sae train`: the command line of the trainer, generated from TrainConfig and the architecture's config.

    sae train --acts DIR --arch topk --d-sae 4096 --k 32 --batch-size 4096 --steps S --out DIR
    sae train --acts DIR --arch topk --d-sae 4096 --k 16,32,64 --out DIR     # a sweep: DIR/k16, ...
    sae train --config cfg.json --out DIR                                    # defaults from a file
    sae train --resume DIR                                                   # continue a run
    sae train --nproc 4 --acts DIR ...          # data-parallel on 4 processes (torchrun; one GPU each on CUDA)
    torchrun --nproc_per_node 4 -m sae train --acts DIR ...                  # the same, launched by hand

The parse has two phases: `--arch` (or the config file's "arch") picks the architecture, whose config
fields then become options (`sae train --arch topk --help` lists them). Config files hold the layout
of the `train_config.json` every run writes: {"acts", "arch", "d_in", "sae": {field: value or sweep
list}, "train": {TrainConfig field: value}}; command-line flags override them. `--resume DIR` reads
DIR/train_config.json the same way and refuses a run whose resolved config differs.
`--batch-size` is the global batch in every case; under N processes each reads batch_size / N rows
of every global batch (sae.distributed). A run resumes on any number of processes.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import sae.architectures as architectures
from sae.config import DataclassOptions, expand_sweep, read_json, sweep_names
from sae.data import ActivationDataset
from sae.distributed import environment_ranks, launch, start, stop
from sae.train import TRAIN_CONFIG, TrainConfig, train_sae

CONFIG_KEYS = {"acts", "arch", "d_in", "sae", "train"}
IGNORED_KEYS = {"format_version", "members", "resolved"}  # written into train_config.json, derived on every run


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    # The real parser is built after --arch is known (see `parse_train_args`); this one hands it
    # every argument: '+' prefixes mean no '-' option is claimed here.
    parser = subparsers.add_parser(
        "train", help="Train an SAE, or a sweep of SAEs, on an activation dataset.", prefix_chars="+", add_help=False
    )
    parser.add_argument("argv", nargs=argparse.REMAINDER)
    parser.set_defaults(run=lambda args: run(args.argv))


def run(argv: list[str]) -> int:
    nproc, argv = _split_nproc(argv)
    if nproc is not None and nproc > 1:
        if environment_ranks().distributed:
            raise ValueError("--nproc starts torchrun itself; under torchrun (or `sae train --nproc`) leave it out")
        parse_train_args(argv)  # bad arguments are reported once, here, before any process starts
        return launch(nproc, argv)
    request = parse_train_args(argv)
    ranks, _ = start(request["cfg"].device)
    try:
        trained = train_sae(**request, ranks=ranks)
    finally:
        stop()
    if ranks.is_main:
        out = request["out"]
        print(
            f"saved {len(trained)} SAE(s) to {out}" + (f": {', '.join(request['names'])}" if len(trained) > 1 else "")
        )
    return 0


def _split_nproc(argv: list[str]) -> tuple[int | None, list[str]]:
    """(--nproc N, the other arguments in order)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--nproc", type=int)
    known, rest = parser.parse_known_args(argv)
    if known.nproc is not None and known.nproc < 1:
        raise ValueError(f"--nproc must be at least 1, got {known.nproc}")
    return known.nproc, rest


def _base_config(resume: str | None, config: str | None) -> dict[str, Any]:
    """Defaults from --resume DIR/train_config.json, then --config FILE on top (section by section)."""
    base: dict[str, Any] = {}
    sources = []
    if resume is not None:
        path = Path(resume) / TRAIN_CONFIG
        if not path.is_file():
            raise FileNotFoundError(
                f"cannot resume: {path} does not exist; --resume takes the --out folder of an earlier `sae train` run"
            )
        sources.append(path)
    if config is not None:
        sources.append(Path(config))
    for path in sources:
        data = read_json(path)
        unknown = sorted(set(data) - CONFIG_KEYS - IGNORED_KEYS)
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {unknown}; a config file holds {sorted(CONFIG_KEYS)}")
        if data.get("arch", base.get("arch")) != base.get("arch"):
            base.pop("sae", None)  # another architecture's fields do not carry over
        for key in sorted(CONFIG_KEYS & set(data)):
            if key in ("sae", "train"):
                if not isinstance(data[key], dict):
                    raise ValueError(f"{path}: {key!r} must be a JSON object of field: value")
                base[key] = {**base.get(key, {}), **data[key]}
            else:
                base[key] = data[key]
        base["source"] = str(path)
    return base


def parse_train_args(argv: list[str]) -> dict[str, Any]:
    """`sae train` arguments -> keyword arguments of `train_sae` (plus the dataset opened)."""
    first = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for name in ("--config", "--resume", "--arch"):
        first.add_argument(name)
    known, _ = first.parse_known_args(argv)
    base = _base_config(known.resume, known.config)
    source = base.get("source", "defaults")
    arch = known.arch or base.get("arch")

    parser = argparse.ArgumentParser(
        prog="sae train",
        allow_abbrev=False,
        description="Train an SAE (or a sweep: comma lists such as --k 16,32,64) on an activation dataset.",
        epilog=None if arch else "Give --arch NAME --help to list that architecture's options.",
    )
    parser.add_argument(
        "--acts",
        default=base.get("acts"),
        required="acts" not in base,
        help="Activation dataset folder (manifest.json + shards).",
    )
    parser.add_argument(
        "--arch",
        default=arch,
        required=arch is None,
        help=f"Architecture; registered: {', '.join(sorted(architectures.ARCHITECTURES))}.",
    )
    parser.add_argument(
        "--out",
        default=known.resume,
        required=known.resume is None,
        help="Run folder: the trained SAE(s), checkpoints, log.jsonl, train_config.json.",
    )
    parser.add_argument("--config", help="JSON file of defaults (the layout of train_config.json); flags override it.")
    parser.add_argument("--resume", metavar="DIR", help="Continue the run in DIR from its last checkpoint.")
    parser.add_argument(
        "--d-in",
        type=int,
        default=base.get("d_in"),
        help="Input width; default: the dataset's. Must match the dataset.",
    )
    parser.add_argument(
        "--nproc",
        type=int,
        help="Data-parallel processes on this machine, started through torchrun "
        "(gloo on CPU, nccl with one GPU each on CUDA); --batch-size stays the global batch.",
    )
    train_options = DataclassOptions(
        parser.add_argument_group("training"), TrainConfig, defaults=base.get("train"), source=source
    )
    if arch is None:
        parser.parse_args(argv)  # prints the help, or the error that --arch is required
        raise ValueError("--arch is required")
    config_class = architectures.get_architecture(arch).config_class
    sae_options = DataclassOptions(
        parser.add_argument_group(f"{arch} SAE (comma lists sweep)"),
        config_class,
        defaults=base.get("sae"),
        source=source,
        sweep=True,
        skip=("d_in",),
    )
    args = parser.parse_args(argv)
    if known.resume is not None and Path(args.out).resolve() != Path(known.resume).resolve():
        raise ValueError(
            f"--resume {known.resume} continues the run in that folder; drop --out {args.out} or make it the same"
        )

    dataset = ActivationDataset(args.acts)
    d_in = args.d_in if args.d_in is not None else dataset.d_in
    sweep = sae_options.values(args)
    members = expand_sweep(sweep)
    return {
        "sae_configs": [(arch, config_class.from_dict({"d_in": d_in, **m})) for m in members],
        "batches": dataset,
        "cfg": TrainConfig(**train_options.values(args)),
        "out": Path(args.out),
        "names": sweep_names(members),
        "resume": known.resume is not None,
        "run_info": {"acts": str(args.acts), "arch": arch, "d_in": args.d_in, "sae": sweep},
    }
