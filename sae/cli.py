"""`sae` command line: train, evaluate, benchmark and convert SAEs. Every option of a config
dataclass is rendered by sae.options (one definition per option); this module only adds the options
that are not config fields and runs the library functions.

    sae train --acts DIR --arch topk --d-sae 4096 --k 32 --batch-size 4096 --steps S --out DIR
    sae train --acts DIR --arch topk --d-sae 4096 --k 16,32,64 --out DIR     # a sweep: DIR/k16, ...
    sae train --config cfg.json --out DIR                                    # defaults from a file
    sae train --resume DIR                                                   # continue a run
    sae train --nproc 4 --acts DIR ...          # data-parallel on 4 processes (torchrun; one GPU each on CUDA)
    torchrun --nproc_per_node 4 -m sae train --acts DIR ...                  # the same, launched by hand
    sae eval --acts DIR --sae DIR [--json FILE]
    sae bench-synthetic --arch topk [--json FILE]
    sae convert --from sparsify SRC --to saelens DST

`sae train` and `sae bench-synthetic` parse in two phases: `--arch` (or the config file's "arch")
picks the architecture, whose config fields then become options (`sae train --arch topk --help`
lists them). Config files hold the layout of the `train_config.json` every run writes: {"acts",
"arch", "d_in", "sae": {field: value or sweep list}, "train": {TrainConfig field: value}};
command-line flags override them. `--resume DIR` reads DIR/train_config.json the same way and
refuses a run whose resolved config differs. `--batch-size` is the global batch in every case;
under N processes each reads batch_size / N rows of every global batch (sae.distributed).

Process settings (`--threads`, and glibc's allocator kept for training, `sae.hardware.tune_allocator`) are applied
here, once, never by the library.

Building the parsers imports no torch (the configs they render are in sae.config), so `--help` answers at
once; each command imports the library when it runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from sae.config import (
    BENCH_SAE,
    BENCH_TRAIN,
    BENCH_TRAIN_BY_ARCH,
    EVAL_TOKENS,
    SAE_CONFIGS,
    TRAIN_CONFIG,
    SyntheticConfig,
    TrainConfig,
    sae_config_class,
)
from sae.files import read_json
from sae.options import (
    STDOUT,
    DataclassOptions,
    add_device,
    add_json,
    add_passthrough_command,
    add_sae,
    emit_json,
    expand_sweep,
    peek_options,
    sweep_names,
)

CONFIG_KEYS = {"acts", "arch", "d_in", "sae", "train"}
IGNORED_KEYS = {"format_version", "members", "resolved"}  # written into train_config.json, derived on every run


def build_parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="sae", description="Train, evaluate and convert sparse autoencoders.")
    subparsers = top.add_subparsers(dest="command", required=True)
    add_passthrough_command(
        subparsers, "train", "Train an SAE, or a sweep of SAEs, on an activation dataset.", run_train
    )
    p = subparsers.add_parser(
        "eval",
        help="reconstruction metrics of an SAE on an activation dataset",
        description="Stream an activation dataset through an SAE and report FVU, explained "
        "variance, nmse, L0, L1, cosine, norm ratio, dead and dense fractions.",
    )
    p.add_argument("--acts", required=True, help="activation dataset folder (manifest.json + shards)")
    add_no_verify(p)
    add_sae(p)
    add_json(p)
    p.add_argument("--tokens", type=int, help="evaluate the first N tokens (default: all)")
    p.add_argument("--batch-size", type=int, default=4096, help="tokens per forward pass (default 4096)")
    add_device(p, default="cuda when available, else cpu")
    add_process_options(p)
    p.set_defaults(run=run_eval)

    add_passthrough_command(
        subparsers,
        "bench-synthetic",
        "Train an SAE on planted ground-truth features and report MMCS and recovery.",
        run_bench,
    )
    parser = subparsers.add_parser("convert", help="convert an SAE between the SAELens and sparsify layouts")
    parser.add_argument(
        "--from", dest="src_format", choices=["saelens", "sparsify"], required=True, help="layout of SRC"
    )
    parser.add_argument("src", metavar="SRC", help="SAE folder to read")
    parser.add_argument(
        "--to", dest="dst_format", choices=["saelens", "sparsify"], required=True, help="layout to write"
    )
    parser.add_argument("dst", metavar="DST", help="folder to write")
    parser.add_argument("--force", action="store_true", help="overwrite an SAE already in DST")
    add_process_options(parser)
    parser.set_defaults(run=run_convert)
    return top


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if "threads" in args:  # the commands parsed here; the pass-through ones apply them themselves
            apply_process_options(args)
        return int(args.run(args) or 0)
    except (ValueError, OSError) as err:  # bad input, or the machine refusing (a full disk, a permission)
        print(f"sae {args.command}: error: {err}", file=sys.stderr)
        return 2


def add_process_options(parser: argparse.ArgumentParser, *, allocator: str = "keep") -> None:
    """--threads, and the glibc allocator policy the command runs under (sae.hardware.tune_allocator:
    "keep" for training and most work, "release" for a long analysis pass). For both command lines."""
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.set_defaults(allocator=allocator)


def apply_process_options(args: argparse.Namespace) -> None:
    """The one place a command line changes process-wide state: torch's thread count (--threads)
    and glibc's allocator (the command's policy)."""
    import torch

    from sae.hardware import tune_allocator

    if args.threads is not None:
        if args.threads <= 0:
            raise ValueError(f"--threads must be positive, got {args.threads}")
        torch.set_num_threads(args.threads)
    tune_allocator(args.allocator)


# --- sae train ---------------------------------------------------------------------------
def add_training_options(
    parser: argparse.ArgumentParser,
    arch: str | None,
    argv: list[str],
    *,
    train_defaults: dict[str, Any] | None = None,
    sae_defaults: dict[str, Any] | None = None,
    source: str = "defaults",
) -> tuple[DataclassOptions, DataclassOptions, type]:
    """--arch, TrainConfig's options and the architecture's config options (comma lists sweep), for
    every command that trains SAEs (`sae train`, `interp train-sae`). Without an architecture the
    parse of `argv` prints the help, or the error that --arch is required."""
    parser.add_argument(
        "--arch",
        default=arch,
        required=arch is None,
        help=f"SAE architecture; registered: {', '.join(sorted(SAE_CONFIGS))}.",
    )
    train_options = DataclassOptions(
        parser.add_argument_group("training"), TrainConfig, defaults=train_defaults, source=source
    )
    if arch is None:
        parser.parse_args(argv)
        raise ValueError("--arch is required")
    config_class = sae_config_class(arch)
    sae_options = DataclassOptions(
        parser.add_argument_group(f"{arch} SAE (comma lists sweep)"),
        config_class,
        defaults=sae_defaults,
        source=source,
        sweep=True,
        skip=("d_in",),
    )
    return train_options, sae_options, config_class


def run_train(argv: list[str]) -> int:
    nproc, argv = _split_nproc(argv)
    request = parse_train_args(argv)  # bad arguments are reported once, here, before any process starts
    from sae.distributed import environment_ranks, launch, start, stop  # after the parse: --help imports no torch
    from sae.train import train_sae

    if nproc is not None and nproc > 1:
        if environment_ranks().distributed:
            raise ValueError("--nproc starts torchrun itself; under torchrun (or `sae train --nproc`) leave it out")
        return launch(nproc, argv)
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
    known = peek_options(argv, "--config", "--resume", "--arch")
    base = _base_config(known.resume, known.config)
    source = base.get("source", "defaults")
    arch = known.arch or base.get("arch")

    parser = argparse.ArgumentParser(
        prog="sae train",
        allow_abbrev=False,
        description="Train an SAE (or a sweep: comma lists such as --k 16,32,64) on an activation dataset.",
        epilog=None
        if arch
        else "The SAE's own options (--d-sae, --k, ...) depend on the architecture: `sae train --arch topk --help` "
        "lists those of topk.",
    )
    parser.add_argument(
        "--acts",
        default=base.get("acts"),
        required="acts" not in base,
        help="Activation dataset folder (manifest.json + shards).",
    )
    add_no_verify(parser)
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
    add_process_options(parser)
    train_options, sae_options, config_class = add_training_options(
        parser, arch, argv, train_defaults=base.get("train"), sae_defaults=base.get("sae"), source=source
    )
    args = parser.parse_args(argv)
    apply_process_options(args)
    if known.resume is not None and Path(args.out).resolve() != Path(known.resume).resolve():
        raise ValueError(
            f"--resume {known.resume} continues the run in that folder; drop --out {args.out} or make it the same"
        )

    from sae.data import ActivationDataset

    dataset = ActivationDataset(args.acts, verify=not args.no_verify)
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
        # resolved, so that `--resume` finds the dataset from any working directory
        "run_info": {"acts": str(Path(args.acts).resolve()), "arch": arch, "d_in": args.d_in, "sae": sweep},
    }


def add_no_verify(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="skip the sha256 check of each shard as it is first read (for huge datasets on trusted storage)",
    )


# --- sae eval ----------------------------------------------------------------------------
def run_eval(args: argparse.Namespace) -> int:
    import torch

    from sae.data import ActivationDataset
    from sae.io import load_sae
    from sae.metrics import evaluate_sae, format_table

    dataset = ActivationDataset(args.acts, verify=not args.no_verify)
    sae = load_sae(args.sae, device=args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    sae.eval()
    if sae.cfg.d_in != dataset.d_in:
        raise ValueError(
            f"the SAE in {args.sae} takes d_in={sae.cfg.d_in} but the activations in {args.acts} "
            f"have d_in={dataset.d_in}; evaluate it on activations from the hook it was trained on."
        )
    hook = (getattr(sae, "metadata", None) or {}).get("hook_name")
    if hook and hook != dataset.hook_name:
        print(
            f"sae eval: warning: the SAE was trained on {hook!r}, the activations come from {dataset.hook_name!r}",
            file=sys.stderr,
        )
    tokens = dataset.num_tokens if args.tokens is None else min(args.tokens, dataset.num_tokens)
    result = evaluate_sae(sae, dataset.sequential(args.batch_size, max_tokens=tokens), max_tokens=tokens)
    result = {**result, "acts": str(args.acts), "sae": str(args.sae), "hook_name": dataset.hook_name}
    if not emit_json(args, result):
        print(format_table(result))
    return 0


# --- sae bench-synthetic -----------------------------------------------------------------
def parse_bench_args(argv: list[str]) -> tuple[dict[str, Any], argparse.Namespace]:
    """`sae bench-synthetic` arguments -> (keyword arguments of `run_benchmark`, the parsed arguments)."""
    known = peek_options(argv, "--arch")
    parser = argparse.ArgumentParser(
        prog="sae bench-synthetic",
        allow_abbrev=False,
        description="Train an SAE with `sae train`'s trainer on planted ground-truth features and report MMCS, "
        "the fraction of features recovered at cos > 0.9 and > 0.99, FVU and L0, as JSON.",
        epilog=None
        if known.arch
        else "The SAE's own options (--d-sae, --k, ...) depend on the architecture: `sae bench-synthetic --arch topk "
        "--help` lists those of topk.",
    )
    parser.add_argument("--arch", required=True, help=f"Architecture; registered: {', '.join(sorted(SAE_CONFIGS))}.")
    add_json(parser)
    parser.add_argument("--out", help="Also save the trained SAE (and the run's log) in this folder.")
    parser.add_argument(
        "--data-seed",
        type=int,
        default=SyntheticConfig.seed,
        help=f"Seed of the planted features and of the batch stream (default {SyntheticConfig.seed}).",
    )
    parser.add_argument(
        "--eval-tokens", type=int, default=EVAL_TOKENS, help=f"Held-out samples for FVU and L0 (default {EVAL_TOKENS})."
    )
    parser.add_argument(
        "--match-table",
        action="store_true",
        help="Include the per-feature match table (best latent and cosine of every planted feature).",
    )
    add_process_options(parser)
    data_options = DataclassOptions(parser.add_argument_group("planted set"), SyntheticConfig, skip=("seed",))
    train_defaults = {**BENCH_TRAIN, **BENCH_TRAIN_BY_ARCH.get(known.arch or "", {})}
    train_options = DataclassOptions(
        parser.add_argument_group("training"),
        TrainConfig,
        defaults=train_defaults,
        source="sae.config.BENCH_TRAIN",
        help={
            "batch_size": "Samples per optimizer step, each drawn fresh from the planted set.",
            "steps": "Optimizer steps, each on a fresh batch of samples.",
        },
    )
    if known.arch is None:
        parser.parse_args(argv)  # prints the help, or the error that --arch is required
        raise ValueError("--arch is required")
    config_class = sae_config_class(known.arch)
    sae_options = DataclassOptions(
        parser.add_argument_group(f"{known.arch} SAE"),
        config_class,
        defaults=BENCH_SAE.get(known.arch, {}),
        source="sae.config.BENCH_SAE",
        skip=("d_in",),
    )
    args = parser.parse_args(argv)
    apply_process_options(args)
    if args.eval_tokens <= 0:
        raise ValueError(f"--eval-tokens must be positive, got {args.eval_tokens}")
    data_cfg = SyntheticConfig(**data_options.values(args), seed=args.data_seed)
    data_cfg.validate()
    return {
        "arch": args.arch,
        "sae_cfg": config_class.from_dict({"d_in": data_cfg.d, **sae_options.values(args)}),
        "train_cfg": TrainConfig(**train_options.values(args)),
        "data_cfg": data_cfg,
        "eval_tokens": args.eval_tokens,
        "out": args.out,
        "with_match_table": args.match_table,
    }, args


def run_bench(argv: list[str]) -> int:
    request, args = parse_bench_args(argv)
    from sae.bench_synthetic import run_benchmark  # after the parse: --help imports no torch

    result = run_benchmark(**request)
    if args.json is None:
        print(json.dumps(result, indent=1))
        return 0
    if args.json != STDOUT:  # the full result goes to the file, a one-line summary here
        keys = ("arch", "mmcs", "recovered_0.9", "recovered_0.99", "fvu", "l0", "train_seconds", "train_cpu_seconds")
        print(json.dumps({k: result[k] for k in keys}))
    emit_json(args, result)
    return 0


# --- sae convert -------------------------------------------------------------------------
def run_convert(args: argparse.Namespace) -> int:
    from sae.io import convert

    sae = convert(args.src, args.src_format, args.dst, args.dst_format, force=args.force)
    print(
        f"wrote {sae.arch} SAE (d_in={sae.cfg.d_in}, d_sae={sae.cfg.d_sae}) to {args.dst} in the {args.dst_format} "
        "layout"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
