"""Model training speed and quality: the float32 loop against today's defaults, in one run.

    .venv/bin/python scripts/bench_model_train.py [--corpus stdlib] [--minutes 1.5] [--threads T]

Three trainings of the default model (1 layer, d_model 128, 512 MLP neurons, context 128) from the
same seed, tokenizer, data order and held-out windows, one after another:
  float32           the loop as it was: no autocast, AdamW without the fused kernel, learning rate
                    3e-3, --minutes of training steps;
  default           ModelTrainConfig's defaults (bfloat16 autocast where the hardware multiplies it
                    natively, fused AdamW), the same --minutes;
  default, equal tokens   the defaults for exactly the tokens the float32 run saw, so that loss per
                    token seen is compared on the same schedule.
Each prints tokens/s (training steps only), held-out loss (nats/token, evaluated in float32) and
held-out bits per byte beside gzip -9 and xz -9e on the same bytes; then the tokens/s ratio.
The tokenizer is trained once, before the timed runs, and shared.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import torch

from interp.model.config import ModelConfig, ModelTrainConfig
from interp.model.corpus import load_corpus
from interp.model.record import TrainingRecord
from interp.model.tokenizer import TOKENIZER_FILE, train_tokenizer
from interp.model.training import first_chars, train_model

OLD_LR = 3e-3  # the learning rate of the float32 loop; today's default, 1.5e-3, gives a lower loss per token


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default="stdlib", help="corpus spec (default stdlib)")
    parser.add_argument("--minutes", type=float, default=1.5, help="training minutes of each timed run (default 1.5)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)  # a process setting: this script owns its process

    with tempfile.TemporaryDirectory(prefix="bench-model-train-") as tmp:
        tmp = Path(tmp)
        documents = first_chars(load_corpus(args.corpus, "train"), ModelTrainConfig().tokenizer_chars)
        train_tokenizer(documents, show_progress=False).save(tmp)  # as train_model would train it
        base = ModelTrainConfig(corpus=args.corpus, tokenizer=str(tmp / TOKENIZER_FILE), story_points=[])
        runs = {
            "float32": dataclasses.replace(base, minutes=args.minutes, autocast="none", fused_adam=False, lr=OLD_LR),
            "default": dataclasses.replace(base, minutes=args.minutes),
        }
        summaries = {}
        for name, cfg in runs.items():
            summaries[name] = train(name, cfg, tmp)
        equal = dataclasses.replace(base, tokens=summaries["float32"]["tokens"])
        summaries["default, equal tokens"] = train("default, equal tokens", equal, tmp)

    print(f"\n{'run':<22} {'autocast':>9} {'tokens':>11} {'tok/s':>9} {'held-out loss':>14} {'bits/byte':>10}")
    for name, s in summaries.items():
        print(
            f"{name:<22} {s['autocast']:>9} {s['tokens']:>11,} {s['tokens_per_second']:>9,.0f} "
            f"{s['heldout_loss']:>14.4f} {s['heldout_bits_per_byte']:>10.4f}"
        )
    compressors = summaries["default"]["compressors_bits_per_byte"]
    print(
        f"same {summaries['default']['heldout_bytes']:,} held-out bytes: "
        + ", ".join(f"{k} {v:.4f}" for k, v in compressors.items())
    )
    ratio = summaries["default"]["tokens_per_second"] / summaries["float32"]["tokens_per_second"]
    print(f"tokens/s default / float32: {ratio:.2f}x")
    delta = summaries["default, equal tokens"]["heldout_loss"] - summaries["float32"]["heldout_loss"]
    print(f"held-out loss at equal tokens, default - float32: {delta:+.4f} nats/token")


def train(name: str, cfg: ModelTrainConfig, tmp: Path) -> dict:
    print(f"[{name}] training", flush=True)
    out = tmp / name.replace(" ", "_").replace(",", "")
    train_model(cfg, ModelConfig(), out, show_progress=False)
    return TrainingRecord.load(out).summary


if __name__ == "__main__":
    main()
