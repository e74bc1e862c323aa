"""The scorecard's measurement: exact thresholds, masks and folds, cross-fitted scorers and baselines, the
document bootstrap, verdicts that survive a different split, unit purity and absorption, each against a
brute force or a planted ground truth."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from interp.features.scorecard.absorption import absorption
from interp.features.scorecard.crossfit import baseline_counts, score_side
from interp.features.scorecard.intervals import Resampler, f1_of, interval
from interp.features.scorecard.measures import best_thresholds, fit_probes, probe_scores, standardised_difference
from interp.features.scorecard.purity import unit_measures
from interp.features.scorecard.tokens import ScoredTokens, carried_runs, fold_of_documents
from interp.features.scorecard.verdicts import Scored, summary


def brute_best_f1(values: torch.Tensor, truth: torch.Tensor) -> float:
    """The best F1 of "values >= t" over every value t but the minimum, in float64."""
    return max(
        (2 * float((values >= t)[truth].sum()) / float(truth.sum() + (values >= t).sum()) for t in values.unique()[1:]),
        default=math.nan,
    )


def test_best_thresholds_equal_the_brute_force_on_sparse_dense_and_tied_columns():
    g = torch.Generator().manual_seed(7)
    n = 300
    scores = torch.randn(n, 6, generator=g).round(decimals=1)
    scores[:, 1] = scores[:, 1].relu()  # ties at zero
    scores[:, 2] = torch.where(torch.rand(n, generator=g) < 0.05, torch.rand(n, generator=g) + 0.5, 0.0)  # sparse
    scores[:, 3] = 1.0  # constant
    truth = torch.rand(n, generator=g) < 0.2
    scores[:, 4] = truth.float() * 2 + 0.001 * torch.randn(n, generator=g)  # the concept itself
    f1, threshold = best_thresholds(scores, truth)
    for u in range(6):
        expected = brute_best_f1(scores[:, u], truth)
        if math.isnan(expected):
            assert math.isnan(f1[u].item()) and math.isnan(threshold[u].item())
            continue
        assert f1[u].item() == pytest.approx(expected, abs=1e-12)
        fired = scores[:, u] >= threshold[u].float()
        assert 2 * float((fired & truth).sum()) / float(truth.sum() + fired.sum()) == pytest.approx(expected)
    assert f1[4] == 1.0


def test_standardised_difference_is_scale_free_and_equals_numpy():
    g = torch.Generator().manual_seed(1)
    acts = torch.randn(500, 4, generator=g)
    labels = torch.rand(500, 2, generator=g) < 0.3
    acts[:, 1] += 2 * labels[:, 0]
    weights = (torch.rand(500, 2, generator=g) < 0.9).float()
    got = standardised_difference(acts, labels, weights)
    scaled = standardised_difference(acts * torch.tensor([1.0, 1000.0, 0.01, 5.0]), labels, weights)
    assert torch.allclose(got, scaled, rtol=1e-4)
    x, y, w = acts.double().numpy(), labels.numpy(), weights.numpy() > 0
    for u in range(4):
        for c in range(2):
            on, off = x[y[:, c] & w[:, c], u], x[~y[:, c] & w[:, c], u]
            pooled = (on.var() * len(on) + off.var() * len(off)) / (len(on) + len(off))
            assert got[u, c].item() == pytest.approx((on.mean() - off.mean()) / math.sqrt(pooled), rel=1e-4)
    assert got[1, 0] > 1.5


def test_a_probe_on_the_unit_that_carries_the_concept_ranks_its_tokens():
    g = torch.Generator().manual_seed(2)
    acts = torch.rand(3000, 3, generator=g)
    labels = (acts[:, 1] > 0.8)[:, None]
    fitted = fit_probes(acts[:, None, :], labels, torch.ones(3000, 1))
    scores = probe_scores(acts[:, None, :], fitted)[0]
    f1, _ = best_thresholds(scores[:, None], labels[:, 0])
    assert f1[0] > 0.99  # the two noise units move a few tokens across the boundary
    left_out = fit_probes(acts[:, None, :], labels, (acts[:, 1] < 0.5).float()[:, None])  # no positive is weighed
    assert probe_scores(acts[:, None, :], left_out).isfinite().all()


def test_carried_runs_mask_the_leading_positives_of_continuing_windows_only():
    labels = np.zeros((2, 6, 1), dtype=bool)
    labels[:, 1:3, 0] = True  # a run from the first token
    labels[:, 4, 0] = True  # a later span, opened inside the window
    got = carried_runs(labels, np.array([True, False]))[..., 0]
    assert got[0].tolist() == [False, True, True, False, False, False]
    assert not got[1].any()  # a window that starts its document sees the span open


def test_folds_hold_whole_documents_with_balanced_tokens():
    sizes = np.array([50, 10, 40, 30, 20, 25, 5])
    fold = fold_of_documents(sizes, 2, seed=0)
    totals = np.bincount(fold, weights=sizes)
    assert set(fold.tolist()) == {0, 1} and abs(totals[0] - totals[1]) <= 10
    assert np.array_equal(fold, fold_of_documents(sizes, 2, seed=0))


def planted_tokens(N=6000, D=24, C=3, *, seed=0, fold_seed=0, labels=None, ids=None) -> ScoredTokens:
    """Synthetic scored tokens: D documents of equal length, C concepts at 10% (or the labels given)."""
    g = torch.Generator().manual_seed(seed)
    if labels is None:
        labels = torch.rand(N, C, generator=g) < 0.1
    document = torch.arange(N) * D // N
    fold = torch.from_numpy(fold_of_documents(np.bincount(document.numpy()), 2, fold_seed))
    if ids is None:
        ids = torch.randint(50, (N,), generator=g)
    prev = torch.cat([torch.tensor([0]), ids[:-1]])
    return ScoredTokens(
        ids=ids,
        prev_ids=prev,
        next_ids=torch.full((N,), -1),
        labels=labels,
        visible=torch.ones_like(labels),
        document=document,
        fold=fold[document],
        windows=ids[None, :],
        kept=torch.ones(N, dtype=torch.bool),
        documents=D,
        folds=2,
    )


def scored_table(tokens: ScoredTokens, sides: dict[str, torch.Tensor], *, draws=300) -> Scored:
    concepts = torch.ones(tokens.labels.shape[1], dtype=torch.bool)
    found = {side: score_side(acts, tokens, concepts) for side, acts in sides.items()}
    return Scored(found, baseline_counts(tokens, concepts, 64), Resampler(tokens.documents, draws=draws), concepts)


def test_a_planted_family_whose_union_is_the_concept_scores_one():
    g = torch.Generator().manual_seed(3)
    tokens = planted_tokens(C=1)
    concept = tokens.labels[:, 0]
    part = torch.randint(4, (len(concept),), generator=g)  # the concept split over four features
    features = torch.rand(len(concept), 30, generator=g) * (torch.rand(len(concept), 30, generator=g) < 0.02)
    for j in range(4):
        features[:, j] = (concept & (part == j)).float() * 2.0  # one value: a threshold chosen elsewhere holds
    table = scored_table(tokens, {"features": features})
    assert table.f1[("features", "or4")][0, 0] == 1.0 and table.f1[("features", "family")][0, 0] == 1.0
    assert table.f1[("features", "k1")][0, 0] < 0.5  # one member alone holds a quarter of it


def test_a_token_identity_concept_is_won_by_the_lookup_baseline():
    g = torch.Generator().manual_seed(4)
    ids = torch.randint(50, (6000,), generator=g)
    labels = torch.stack([(ids == 3) | (ids == 7), torch.rand(6000, generator=g) < 0.1], dim=1)
    tokens = planted_tokens(labels=labels, ids=ids)
    noise = torch.rand(6000, 40, generator=g) * (torch.rand(6000, 40, generator=g) < 0.05)
    table = scored_table(tokens, {"features": noise, "neurons": torch.randn(6000, 8, generator=g)})
    assert table.baseline["token"][0, 0] == 1.0 and bool(table.token_identity[0]) and bool(table.context[1])
    assert table.f1[("features", "k1")][0, 0] < table.base[0, 0]  # no win below the baseline


def test_random_units_leave_the_verdict_open_and_planted_neurons_win():
    g = torch.Generator().manual_seed(5)
    tokens = planted_tokens(C=4)
    N = len(tokens.ids)

    def noise(width):
        return torch.rand(N, width, generator=g) * (torch.rand(N, width, generator=g) < 0.1)

    table = scored_table(tokens, {"features": noise(40), "neurons": noise(40)})
    headline = summary(table)["kinds"]["context"]
    random = [c for c in headline["comparisons"] if c["scorer"] == "k1"][0]
    assert random["difference"]["low"] < 0 < random["difference"]["high"]  # chance against chance: a tie
    assert random["verdict"] == "no verdict: the interval includes a tie"
    assert random["median_skill_a"]["low"] <= 0.05  # a random unit does not beat the trivial detectors
    neurons = torch.cat([tokens.labels.float() + 0.01 * torch.randn(N, 4, generator=g), torch.randn(N, 4)], 1)
    planted = scored_table(tokens, {"features": noise(40), "neurons": neurons})
    found = [c for c in summary(planted)["kinds"]["context"]["comparisons"] if c["scorer"] == "k1"][0]
    assert found["verdict"] == "neurons ahead" and found["wins_b"]["value"] == 4


def test_a_stated_verdict_stands_when_the_folds_are_swapped_or_redrawn():
    g = torch.Generator().manual_seed(6)
    verdicts = []
    for fold_seed, swap in ((0, False), (0, True), (1, False), (2, False)):
        tokens = planted_tokens(C=5, seed=9, fold_seed=fold_seed)
        if swap:
            tokens.fold = 1 - tokens.fold
        N = len(tokens.ids)
        g.manual_seed(6)
        strong = tokens.labels.float() * (torch.rand(N, 5, generator=g) < 0.9) + 0.3 * torch.rand(N, 5, generator=g)
        weak = tokens.labels.float() * (torch.rand(N, 5, generator=g) < 0.5) + 0.5 * torch.rand(N, 5, generator=g)
        table = scored_table(tokens, {"features": strong, "neurons": weak})
        found = [c for c in summary(table)["kinds"]["context"]["comparisons"] if c["scorer"] == "k1"][0]
        verdicts.append(found["verdict"])
    assert verdicts == ["features ahead"] * 4


def test_the_bootstrap_point_is_the_data_and_draws_resample_documents():
    counts = torch.tensor([[[3, 1, 0]], [[1, 0, 2]], [[0, 2, 1]]])  # 3 documents, 1 concept
    resampler = Resampler(3, draws=200, seed=1)
    draws = resampler.f1(counts)
    assert draws[0, 0] == pytest.approx(2 * 4 / (2 * 4 + 3 + 3))
    assert torch.all(resampler.weights.sum(1) == 3)
    assert f1_of(torch.tensor([0, 0, 0])).isnan()
    found = interval(draws[:, 0])
    assert found["low"] <= found["value"] <= found["high"]


def test_unit_purity_entropy_correlation_and_specificity_on_planted_units():
    g = torch.Generator().manual_seed(8)
    N = 4000
    truth = torch.rand(N, 2, generator=g) < torch.tensor([0.2, 0.5])
    ids = torch.randint(30, (N,), generator=g)
    acts = torch.stack(
        [
            truth[:, 0].float() * torch.rand(N, generator=g),  # only on concept 0
            torch.rand(N, generator=g),  # everywhere
            (ids == 4).float() * 2.0,  # one token id
        ],
        dim=1,
    )
    got = unit_measures(acts, truth, ids, 30, torch.tensor([True, True]))
    assert got["purity"][0].item() == pytest.approx(1.0) and got["best_concept"][0] == 0
    assert abs(got["purity"][1].item()) < 0.05
    assert got["token_entropy"][2].item() == pytest.approx(0.0, abs=1e-9)
    best = int(got["best_concept"][1])
    expected = np.corrcoef(acts[:, 1].numpy(), truth[:, best].numpy())[0, 1]
    assert got["pearson_r"][1].item() == pytest.approx(expected, abs=1e-5)
    assert torch.allclose(got["deciles"][0][torch.isfinite(got["deciles"][0])], torch.tensor(1.0, dtype=torch.float64))


def test_absorption_counts_child_positives_the_parent_unit_leaves_to_the_child_unit():
    names = ["python.keyword", "python.keyword def", "python.keyword if"]
    N = 100
    document = torch.arange(N) // 10
    child_def, child_if = torch.zeros(N, dtype=torch.bool), torch.zeros(N, dtype=torch.bool)
    child_def[:20], child_if[20:40] = True, True
    truth = torch.stack([child_def | child_if, child_def, child_if], dim=1)
    fired = truth.clone()
    fired[:10, 0] = False  # the parent unit misses ten `def`s ...
    fired[:5, 1] = False  # ... five of which the `def` unit does not take either
    found = absorption(fired, truth, document, names, torch.ones(3, dtype=torch.bool), Resampler(10, draws=50))
    assert found["child_positives"] == 40
    assert found["parent_miss_rate"]["value"] == pytest.approx(10 / 40)
    assert found["absorption_rate"]["value"] == pytest.approx(5 / 40)


def test_skill_is_the_share_of_headroom_won_above_the_baseline_and_of_its_f1_lost_below():
    from interp.features.scorecard.intervals import skill_of

    got = skill_of(torch.tensor([0.9, 0.3, 0.6, 0.0, 1.0]), torch.tensor([0.6, 0.6, 0.6, 0.6, 1.0]))
    assert got[:4].tolist() == pytest.approx([0.75, -0.5, 0.0, -1.0]) and got[4].isnan()
