"""One SAE per architecture on one activation dataset: held-out FVU, L0, dead fraction, speed, CE.

    .venv/bin/python scripts/arch_table.py [--acts artifacts/demo/activations/blocks.0.mlp.hook_post]
        [--model artifacts/demo/model | none] [--archs relu,topk,batchtopk,jumprelu,gated,matryoshka]
        [--steps 300] [--batch-size 4096] [--d-sae 1024] [--k 32] [--heldout-tokens 32768]
        [--set ARCH.FIELD=VALUE ...] [--lr LR] [--threads 1] [--ce-tokens 16384] [--out DIR] [--json FILE]

For each architecture, in turn:
1. train with the project's trainer (`sae.train.train_sae`, its defaults: learning rate from the
   width, activation normalisation, b_dec from the geometric median) on shuffled batches of the
   dataset's first rows; the last `--heldout-tokens` rows (the end of the capture: whole context
   windows when it is a multiple of the context length) are never trained on. Sparsity: `--k` is k
   of topk, batchtopk and matryoshka and the l0_target of jumprelu; relu and gated have no L0 knob
   and train at their config's L1 default (`--set relu.l1_coefficient=...` overrides any field);
2. held-out reconstruction metrics (`sae.metrics.evaluate_sae`, the README's "Metrics" definitions) of the
   saved inference form (BatchTopK and Matryoshka as JumpReLU): FVU, L0, dead fraction = share of
   latents that never fired on the held-out rows;
3. with a model (`--model`, default artifacts/demo/model when it exists): the splice evaluation of
   `interp eval` (`interp.interventions.evaluate.evaluate_splice`) on `--ce-tokens` tokens of held-out text of
   the model's corpus: CE loss recovered and delta CE = CE_sae - CE_clean (nats per token).

Training tokens/s is steps * batch size over the wall-clock seconds of the `train_sae` call
(initialisation from the first batches included). Every number is computed in the run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shlex
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sae.architectures import ARCHITECTURES, SAE, get_architecture
from sae.config import SAEConfig, TrainConfig
from sae.data import ActivationDataset
from sae.hardware import tune_allocator
from sae.metrics import evaluate_sae
from sae.options import parse_text
from sae.schedule import default_lr
from sae.schema import field_specs
from sae.train import train_sae

ARCHS = ("relu", "topk", "batchtopk", "jumprelu", "gated", "matryoshka")
DEMO_ACTS = Path("artifacts/demo/activations/blocks.0.mlp.hook_post")
DEMO_MODEL = Path("artifacts/demo/model")


class TrainingRows:
    """Endless shuffled batches [batch_size, d_in] float32 of the dataset rows [0, num_rows).

    Each epoch is a fresh permutation of those rows (numpy generator seeded by (seed, epoch)); the
    rows after num_rows are never read. A trailing part of an epoch smaller than a batch is dropped."""

    def __init__(self, dataset: ActivationDataset, num_rows: int, batch_size: int, seed: int = 0):
        if batch_size > num_rows:
            raise ValueError(
                f"the training part of {dataset.path} holds {num_rows} rows, fewer than one batch of "
                f"{batch_size}; lower --batch-size or --heldout-tokens"
            )
        self.dataset, self.num_rows, self.batch_size, self.seed = dataset, num_rows, batch_size, seed

    def __iter__(self) -> Iterator[Tensor]:
        epoch = 0
        while True:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.num_rows)
            for start in range(0, self.num_rows - self.batch_size + 1, self.batch_size):
                yield self.dataset.rows(order[start : start + self.batch_size]).float()
            epoch += 1


def heldout_batches(dataset: ActivationDataset, first_row: int, batch_size: int = 4096) -> Iterator[Tensor]:
    """The rows [first_row, num_tokens) in file order, as float32 batches [<= batch_size, d_in]."""
    for start in range(first_row, dataset.num_tokens, batch_size):
        yield dataset.rows(np.arange(start, min(start + batch_size, dataset.num_tokens))).float()


def parse_overrides(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """["relu.l1_coefficient=3", ...] -> {"relu": {"l1_coefficient": 3.0}}, each value parsed by the
    type of that field of the architecture's config."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        target, sep, text = item.partition("=")
        arch, dot, name = target.partition(".")
        if not sep or not dot:
            raise ValueError(f"--set {item!r}: write ARCH.FIELD=VALUE, e.g. relu.l1_coefficient=3")
        specs = {s.name: s for s in field_specs(get_architecture(arch).config_class)}
        if name not in specs or name in ("d_in", "d_sae"):
            settable = sorted(set(specs) - {"d_in", "d_sae"})
            raise ValueError(f"--set {item!r}: {arch} has no settable field {name!r}; its fields: {settable}")
        out.setdefault(arch, {})[name] = parse_text(text, specs[name])
    return out


def sae_config(arch: str, d_in: int, d_sae: int, k: int, overrides: dict[str, Any]) -> SAEConfig:
    """The architecture's config: its defaults, d_in, d_sae, k (as k, or as l0_target where the
    config has that instead), then the overrides."""
    config_class = get_architecture(arch).config_class
    names = {f.name for f in dataclasses.fields(config_class)}
    fields: dict[str, Any] = {"d_in": d_in, "d_sae": d_sae}
    if "k" in names:
        fields["k"] = k
    elif "l0_target" in names:
        fields["l0_target"] = float(k)
    config = config_class.from_dict({**fields, **overrides})
    config.validate()
    return config


def measure_splice(sae: SAE, loaded: Any, hook_name: str, token_batches: list[Tensor]) -> dict[str, float]:
    """`interp eval`'s metrics of `sae` spliced at hook_name over the token batches [batch, ctx]."""
    from interp.interventions.evaluate import evaluate_splice

    device = next(loaded.bridge.parameters()).device
    result = evaluate_splice(loaded.bridge, sae.to(device), hook_name, token_batches, progress=False)
    keys = ("ce_loss_recovered", "delta_ce", "ce_clean", "ce_sae", "ce_zero_ablation", "kl_score", "num_predictions")
    return {key: result[key] for key in keys}


def heldout_text(model: Path, corpus: str | None, tokens: int, batch_size: int = 16) -> tuple[Any, list[Tensor], str]:
    """(loaded model, token batches [batch, ctx] of held-out text, corpus spec) for the splice evaluation."""
    from interp.activations.sources import model_corpus
    from interp.model.corpus import batched_windows, load_corpus, token_sequences
    from interp.model.transformer import load_model

    loaded = load_model(model)
    spec = corpus or model_corpus(str(model))
    windows = math.ceil(tokens / loaded.context_length)
    sequences = token_sequences(load_corpus(spec, "heldout"), loaded.tokenizer, loaded.context_length, seed=0)
    return loaded, list(batched_windows(sequences, batch_size, windows)), spec


def format_table(rows: list[dict[str, Any]], with_ce: bool) -> str:
    """Markdown table, one row per architecture."""
    head = ["arch", "held-out FVU", "L0", "dead", "train tok/s"] + (
        ["CE loss recovered", "ΔCE (nats)"] if with_ce else []
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        cells = [
            r["arch"],
            f"{r['fvu']:.4f}",
            f"{r['l0']:.1f}",
            f"{r['dead_fraction']:.3f}",
            f"{r['tokens_per_s']:,.0f}",
        ]
        if with_ce:
            cells += [f"{r['ce_loss_recovered']:.4f}", f"{r['delta_ce']:+.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--acts", type=Path, default=DEMO_ACTS, help=f"activation dataset folder (default {DEMO_ACTS})")
    p.add_argument(
        "--model",
        default=None,
        help=f"model folder for CE loss recovered and delta CE; 'none' skips them (default {DEMO_MODEL} "
        "when it exists)",
    )
    p.add_argument("--archs", default=",".join(ARCHS), help=f"comma list of architectures (default {','.join(ARCHS)})")
    p.add_argument("--steps", type=int, default=300, help="optimizer steps per architecture (default 300)")
    p.add_argument("--batch-size", type=int, default=4096, help="training tokens per step (default 4096)")
    p.add_argument("--d-sae", type=int, default=1024, help="latents per SAE (default 1024)")
    p.add_argument(
        "--k", type=int, default=32, help="k of topk/batchtopk/matryoshka and l0_target of jumprelu (default 32)"
    )
    p.add_argument(
        "--heldout-tokens",
        type=int,
        default=32768,
        help="rows at the end of the dataset kept out of training and evaluated on (default 32768)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="ARCH.FIELD=VALUE",
        help="override one field of an architecture's config (repeatable)",
    )
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="Adam learning rate of every SAE (default: the trainer's rule, sae.schedule.default_lr(d_sae, d_in))",
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the SAE initialisation and of the batch order")
    p.add_argument(
        "--ce-tokens", type=int, default=16384, help="held-out text tokens of the splice evaluation (default 16384)"
    )
    p.add_argument("--corpus", default=None, help="corpus of the held-out text (default: the one the model records)")
    p.add_argument("--out", type=Path, default=None, help="also save each SAE and its training log in OUT/ARCH")
    p.add_argument("--json", type=Path, default=None, help="write the settings and every row as JSON to this file")
    p.add_argument("--no-progress", action="store_true", help="no training progress bars")
    args = p.parse_args(argv)
    for name in ("steps", "batch_size", "d_sae", "k", "heldout_tokens", "ce_tokens"):
        if getattr(args, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.k > args.d_sae:
        raise ValueError(f"--k {args.k} exceeds --d-sae {args.d_sae}; lower k or widen the SAE")
    args.archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    unknown = [a for a in args.archs if a not in ARCHITECTURES]
    if unknown or not args.archs:
        raise ValueError(f"--archs: unknown architecture(s) {unknown}; registered: {', '.join(sorted(ARCHITECTURES))}")
    if args.model is None:
        args.model = DEMO_MODEL if DEMO_MODEL.is_dir() else None
    elif args.model.lower() == "none":
        args.model = None
    else:
        args.model = Path(args.model)
        if not args.model.is_dir():
            raise FileNotFoundError(f"model folder {args.model} does not exist; pass --model DIR or --model none")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the comparison; print the command, progress lines and the table; return the JSON document."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = shlex.join([".venv/bin/python", "scripts/arch_table.py", *argv])
    print(f"command: {command}", flush=True)
    args = parse_args(argv)
    overrides = parse_overrides(args.overrides)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    tune_allocator("keep")  # the trainer runs as under `sae train`
    dataset = ActivationDataset(args.acts)
    if args.heldout_tokens >= dataset.num_tokens:
        raise ValueError(
            f"--heldout-tokens {args.heldout_tokens} leaves nothing to train on: {dataset.path} holds "
            f"{dataset.num_tokens} tokens"
        )
    train_rows = dataset.num_tokens - args.heldout_tokens
    train_cfg = TrainConfig(
        batch_size=args.batch_size,
        steps=args.steps,
        lr=args.lr,
        seed=args.seed,
        checkpoint_every=0,
        log_every=max(1, args.steps // 20),
    )
    print(
        f"data: {dataset.path} ({dataset.hook_name}, d_in {dataset.d_in}): training rows [0, {train_rows}), "
        f"held-out rows [{train_rows}, {dataset.num_tokens}); {args.steps} steps x {args.batch_size} tokens "
        f"= {args.steps * args.batch_size / train_rows:.2f} epochs of the training rows",
        flush=True,
    )
    loaded, token_batches, corpus = None, [], None
    if args.model is not None:
        loaded, token_batches, corpus = heldout_text(args.model, args.corpus, args.ce_tokens)
        print(
            f"splice evaluation: {args.model}, {sum(b.numel() for b in token_batches)} held-out tokens of corpus "
            f"{corpus!r}",
            flush=True,
        )

    rows: list[dict[str, Any]] = []
    for i, arch in enumerate(args.archs, 1):
        config = sae_config(arch, dataset.d_in, args.d_sae, args.k, overrides.get(arch, {}))
        print(f"[{i}/{len(args.archs)}] {arch}: training {args.steps} steps ({config.to_dict()})", flush=True)
        batches = TrainingRows(dataset, train_rows, args.batch_size, seed=args.seed)
        out = args.out / arch if args.out is not None else None
        start = time.perf_counter()
        sae = train_sae(
            [(arch, config)],
            batches,
            train_cfg,
            out,
            progress=not args.no_progress,
            metadata=[
                {
                    "hook_name": dataset.hook_name,
                    "model_name": dataset.model_id,
                    "context_size": dataset.context_length,
                    "dataset_path": str(dataset.path),
                }
            ],
        )[0]
        seconds = time.perf_counter() - start
        sae.eval()
        with torch.no_grad():
            recon = evaluate_sae(sae, heldout_batches(dataset, train_rows), progress=False)
        row: dict[str, Any] = {
            "arch": arch,
            "inference_arch": sae.arch,
            "fvu": recon["fvu"],
            "l0": recon["l0"],
            "dead_fraction": recon["dead_fraction"],
            "explained_variance": recon["explained_variance"],
            "cosine": recon["cosine"],
            "heldout_tokens": int(recon["num_tokens"]),
            "tokens_per_s": args.steps * args.batch_size / seconds,
            "train_seconds": seconds,
            "train_tokens": args.steps * args.batch_size,
            "config": config.to_dict(),
            "lr": train_cfg.lr if train_cfg.lr is not None else default_lr(config.d_sae, config.d_in),
        }
        if loaded is not None:
            row.update(measure_splice(sae, loaded, dataset.hook_name, token_batches))
        rows.append(row)
        line = (
            f"[{i}/{len(args.archs)}] {arch}: FVU {row['fvu']:.4f}  L0 {row['l0']:.1f}  dead {row['dead_fraction']:.3f}"
            f"  {row['tokens_per_s']:,.0f} tok/s ({seconds:.0f} s)"
        )
        if loaded is not None:
            line += f"  CE recovered {row['ce_loss_recovered']:.4f}  ΔCE {row['delta_ce']:+.4f}"
        print(line, flush=True)

    table = format_table(rows, with_ce=loaded is not None)
    print()
    print(f"command: {command}")
    print()
    print(table)
    document = {
        "command": command,
        "acts": str(dataset.path),
        "hook_name": dataset.hook_name,
        "d_in": dataset.d_in,
        "train_rows": train_rows,
        "heldout_rows": dataset.num_tokens - train_rows,
        "model": str(args.model) if args.model is not None else None,
        "corpus": corpus,
        "ce_tokens": sum(b.numel() for b in token_batches),
        "d_sae": args.d_sae,
        "k": args.k,
        "overrides": overrides,
        "train": dataclasses.asdict(train_cfg),
        "torch_threads": torch.get_num_threads(),
        "rows": rows,
        "table": table,
    }
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=1) + "\n")
        print(f"wrote {args.json}")
    return document


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as err:
        print(f"arch_table: error: {err}", file=sys.stderr)
        sys.exit(2)
