"""Train SAELens's TopK SAE with SAELens's own `SAETrainer.fit` on saved activations.

SAETrainer takes any iterator of activation batches as its data provider; it estimates the
activation scale from its first batches (normalize_activations="expected_average_only_in", folded
into the weights at the end of `fit`) and then trains with its defaults (Adam, constant lr).
"""

from __future__ import annotations

import importlib.metadata

import torch
from common import TimedBatches, load_activations, parse_args, steady_rate, write_result

NORM_ESTIMATE_BATCHES = 16


def main() -> None:
    from sae_lens import SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig

    args = parse_args(__doc__)
    train, heldout = load_activations(args.data)
    timer = TimedBatches(train, args.batch_size, cycle=True)  # the norm estimate reads extra batches
    steps = len(timer)
    sae = TopKTrainingSAE(
        TopKTrainingSAEConfig(
            d_in=train.shape[1],
            d_sae=args.d_sae,
            k=args.k,
            device="cpu",
            dtype="float32",
            normalize_activations="expected_average_only_in",
        )
    )
    lr = SAETrainerConfig.lr  # SAELens's default; lr_end as its runner config sets it (lr / 10, unused when constant)
    cfg = SAETrainerConfig(
        total_training_samples=steps * args.batch_size,
        train_batch_size_samples=args.batch_size,
        lr=lr,
        lr_end=lr / 10,
        device="cpu",
        n_batches_for_norm_estimate=NORM_ESTIMATE_BATCHES,
    )
    stream = iter(timer)
    SAETrainer(cfg=cfg, sae=sae, data_provider=stream).fit()
    times = timer.times[NORM_ESTIMATE_BATCHES:]  # requests made by training steps

    def reconstruct(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = sae.encode(x)
        return sae.decode(f), (f != 0).sum(-1)

    write_result(
        args.out,
        "saelens",
        steady_rate(times, args.batch_size, args.warmup),
        heldout,
        reconstruct,
        {"lr": cfg.lr, "version": importlib.metadata.version("sae-lens")},
    )


if __name__ == "__main__":
    main()
