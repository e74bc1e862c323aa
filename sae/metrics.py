"""Reconstruction metrics of an SAE, streamed over batches in float64, and the `sae eval` command.

Definitions (the README's "Metrics"); x [n, d_in] activations, x_hat [n, d_in] reconstruction,
f [n, d_sae] feature activations, sums over every evaluated token t and dimension i:

- FVU = sum (x - x_hat)^2 / sum (x - mu)^2, mu [d_in] the per-dimension mean over the evaluated
  set; explained_variance = 1 - FVU. A ratio of sums over the whole set, never a mean of
  per-token ratios, and centred on the mean, not on zero.
- nmse = sum (x - x_hat)^2 / sum x^2 (error relative to the raw, uncentred energy).
- mse = sum (x - x_hat)^2 / (n * d_in), per element.
- l0 = mean over tokens of #{j : f_tj != 0}; l1 = mean over tokens of sum_j |f_tj|.
- cosine = mean over tokens of <x, x_hat> / (|x| |x_hat|) (0 for a token where either norm is 0);
  norm_ratio = mean over tokens of |x_hat| / |x| (below 1: shrinkage; |x_hat| where |x| is 0).
  Both are exact at any scale: in float64, activations of 1e-30 give the same cosine as of 1.
- Constant activations (zero variance) or a NaN/Inf reconstruction raise ValueError: FVU is undefined.
- density_j = (tokens on which feature j fired) / n; dead_fraction = share of features that
  never fired in the n evaluated tokens (the window, stated as dead_window_tokens = n: the same
  "no firing in the last W tokens" as the training log, whose W is the run's dead window);
  dense_fraction_1pct / _10pct = share with density > 0.01 / > 0.1.

The denominator sum (x - mu)^2 is streamed exactly with the pairwise update of Chan, Golub &
LeVeque (1979): per dimension, a batch with mean m_b and centred sum of squares M2_b merges into
the running (n, mean, M2) as M2 += M2_b + (m_b - mean)^2 n n_b / (n + n_b), which equals the
one-pass formula sum x^2 - (sum x)^2 / n without its cancellation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sae.progress import progress_bar

# log10(feature density) histogram: bins of 0.25 decades from 1e-8 to 1; dead features are excluded
DENSITY_BIN_EDGES = np.linspace(-8.0, 0.0, 33)


def _float64(t: Tensor) -> Tensor:
    """float64 copy on a device that has float64 (MPS has none: there, the CPU)."""
    return t.detach().to("cpu" if t.device.type == "mps" else t.device, torch.float64)


class ReconstructionMetrics:
    """Streaming accumulator of the metrics above; `update` per batch, `compute` at the end."""

    def __init__(self, d_in: int, d_sae: int):
        self.d_in, self.d_sae = d_in, d_sae
        self.num_tokens = 0
        self.mean = torch.zeros(d_in, dtype=torch.float64)  # running per-dimension mean of x
        self.centred_sq = torch.zeros(d_in, dtype=torch.float64)  # running sum (x - mean)^2 per dimension
        self.sum_sq_x = 0.0  # sum x^2
        self.sum_sq_err = 0.0  # sum (x - x_hat)^2
        self.sum_l0 = 0.0
        self.sum_l1 = 0.0
        self.sum_cosine = 0.0
        self.sum_norm_ratio = 0.0
        self.fire_count = torch.zeros(d_sae, dtype=torch.int64)  # tokens on which each feature fired
        self.act_sum = torch.zeros(d_sae, dtype=torch.float64)  # sum of each feature's activations

    @torch.no_grad()
    def update(self, x: Tensor, x_hat: Tensor, f: Tensor) -> None:
        """Add a batch: x, x_hat [n, d_in]; f [n, d_sae] dense feature activations."""
        n = x.shape[0]
        if x.shape != (n, self.d_in) or x_hat.shape != x.shape or f.shape != (n, self.d_sae):
            raise ValueError(
                f"expected x and x_hat [n, {self.d_in}] and f [n, {self.d_sae}], got x {list(x.shape)}, "
                f"x_hat {list(x_hat.shape)}, f {list(f.shape)}"
            )
        if n == 0:
            return
        x64, x_hat64 = _float64(x), _float64(x_hat)
        batch_mean = x64.mean(0)
        batch_centred_sq = (x64 - batch_mean).pow(2).sum(0)
        total = self.num_tokens + n
        delta = batch_mean.cpu() - self.mean
        self.centred_sq += batch_centred_sq.cpu() + delta.pow(2) * (self.num_tokens * n / total)
        self.mean += delta * (n / total)
        self.num_tokens = total

        sq_x = x64.pow(2).sum(1)  # [n]
        self.sum_sq_x += float(sq_x.sum())
        self.sum_sq_err += float((x64 - x_hat64).pow(2).sum())
        norm_x, norm_x_hat = sq_x.sqrt(), x_hat64.pow(2).sum(1).sqrt()
        # scale-free: exact ratios wherever the norms are non-zero, 0 where one is zero (no direction)
        both = (norm_x > 0) & (norm_x_hat > 0)
        cosine = (x64 * x_hat64).sum(1) / torch.where(both, norm_x * norm_x_hat, 1.0)
        self.sum_cosine += float(torch.where(both, cosine, 0.0).sum())
        self.sum_norm_ratio += float((norm_x_hat / torch.where(norm_x > 0, norm_x, 1.0)).sum())

        rows = max(1, (1 << 22) // max(1, self.d_sae))  # keep float64 copies of f small
        for chunk in f.detach().split(rows):
            fired = chunk != 0
            self.fire_count += fired.sum(0).cpu()
            self.sum_l0 += float(fired.sum())
            chunk64 = _float64(chunk)
            self.act_sum += chunk64.sum(0).cpu()
            self.sum_l1 += float(chunk64.abs().sum())

    def density(self) -> Tensor:
        """[d_sae] fraction of evaluated tokens on which each feature fired."""
        return self.fire_count.double() / max(1, self.num_tokens)

    def mean_activation(self) -> Tensor:
        """[d_sae] mean activation of each feature over the tokens where it fired (0 if never)."""
        return self.act_sum / self.fire_count.clamp_min(1).double()

    def density_histogram(self) -> tuple[list[float], list[int]]:
        """(bin edges, counts) of log10 density over features that fired, edges DENSITY_BIN_EDGES;
        densities below the first edge are counted in the first bin."""
        density = self.density().numpy()
        log_density = np.log10(density[density > 0]).clip(DENSITY_BIN_EDGES[0], DENSITY_BIN_EDGES[-1])
        counts, _ = np.histogram(log_density, bins=DENSITY_BIN_EDGES)
        return DENSITY_BIN_EDGES.tolist(), counts.tolist()

    def compute(self) -> dict[str, float]:
        """Every scalar metric by its flat name (see the module docstring)."""
        if self.num_tokens == 0:
            raise ValueError("no tokens were evaluated: the batch iterator was empty")
        n = self.num_tokens
        variance_sum = float(self.centred_sq.sum())
        if not variance_sum > 0:  # also NaN: a NaN activation or reconstruction
            raise ValueError(
                f"the {n} evaluated activations have "
                + ("no variance (they are constant)" if variance_sum == 0 else f"a variance of {variance_sum}")
                + ": FVU and explained variance are undefined; evaluate on varied, finite activations "
                "(more tokens, another hook)."
            )
        if not math.isfinite(self.sum_sq_err):
            raise ValueError(
                f"the reconstruction error over {n} tokens is {self.sum_sq_err}: the SAE outputs NaN or Inf; "
                "check its weights (re-train or re-save it)."
            )
        fvu = self.sum_sq_err / variance_sum
        density = self.density()
        return {
            "num_tokens": float(n),
            "fvu": fvu,
            "explained_variance": 1.0 - fvu,
            "nmse": self.sum_sq_err / self.sum_sq_x if self.sum_sq_x > 0 else math.nan,
            "mse": self.sum_sq_err / (n * self.d_in),
            "l0": self.sum_l0 / n,
            "l1": self.sum_l1 / n,
            "cosine": self.sum_cosine / n,
            "norm_ratio": self.sum_norm_ratio / n,
            "dead_fraction": float((self.fire_count == 0).double().mean()),
            "dead_window_tokens": float(n),
            "dense_fraction_1pct": float((density > 0.01).double().mean()),
            "dense_fraction_10pct": float((density > 0.1).double().mean()),
        }


@torch.no_grad()
def evaluate_sae(
    sae: Any, batches: Iterable[Tensor], *, max_tokens: int | None = None, progress: bool = True
) -> dict[str, Any]:
    """Run `sae` (anything with encode [n, d_in] -> [n, d_sae] and decode back) over batches
    [n, d_in]; return `ReconstructionMetrics.compute()` plus the log10-density histogram
    (`log10_density_hist_edges`, `log10_density_hist_counts`). Stops after max_tokens tokens."""
    params = next(iter(sae.parameters()), None) if hasattr(sae, "parameters") else None
    metrics: ReconstructionMetrics | None = None
    bar = progress_bar(total=max_tokens, unit="tok", desc="eval", disable=not progress)
    for x in batches:
        if max_tokens is not None:
            x = x[: max_tokens - (metrics.num_tokens if metrics else 0)]
        if params is not None:
            x = x.to(params.device, params.dtype)
        f = sae.encode(x)
        x_hat = sae.decode(f)
        if metrics is None:
            metrics = ReconstructionMetrics(x.shape[1], f.shape[1])
        metrics.update(x, x_hat, f)
        bar.update(x.shape[0])
        if max_tokens is not None and metrics.num_tokens >= max_tokens:
            break
    bar.close()
    if metrics is None:
        raise ValueError("no tokens were evaluated: the batch iterator was empty")
    edges, counts = metrics.density_histogram()
    return {**metrics.compute(), "log10_density_hist_edges": edges, "log10_density_hist_counts": counts}


# --- CLI ---------------------------------------------------------------------------------------

TABLE_KEYS = (
    "num_tokens",
    "explained_variance",
    "fvu",
    "nmse",
    "cosine",
    "norm_ratio",
    "l0",
    "l1",
    "dead_fraction",
    "dense_fraction_1pct",
    "dense_fraction_10pct",
)


def format_table(result: dict[str, Any], keys: Iterable[str] = TABLE_KEYS) -> str:
    """One `name  value` line per key; dead_fraction states its window."""
    keys = list(keys)
    width = max(map(len, keys))
    lines = []
    for key in keys:
        value = result[key]
        text = f"{int(value)}" if key == "num_tokens" else f"{value:.6g}"
        if key == "dead_fraction":
            text += f"  (no firing in {int(result['dead_window_tokens']):,} tokens)"
        lines.append(f"{key:<{width}}  {text}")
    return "\n".join(lines)
