"""The learning-rate schedule of the SAE trainer: a width-scaled base rate, linear warm-up, then decay to 0."""

from __future__ import annotations

import math

from sae.config import TrainConfig


def default_lr(d_sae: int, d_in: int) -> float:
    """3e-3 * sqrt(2^14 / d_sae) * sqrt(256 / d_in): Gao et al.'s (2024) 1 / sqrt(width) scaling, and a
    step that shrinks with the encoder's entries (about 1 / sqrt(d_in) at the tied initialisation).
    On normalised activations (E||x||^2 = d_in) it trains far further in a given number of steps
    than Gao et al.'s 2e-4 base; the d_in factor keeps wide inputs from killing most latents
    at the larger rate. The decay to 0 at the end of the run settles it. At most 1e-2 (small test-sized SAEs)."""
    return min(1e-2, 3e-3 * math.sqrt(2**14 / d_sae) * math.sqrt(256 / d_in))


def lr_factor(step: int, cfg: TrainConfig, total_steps: int) -> float:
    """Multiplier of the base learning rate at 0-based `step`: linear warm-up, then decay to 0."""
    factor = min(1.0, (step + 1) / cfg.lr_warmup_steps) if cfg.lr_warmup_steps else 1.0
    decay_steps = round(cfg.lr_decay_fraction * total_steps)
    decay_start = total_steps - decay_steps
    if cfg.lr_decay != "none" and decay_steps and step >= decay_start:
        progress = (step - decay_start) / decay_steps  # in [0, 1)
        factor *= 1 - progress if cfg.lr_decay == "linear" else 0.5 * (1 + math.cos(math.pi * progress))
    return factor
