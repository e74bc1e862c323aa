"""Planted ground truth: generator statistics and recovery metrics against known answers."""

import math

import pytest
import torch

from sae.config import SyntheticConfig
from sae.synthetic import SyntheticActivations, match_table, max_cosines, mmcs, recovered_fraction


def test_dictionary_containing_the_ground_truth_has_mmcs_one():
    gen = SyntheticActivations(d=32, num_features=48, seed=1)
    noise = torch.randn(100, 32, generator=torch.Generator().manual_seed(2))
    perm = torch.randperm(148, generator=torch.Generator().manual_seed(3))
    dictionary = torch.cat([gen.features * 2.5, noise])[perm]  # scaled, shuffled among noise rows
    assert abs(mmcs(gen.features, dictionary) - 1) < 1e-6
    assert recovered_fraction(gen.features, dictionary, 0.99) == 1.0
    table = match_table(gen.features, dictionary, gen.probabilities)
    inverse = torch.argsort(perm)
    assert [row["best_latent"] for row in table] == inverse[:48].tolist()
    assert table[0]["firing_probability"] == gen.probabilities[0].item()


def test_rotated_copy_has_the_hand_computed_cosine():
    # orthonormal ground truth g_i = Q_i; dictionary row i = cos(t) g_i + sin(t) Q_{N+i}, so
    # cos(g_i, d_j) = cos(t) if i == j else 0: MMCS = cos(t) exactly
    d, n, t = 40, 16, 0.7
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(4), dtype=torch.float64))
    gt, other = q.T[:n], q.T[n : 2 * n]
    dictionary = math.cos(t) * gt + math.sin(t) * other
    assert abs(mmcs(gt, dictionary) - math.cos(t)) < 1e-12
    cos, idx = max_cosines(gt, dictionary)
    assert idx.tolist() == list(range(n))
    assert recovered_fraction(gt, dictionary, math.cos(t) - 1e-9) == 1.0
    assert recovered_fraction(gt, dictionary, math.cos(t) + 1e-9) == 0.0
    # half the rows rotated by t, half exact: mean of cos(t) and 1
    mixed = torch.cat([gt[: n // 2], dictionary[n // 2 :]])
    assert abs(mmcs(gt, mixed) - (1 + math.cos(t)) / 2) < 1e-12


def test_recovery_metrics_refuse_mismatched_dimensions():
    with pytest.raises(ValueError, match=r"must share d, got \[4, 8\] and \[10, 9\]"):
        mmcs(torch.randn(4, 8), torch.randn(10, 9))


def test_generator_firing_statistics_match_the_configuration():
    cfg = SyntheticConfig(d=32, num_features=64, mean_active=3.0, firing_exponent=0.8, seed=5)
    gen = SyntheticActivations(cfg)
    p = gen.probabilities
    assert (p[1:] <= p[:-1]).all() and p[0] > 5 * p[-1]  # decays with the index
    assert abs(p.sum() + torch.prod(1 - p) - 3.0) < 1e-9  # calibrated: expected active count is the target
    n = 20000
    x, coef = gen.sample(n, torch.Generator().manual_seed(6))
    active = coef > 0
    assert active.sum(1).min() >= 1  # at least one feature per sample
    freq = active.double().mean(0)
    marginal = gen.marginal_probabilities()
    sigma = (marginal * (1 - marginal) / n).sqrt()
    assert ((freq - marginal).abs() <= 5 * sigma + 1e-12).all()
    counts = active.sum(1).double()
    assert abs(counts.mean() - 3.0) < 5 * counts.std() / math.sqrt(n)
    magnitudes = coef[active]
    assert magnitudes.min() >= 0.5 and magnitudes.max() <= 1.5 and abs(magnitudes.mean() - 1.0) < 0.01
    assert torch.allclose(x, coef @ gen.features, atol=1e-5)
    assert torch.allclose(gen.features.norm(dim=1), torch.ones(64))


def test_correlated_features_keep_their_marginals_and_correlate():
    gen = SyntheticActivations(
        d=32, num_features=24, mean_active=4.0, firing_exponent=0.3, correlation=0.9, correlation_rank=2, seed=7
    )
    n = 20000
    _, coef = gen.sample(n, torch.Generator().manual_seed(8))
    active = (coef > 0).double()
    assert active.sum(1).min() >= 1
    p = gen.probabilities
    sigma = (p * (1 - p) / n).sqrt()
    # the copula keeps each marginal at p_i; the at-least-one rule adds at most P(no feature) per feature
    silent = (active.sum(1) == 1).double().mean()
    assert ((active.mean(0) - p).abs() <= 6 * sigma + silent).all()
    phi = torch.corrcoef(active.T)
    rho = gen.copula_correlation.double()
    off = ~torch.eye(24, dtype=torch.bool)
    strong_pos, strong_neg = off & (rho > 0.6), off & (rho < -0.6)
    assert strong_pos.any() and strong_neg.any()
    assert (phi[strong_pos] > 0.1).all() and (phi[strong_neg] < 0).all()
    independent = SyntheticActivations(d=32, num_features=24, mean_active=4.0, firing_exponent=0.3, seed=7)
    _, coef0 = independent.sample(n, torch.Generator().manual_seed(8))
    assert torch.corrcoef((coef0 > 0).double().T)[off].abs().max() < 0.05


def test_stream_is_seeded_and_seekable():
    gen = SyntheticActivations(d=16, num_features=32, seed=9, noise_std=0.01)
    first = list(gen.batches(64, num_batches=5))
    assert all(b.shape == (64, 16) for b in first)
    again = list(SyntheticActivations(d=16, num_features=32, seed=9, noise_std=0.01).batches(64, num_batches=5))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    tail = list(gen.batches(64, num_batches=2, start=3))
    assert torch.equal(tail[0], first[3]) and torch.equal(tail[1], first[4])
    other = SyntheticActivations(d=16, num_features=32, seed=10)
    assert not torch.equal(other.features, gen.features)
    forever = gen.batches(8)
    assert len([next(forever) for _ in range(50)]) == 50


def test_config_refuses_bad_values():
    with pytest.raises(ValueError, match="mean_active must be in"):
        SyntheticActivations(num_features=8, mean_active=0.5)
    with pytest.raises(ValueError, match="correlation must be in"):
        SyntheticActivations(correlation=1.0)
    with pytest.raises(ValueError, match="magnitude_min"):
        SyntheticActivations(magnitude_min=2.0, magnitude_max=1.0)
