"""Train dictionary-learning's TopK autoencoder with its own `trainSAE` loop (TopKTrainer) on saved activations.

trainSAE iterates the data twice: once for the activation norm factor (normalize_activations=True,
undone in the saved weights) and once to train; the timing is taken from the training pass.
The lr warm-up is 0 steps (its default of 1000 needs a run longer than the benchmark's).
"""

from __future__ import annotations

import importlib.metadata
import tempfile
from pathlib import Path

import torch
from common import TimedBatches, load_activations, parse_args, steady_rate, write_result


def main() -> None:
    from dictionary_learning.trainers.top_k import AutoEncoderTopK, TopKTrainer
    from dictionary_learning.training import trainSAE

    args = parse_args(__doc__)
    train, heldout = load_activations(args.data)
    d_in = train.shape[1]
    timer = TimedBatches(train, args.batch_size)
    trainer_cfg = dict(
        trainer=TopKTrainer,
        steps=len(timer),
        activation_dim=d_in,
        dict_size=args.d_sae,
        k=args.k,
        layer=0,
        lm_name="bench",
        warmup_steps=0,
        device="cpu",
        seed=args.seed,
    )
    with tempfile.TemporaryDirectory() as save_dir:
        trainSAE(
            data=timer,
            trainer_configs=[trainer_cfg],
            steps=len(timer),
            save_dir=save_dir,
            normalize_activations=True,
            device="cpu",
            autocast_dtype=torch.float32,
        )
        ae = AutoEncoderTopK(d_in, args.d_sae, args.k)
        ae.load_state_dict(torch.load(Path(save_dir) / "trainer_0" / "ae.pt", weights_only=True))

    def reconstruct(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_hat, f = ae(x, output_features=True)
        return x_hat, (f != 0).sum(-1)

    write_result(
        args.out,
        "dictionary_learning",
        steady_rate(timer.times, args.batch_size, args.warmup),
        heldout,
        reconstruct,
        {"version": importlib.metadata.version("dictionary-learning")},
    )


if __name__ == "__main__":
    main()
