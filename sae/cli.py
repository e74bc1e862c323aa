"""`sae` command line: train, evaluate, benchmark and convert SAEs. Every option is a field of a config
dataclass (sae.config, sae.command) rendered by sae.options (one definition per option); this module
registers the commands and runs the library functions.

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

from sae.command import (
    STDOUT,
    JsonOutput,
    add_command,
    add_passthrough_command,
    add_process_options,
    add_training_options,
    apply_process_options,
    emit_json,
    peek_options,
)
from sae.config import (
    BENCH_SAE,
    BENCH_TRAIN,
    BENCH_TRAIN_BY_ARCH,
    TRAIN_CONFIG,
    BenchConfig,
    ConvertConfig,
    EvalConfig,
    SyntheticConfig,
    TrainRunConfig,
    sae_config_class,
)
from sae.files import read_json
from sae.options import DataclassOptions
from sae.sweep import expand_sweep, sweep_names

CONFIG_KEYS = {"acts", "arch", "d_in", "sae", "train"}
IGNORED_KEYS = {"format_version", "members", "resolved"}  # written into train_config.json, derived on every run


def build_parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="sae", description="Train, evaluate and convert sparse autoencoders.")
    subparsers = top.add_subparsers(dest="command", required=True)
    add_passthrough_command(
        subparsers, "train", "Train an SAE, or a sweep of SAEs, on an activation dataset.", run_train
    )
    add_command(
        subparsers,
        "eval",
        EvalConfig,
        run_eval,
        help="reconstruction metrics of an SAE on an activation dataset",
        description="Stream an activation dataset through an SAE and report FVU, explained "
        "variance, nmse, L0, L1, cosine, norm ratio, dead and dense fractions.",
        json=True,
        allocator="keep",
    )

    add_passthrough_command(
        subparsers,
        "bench-synthetic",
        "Train an SAE on planted ground-truth features and report MMCS and recovery.",
        run_bench,
    )
    add_command(
        subparsers,
        "convert",
        ConvertConfig,
        run_convert,
        help="convert an SAE between the SAELens and sparsify layouts",
        allocator="keep",
    )
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


def run_train(argv: list[str]) -> int:
    request, nproc = parse_train_args(argv)  # bad arguments are reported once, here, before any process starts
    from sae.distributed import environment_ranks, launch, start, stop  # after the parse: --help imports no torch
    from sae.train import train_sae

    if nproc is not None and nproc > 1:
        if environment_ranks().distributed:
            raise ValueError("--nproc starts torchrun itself; under torchrun (or `sae train --nproc`) leave it out")
        return launch(nproc, _without_nproc(argv))
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


def parse_train_args(argv: list[str]) -> tuple[dict[str, Any], int | None]:
    """`sae train` arguments -> (keyword arguments of `train_sae` with the dataset opened, --nproc)."""
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
    run_defaults = {key: base[key] for key in ("acts", "d_in") if key in base}
    if known.resume is not None:
        run_defaults["out"] = known.resume
    run_options = DataclassOptions(parser, TrainRunConfig, defaults=run_defaults, source=source)
    add_process_options(parser)
    train_options, sae_options = add_training_options(
        parser, arch, train_defaults=base.get("train"), sae_defaults=base.get("sae"), source=source
    )
    args = parser.parse_args(argv)
    run = run_options.build(args)
    apply_process_options(args)
    if run.nproc is not None and run.nproc < 1:
        raise ValueError(f"--nproc must be at least 1, got {run.nproc}")
    if known.resume is not None and Path(run.out).resolve() != Path(known.resume).resolve():
        raise ValueError(
            f"--resume {known.resume} continues the run in that folder; drop --out {run.out} or make it the same"
        )

    from sae.data import ActivationDataset

    dataset = ActivationDataset(run.acts, verify=run.verify)
    d_in = run.d_in if run.d_in is not None else dataset.d_in
    sweep = sae_options.values(args)
    members = expand_sweep(sweep)
    config_class = sae_config_class(arch)
    return {
        "sae_configs": [(arch, config_class.from_dict({"d_in": d_in, **m})) for m in members],
        "batches": dataset,
        "cfg": train_options.build(args),
        "out": Path(run.out),
        "names": sweep_names(members),
        "resume": known.resume is not None,
        # resolved, so that `--resume` finds the dataset from any working directory
        "run_info": {"acts": str(Path(run.acts).resolve()), "arch": arch, "d_in": run.d_in, "sae": sweep},
    }, run.nproc


def _without_nproc(argv: list[str]) -> list[str]:
    """The arguments each torchrun process gets: all but --nproc N, in order."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--nproc")
    return parser.parse_known_args(argv)[1]


# --- sae eval ----------------------------------------------------------------------------
def run_eval(cfg: EvalConfig, output: JsonOutput) -> int:
    import torch

    from sae.data import ActivationDataset
    from sae.io import load_sae
    from sae.metrics import evaluate_sae, format_table

    dataset = ActivationDataset(cfg.acts, verify=cfg.verify)
    sae = load_sae(cfg.sae, device=cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    sae.eval()
    if sae.cfg.d_in != dataset.d_in:
        raise ValueError(
            f"the SAE in {cfg.sae} takes d_in={sae.cfg.d_in} but the activations in {cfg.acts} "
            f"have d_in={dataset.d_in}; evaluate it on activations from the hook it was trained on."
        )
    hook = (getattr(sae, "metadata", None) or {}).get("hook_name")
    if hook and hook != dataset.hook_name:
        print(
            f"sae eval: warning: the SAE was trained on {hook!r}, the activations come from {dataset.hook_name!r}",
            file=sys.stderr,
        )
    tokens = dataset.num_tokens if cfg.tokens is None else min(cfg.tokens, dataset.num_tokens)
    result = evaluate_sae(sae, dataset.sequential(cfg.batch_size, max_tokens=tokens), max_tokens=tokens)
    result = {**result, "acts": str(cfg.acts), "sae": str(cfg.sae), "hook_name": dataset.hook_name}
    if not emit_json(output, result):
        print(format_table(result))
    return 0


# --- sae bench-synthetic -----------------------------------------------------------------
def parse_bench_args(argv: list[str]) -> tuple[dict[str, Any], JsonOutput]:
    """`sae bench-synthetic` arguments -> (keyword arguments of `run_benchmark`, where the JSON goes)."""
    arch = peek_options(argv, "--arch").arch
    parser = argparse.ArgumentParser(
        prog="sae bench-synthetic",
        allow_abbrev=False,
        description="Train an SAE with `sae train`'s trainer on planted ground-truth features and report MMCS, "
        "the fraction of features recovered at cos > 0.9 and > 0.99, FVU and L0, as JSON.",
        epilog=None
        if arch
        else "The SAE's own options (--d-sae, --k, ...) depend on the architecture: `sae bench-synthetic --arch topk "
        "--help` lists those of topk.",
    )
    output_options = DataclassOptions(parser, JsonOutput)
    bench_options = DataclassOptions(parser, BenchConfig)
    add_process_options(parser)
    data_options = DataclassOptions(parser.add_argument_group("planted set"), SyntheticConfig)
    train_options, sae_options = add_training_options(
        parser,
        arch,
        train_defaults={**BENCH_TRAIN, **BENCH_TRAIN_BY_ARCH.get(arch or "", {})},
        sae_defaults=BENCH_SAE.get(arch or "", {}),
        source="sae.config.BENCH_TRAIN, BENCH_SAE",
        sweep=False,
        train_help={
            "batch_size": "Samples per optimizer step, each drawn fresh from the planted set.",
            "steps": "Optimizer steps, each on a fresh batch of samples.",
        },
    )
    args = parser.parse_args(argv)
    apply_process_options(args)
    bench = bench_options.build(args)
    bench.validate()
    data_cfg = data_options.build(args)
    data_cfg.validate()
    return {
        "arch": arch,
        "sae_cfg": sae_config_class(arch).from_dict({"d_in": data_cfg.d, **sae_options.values(args)}),
        "train_cfg": train_options.build(args),
        "data_cfg": data_cfg,
        "eval_tokens": bench.eval_tokens,
        "out": bench.out,
        "with_match_table": bench.match_table,
    }, output_options.build(args)


def run_bench(argv: list[str]) -> int:
    request, output = parse_bench_args(argv)
    from sae.bench_synthetic import run_benchmark  # after the parse: --help imports no torch

    result = run_benchmark(**request)
    if output.json is None:
        print(json.dumps(result, indent=1))
        return 0
    if output.json != STDOUT:  # the full result goes to the file, a one-line summary here
        keys = ("arch", "mmcs", "recovered_0.9", "recovered_0.99", "fvu", "l0", "train_seconds", "train_cpu_seconds")
        print(json.dumps({k: result[k] for k in keys}))
    emit_json(output, result)
    return 0


# --- sae convert -------------------------------------------------------------------------
def run_convert(cfg: ConvertConfig) -> int:
    from sae.io import convert

    sae = convert(cfg.src, cfg.src_format, cfg.dst, cfg.dst_format, force=cfg.force)
    print(
        f"wrote {sae.arch} SAE (d_in={sae.cfg.d_in}, d_sae={sae.cfg.d_sae}) to {cfg.dst} in the {cfg.dst_format} layout"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
