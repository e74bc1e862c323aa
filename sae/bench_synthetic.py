"""`sae bench-synthetic`: train an SAE on planted ground truth and measure how much of it it finds.

    sae bench-synthetic --arch topk [--json FILE] [--steps 1500 --lr 1e-3 --k 5 --d 256 ...]

The data is `sae.synthetic.SyntheticActivations` (default: d 256, 512 ground-truth features, ~5
active per sample), streamed fresh batch by batch; the SAE is trained by `sae.train.train_sae`, the
code path of `sae train`. Reported (the README's "Metrics"): MMCS (mean over ground-truth features
of the best cosine with a decoder row), the fraction recovered at cos > 0.9 and > 0.99, and FVU and
L0 on held-out batches (the batches after the last one trained on), with every setting used and
the wall-clock and CPU seconds of training (generating the planted batches included).

Options come from three dataclasses: SyntheticConfig (the planted set; its seed is --data-seed),
TrainConfig (the trainer) and the architecture's config, all in sae.config, where BENCH_TRAIN,
BENCH_TRAIN_BY_ARCH and BENCH_SAE hold the defaults tuned for the default planted set; any option
overrides them.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from sae.config import BenchConfig, SAEConfig, SyntheticConfig, TrainConfig
from sae.metrics import evaluate_sae
from sae.synthetic import SyntheticActivations, match_table, max_cosines
from sae.train import train_sae

RECOVERY_THRESHOLDS = (0.9, 0.99)


def run_benchmark(
    arch: str,
    sae_cfg: SAEConfig,
    train_cfg: TrainConfig,
    data_cfg: SyntheticConfig,
    *,
    eval_tokens: int = BenchConfig.eval_tokens,
    out: str | Path | None = None,
    with_match_table: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train `arch` on the planted set and measure recovery; returns the JSON-ready result.

    Training reads batches 0 .. steps - 1 of the planted stream; FVU and L0 come from the next
    ceil(eval_tokens / batch_size) batches, which training never saw."""
    if sae_cfg.d_in != data_cfg.d:
        raise ValueError(
            f"the SAE config has d_in={sae_cfg.d_in} but the planted set has d={data_cfg.d}; "
            "they must be equal (leave d_in unset to take --d)."
        )
    if train_cfg.steps is None:
        raise ValueError("TrainConfig.steps must be set: the planted stream never ends (pass --steps N).")
    data = SyntheticActivations(data_cfg)
    start, start_cpu = time.perf_counter(), time.process_time()
    trained = train_sae(
        [(arch, sae_cfg)],
        data.batches(train_cfg.batch_size),
        train_cfg,
        out,
        progress=progress,
        run_info={"benchmark": "synthetic", "synthetic": dataclasses.asdict(data_cfg)},
    )[0]
    train_seconds, train_cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    trained.eval()
    dictionary = trained.W_dec.detach()  # [d_sae, d] decoder rows
    cosines, _ = max_cosines(data.features, dictionary)
    eval_batches = -(-eval_tokens // train_cfg.batch_size)
    device = next(trained.parameters()).device
    held_out = (x.to(device) for x in data.batches(train_cfg.batch_size, eval_batches, start=train_cfg.steps))
    reconstruction = evaluate_sae(trained, held_out, progress=False)
    result: dict[str, Any] = {
        "arch": arch,
        "mmcs": float(cosines.mean()),
        **{f"recovered_{t}": float((cosines > t).double().mean()) for t in RECOVERY_THRESHOLDS},
        "fvu": reconstruction["fvu"],
        "l0": reconstruction["l0"],
        "dead_fraction": reconstruction["dead_fraction"],
        "eval_tokens": int(reconstruction["num_tokens"]),
        "train_seconds": round(train_seconds, 2),  # wall clock
        "train_cpu_seconds": round(train_cpu_seconds, 2),  # CPU time of this process, all threads
        "train_tokens": train_cfg.steps * train_cfg.batch_size,
        "sae": sae_cfg.to_dict(),
        "train": dataclasses.asdict(train_cfg),
        "synthetic": dataclasses.asdict(data_cfg),
    }
    if with_match_table:
        result["match_table"] = match_table(data.features, dictionary, data.marginal_probabilities())
    return result


# --- CLI ---------------------------------------------------------------------------------------
