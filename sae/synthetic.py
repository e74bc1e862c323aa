"""Planted ground truth: activations built from known features, and how well a dictionary recovers them.

The generative model: N unit feature directions G [N, d]. A sample activates feature i with
probability p_i that decays with the index as a power law, p_i = min(1, c (i + 1)^-firing_exponent);
c is calibrated so that the expected number of active features per sample, counting the rule
below, equals `mean_active` (exactly for independent features). Each active feature gets a
magnitude drawn uniformly from [magnitude_min, magnitude_max]; a sample with no active feature gets
one, drawn with weights proportional to (i + 1)^-firing_exponent. x = coefficients @ G + noise.

Correlations use a Gaussian copula: z = sqrt(rho) U g + sqrt(1 - rho) e with g ~ N(0, I_r), e ~ N(0, I_N)
and U [N, r] of unit rows, so z_i ~ N(0, 1) and corr(z_i, z_j) = rho <U_i, U_j>; feature i is
active when z_i < Phi^-1(p_i), which keeps every marginal firing probability at p_i.

Recovery (the README's "Metrics"): MMCS(G, D) = mean over ground-truth features g of max over dictionary rows d
of cos(g, d); a feature counts as recovered at threshold t when that max exceeds t.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sae.config import SyntheticConfig


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1, dtype=np.uint64)[0] >> 1)


def _calibrate(weights: np.ndarray, mean_active: float) -> np.ndarray:
    """p = min(1, c * weights) with sum p + prod (1 - p) = mean_active (bisection on c; the left
    side, the expected active count with the at-least-one rule, increases with c)."""

    def expected(c: float) -> float:
        p = np.minimum(1.0, c * weights)
        return p.sum() + np.prod(1.0 - p)

    lo, hi = 0.0, 1.0 / weights.min()  # at hi every p is 1
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if expected(mid) < mean_active else (lo, mid)
    return np.minimum(1.0, hi * weights)


class SyntheticActivations:
    """The generator of the module docstring. features [N, d] unit rows; probabilities [N]."""

    def __init__(self, cfg: SyntheticConfig | None = None, **overrides):
        cfg = cfg or SyntheticConfig(**overrides)
        cfg.validate()
        self.cfg = cfg
        g = torch.Generator().manual_seed(_seed(cfg.seed, 0))
        feats = torch.randn(cfg.num_features, cfg.d, generator=g, dtype=torch.float64)
        self.features = (feats / feats.norm(dim=1, keepdim=True)).float()  # [N, d]
        self.weights = np.arange(1, cfg.num_features + 1, dtype=np.float64) ** -cfg.firing_exponent  # [N]
        self.probabilities = torch.from_numpy(_calibrate(self.weights, cfg.mean_active))  # [N] float64
        factors = torch.randn(cfg.num_features, cfg.correlation_rank, generator=g, dtype=torch.float64)
        self.factors = (factors / factors.norm(dim=1, keepdim=True)).float()  # U [N, r]
        self.thresholds = torch.special.ndtri(self.probabilities).float()  # Phi^-1(p) [N]
        self.rescue_weights = torch.from_numpy(self.weights).float()

    @property
    def copula_correlation(self) -> Tensor:
        """[N, N] correlation of the latent Gaussians z (identity when correlation = 0)."""
        c = self.cfg.correlation * (self.factors @ self.factors.T)
        c.fill_diagonal_(1.0)
        return c

    def marginal_probabilities(self) -> Tensor:
        """[N] float64 P(feature i active) including the at-least-one rule, exact for independent features."""
        p = self.probabilities
        none = torch.prod(1 - p)
        w = torch.from_numpy(self.weights)
        return p + none * w / w.sum()

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """n samples: (x [n, d], coefficients [n, N]); x = coefficients @ features + noise."""
        x, rows, cols, magnitudes = self._sample_sparse(n, generator)
        coefficients = torch.zeros(n, self.cfg.num_features)
        coefficients[rows, cols] = magnitudes
        return x, coefficients

    def _sample_sparse(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(x [n, d], rows [m], cols [m], magnitudes [m]) for the m (sample, feature) pairs active.
        x is summed from the active features only: O(n * mean_active * d), not O(n * N * d)."""
        cfg, N = self.cfg, self.cfg.num_features
        if cfg.correlation > 0:
            shared = torch.randn(n, cfg.correlation_rank, generator=generator) @ self.factors.T
            z = math.sqrt(cfg.correlation) * shared + math.sqrt(1 - cfg.correlation) * torch.randn(
                n, N, generator=generator
            )
            active = z < self.thresholds
            rows, cols = active.nonzero(as_tuple=True)
        else:
            rows, cols = self._independent_active(n, generator)
        silent = (torch.bincount(rows, minlength=n) == 0).nonzero().squeeze(1)
        if len(silent):
            chosen = torch.multinomial(self.rescue_weights, len(silent), replacement=True, generator=generator)
            rows, cols = torch.cat([rows, silent]), torch.cat([cols, chosen])
        magnitudes = cfg.magnitude_min + (cfg.magnitude_max - cfg.magnitude_min) * torch.rand(
            len(rows), generator=generator
        )
        order = torch.argsort(rows, stable=True)  # group by sample for the bag sum
        rows, cols, magnitudes = rows[order], cols[order], magnitudes[order]
        offsets = torch.cumsum(torch.bincount(rows, minlength=n), 0) - torch.bincount(rows, minlength=n)
        x = F.embedding_bag(cols, self.features, offsets, mode="sum", per_sample_weights=magnitudes)  # [n, d]
        if cfg.noise_std > 0:
            x += cfg.noise_std * torch.randn(n, cfg.d, generator=generator)
        return x, rows, cols, magnitudes

    def _independent_active(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(rows, cols) of independent Bernoulli(p_i) activations over n samples, drawn as geometric
        gaps between a feature's active samples: about n * mean_active random numbers, not n * N."""
        p = self.probabilities
        expected = n * p
        draws = (expected + 6 * (expected * (1 - p)).sqrt() + 8).ceil().long().clamp(max=n)  # [N] gaps per feature
        feature = torch.repeat_interleave(torch.arange(len(p)), draws)
        log_q = torch.log1p(-p)  # -inf where p = 1 (gap 1), 0 where p = 0 (gap beyond n)
        u = 1 - torch.rand(len(feature), generator=generator, dtype=torch.float64)  # (0, 1]
        gaps = (torch.log(u) / log_q[feature]).nan_to_num(nan=0.0).floor().clamp(max=n).long() + 1
        ends = gaps.cumsum(0)
        seg_end = draws.cumsum(0)
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), ends[seg_end[:-1] - 1]])
        position = ends - offsets.repeat_interleave(draws) - 1  # [sum draws] 0-based sample index
        last = position[seg_end - 1]
        rows, cols = [position[position < n]], [feature[position < n]]
        for i in (last < n).nonzero().squeeze(1).tolist():  # drew too few gaps (rare): continue the walk
            at = int(last[i])
            while True:
                u = 1 - torch.rand(1, generator=generator, dtype=torch.float64)
                at += int((torch.log(u) / log_q[i]).clamp(max=n)) + 1
                if at >= n:
                    break
                rows.append(torch.tensor([at]))
                cols.append(torch.tensor([i]))
        return torch.cat(rows), torch.cat(cols)

    def batches(self, batch_size: int, num_batches: int | None = None, start: int = 0) -> Iterator[Tensor]:
        """Batches x [batch_size, d]; batch b depends only on (seed, b), so a stream started at
        `start` equals the tail of one started at 0. num_batches None: forever."""
        b = start
        while num_batches is None or b < start + num_batches:
            yield self._sample_sparse(batch_size, torch.Generator().manual_seed(_seed(self.cfg.seed, 1, b)))[0]
            b += 1


# --- recovery -----------------------------------------------------------------------------------


def max_cosines(ground_truth: Tensor, dictionary: Tensor) -> tuple[Tensor, Tensor]:
    """For each ground-truth row [N, d], the best cosine with a dictionary row [d_sae, d] and its index.
    Returns (cosines [N] float64, indices [N] int64). Pass an SAE's decoder W_dec as the dictionary."""
    if ground_truth.ndim != 2 or dictionary.ndim != 2 or ground_truth.shape[1] != dictionary.shape[1]:
        raise ValueError(
            f"ground_truth [N, d] and dictionary [d_sae, d] must share d, got "
            f"{list(ground_truth.shape)} and {list(dictionary.shape)}"
        )
    g = ground_truth.detach().cpu().double()
    d = dictionary.detach().cpu().double()
    g = g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
    d = d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return (g @ d.T).max(dim=1)


def mmcs(ground_truth: Tensor, dictionary: Tensor) -> float:
    """Mean max cosine similarity: mean over ground-truth features of their best cosine in the dictionary."""
    return float(max_cosines(ground_truth, dictionary)[0].mean())


def recovered_fraction(ground_truth: Tensor, dictionary: Tensor, threshold: float = 0.9) -> float:
    """Fraction of ground-truth features whose best dictionary cosine exceeds `threshold`."""
    return float((max_cosines(ground_truth, dictionary)[0] > threshold).double().mean())


def match_table(ground_truth: Tensor, dictionary: Tensor, probabilities: Tensor | None = None) -> list[dict]:
    """One row per ground-truth feature: feature, best_latent, cosine (and firing_probability if given)."""
    cos, idx = max_cosines(ground_truth, dictionary)
    rows = [{"feature": i, "best_latent": int(idx[i]), "cosine": float(cos[i])} for i in range(len(cos))]
    if probabilities is not None:
        for row, p in zip(rows, probabilities.tolist()):
            row["firing_probability"] = p
    return rows
