"""Train EleutherAI sparsify's TopK sparse coder with sparsify's own `Trainer.fit` on saved activations.

sparsify's Trainer reads activations through forward hooks on a Hugging Face model. The stand-in
model here has one hooked layer whose output is the saved activation rows named by `input_ids`
(each "sequence" is a run of consecutive rows), so `fit` runs its real loop (its optimizer and
defaults, b_dec from the first batch's mean, dead-latent bookkeeping) on exactly the benchmark's batches.
"""

from __future__ import annotations

import importlib.metadata
import tempfile
import time
from types import SimpleNamespace

import torch
from common import TimedBatches, load_activations, parse_args, steady_rate, write_result
from torch import nn

SEQUENCE = 64  # rows per stand-in sequence; the batch is batch_size / SEQUENCE sequences


class RowsAsModel(nn.Module):
    """Looks like a PreTrainedModel to sparsify: forward(input_ids) returns the activation rows."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = table
        self.layers = nn.ModuleList([nn.Identity()])
        self.config = SimpleNamespace(num_hidden_layers=1)

    @property
    def base_model(self) -> nn.Module:
        return self

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dummy_inputs(self) -> dict:
        return {"input_ids": torch.arange(SEQUENCE)[None]}

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.layers[0](self.table[input_ids])


class RowSequences(torch.utils.data.Dataset):
    """Item i: {"input_ids": rows [i * SEQUENCE, (i + 1) * SEQUENCE)} of the training activations."""

    def __init__(self, num_rows: int, timer: TimedBatches, batch_size: int):
        self.n = num_rows // SEQUENCE
        self.timer, self.per_batch = timer, batch_size // SEQUENCE

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        if i % self.per_batch == 0:  # the DataLoader starts a batch: the previous step is done
            self.timer.times.append(time.perf_counter())
        return {"input_ids": torch.arange(i * SEQUENCE, (i + 1) * SEQUENCE)}


def main() -> None:
    from sparsify import SparseCoderConfig, TrainConfig, Trainer

    args = parse_args(__doc__)
    train, heldout = load_activations(args.data)
    if args.batch_size % SEQUENCE:
        raise ValueError(f"--batch-size must be a multiple of {SEQUENCE} for the sparsify runner")
    timer = TimedBatches(train, args.batch_size)
    model = RowsAsModel(train)
    with tempfile.TemporaryDirectory() as save_dir:
        cfg = TrainConfig(
            SparseCoderConfig(num_latents=args.d_sae, k=args.k),
            batch_size=args.batch_size // SEQUENCE,
            hookpoints=["layers.0"],
            log_to_wandb=False,
            save_every=10**9,
            save_dir=save_dir,
            init_seeds=[args.seed],
        )
        trainer = Trainer(cfg, RowSequences(len(train), timer, args.batch_size), model)
        trainer.fit()
    coder = trainer.saes["layers.0"]

    def reconstruct(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        top_acts, top_indices, _ = coder.encode(x)
        return coder.decode(top_acts, top_indices), (top_acts > 0).sum(-1)

    write_result(
        args.out,
        "sparsify",
        steady_rate(timer.times, args.batch_size, args.warmup),
        heldout,
        reconstruct,
        {"optimizer": cfg.optimizer, "version": importlib.metadata.version("eai-sparsify")},
    )


if __name__ == "__main__":
    main()
