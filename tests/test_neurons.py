"""Neurons: effective number against hand-computed values; a planted SAE on neurons where one neuron is
driven by exactly three equal features and another by one; peak drivers against brute force across
batches; the neurons sub-artifact through a real model; labels, comparison, CLI and bad inputs."""

from __future__ import annotations

import json
import math

import pytest
import torch
from planted import planted_analysis

from interp.features.analysis.artifact import Analysis
from interp.features.analysis.config import AnalysisConfig
from interp.features.analysis.neuron_pass import NeuronPass
from interp.features.analysis.run import analyze
from interp.features.labels.files import read_labels
from interp.features.labels.labeller import run_labels
from interp.features.neurons import (
    driver_mass,
    driver_shares,
    effective_number,
    neuron_summaries,
    neurons_driven,
    score_comparison,
)

T, CYCLE, N_SEQ = 25, 12, 60  # tokens 1..12 cycle over positions 1..24: each twice per sequence
VOCAB = ["<bos>"] + [f" t{i}" for i in range(1, CYCLE + 1)]
CFG = AnalysisConfig(
    top_k=8,
    intervals=3,
    interval_samples=3,
    window_left=4,
    window_right=2,
    top_tokens=8,
    neighbours=4,
    random_sequences=30,
)


def test_effective_number_known_answers():
    rows = torch.tensor(
        [
            [1.0, 1.0, 1.0, 0.0],  # three equal drivers
            [0.0, 5.0, 0.0, 0.0],  # one
            [1.0, -2.0, 0.0, 0.0],  # negative mass does not drive
            [1.0, 3.0, 0.0, 0.0],  # p = (1/4, 3/4)
            [0.0, -1.0, 0.0, 0.0],  # nothing drives it
        ]
    )
    expected_mixed = math.exp(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))  # 1.7548...
    n = effective_number(rows)
    assert n.tolist() == pytest.approx([3.0, 1.0, 1.0, expected_mixed, 0.0], abs=1e-12)
    g = torch.Generator().manual_seed(0)
    k = torch.rand(7, generator=g)
    assert effective_number(torch.cat([k, torch.zeros(5)])[None]).item() <= 7 + 1e-9
    assert effective_number((k * 0 + 1)[None]).item() == pytest.approx(7.0)


def planted_neuron_sae():
    """Features 0, 1, 2 fire on tokens 1, 2, 3 with equal total mass and all write +1 to neuron 0;
    feature 3 fires on token 4 and writes +2 to neuron 1; feature 4 (token 5) writes -1 to neuron 0
    and +1 to neuron 2, which feature 5 (token 6) also drives with +3 (shares 1/4, 3/4 of equal mass)."""
    F, N = 6, 3
    W_dec = torch.zeros(F, N)
    W_dec[0, 0] = W_dec[1, 0] = W_dec[2, 0] = 1.0
    W_dec[3, 1] = 2.0
    W_dec[4, 0], W_dec[4, 2], W_dec[5, 2] = -1.0, 1.0, 3.0
    tokens = torch.zeros(N_SEQ, T, dtype=torch.long)
    tokens[:, 1:] = 1 + torch.arange(T - 1) % CYCLE
    f = torch.zeros(N_SEQ, T, F)
    for s in range(N_SEQ):
        for i in range(F):
            # each feature meets each offset once every 3 sequences: equal totals; the strongest rotates
            f[s, :, i] = (tokens[s] == i + 1) * (1.0 + 0.01 * s + 0.001 * ((s + i) % 3))
    return f, tokens, W_dec


@pytest.fixture(scope="module")
def planted():
    f, tokens, W_dec = planted_neuron_sae()
    batches = ((f[s : s + 7], tokens[s : s + 7]) for s in range(0, N_SEQ, 7))
    return planted_analysis(batches, VOCAB, CFG, W_dec=W_dec, neurons=True, expected_sequences=N_SEQ), f, tokens, W_dec


def test_planted_neurons_have_the_known_effective_numbers(planted):
    analysis, f, _, W_dec = planted
    D = driver_mass(analysis)
    expected = (f.double().sum((0, 1))[:, None] * W_dec.double()).T
    torch.testing.assert_close(D, expected, rtol=1e-9, atol=1e-9)
    n = effective_number(D)
    assert n[0].item() == pytest.approx(3.0, abs=1e-9)
    assert n[1].item() == pytest.approx(1.0, abs=1e-12)
    assert n[2].item() == pytest.approx(math.exp(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75))), abs=1e-9)
    summaries = neuron_summaries(analysis)
    assert [s.neuron for s in summaries] == [0, 2, 1]  # most polysemantic first
    top = summaries[0]
    assert sorted(d.feature for d in top.drivers) == [0, 1, 2]
    assert [d.share for d in top.drivers] == pytest.approx([1 / 3] * 3, abs=1e-9)


def test_features_list_exactly_the_neurons_that_list_them(planted):
    analysis, _, _, _ = planted
    driven = neurons_driven(analysis)
    for i in range(3):  # one of neuron 0's three equal drivers (rank 1-3); feature 4's -1 there is no drive
        [(j, share, rank)] = driven[i]
        assert j == 0 and share == pytest.approx(1 / 3, abs=1e-9) and rank in (1, 2, 3)
    assert sorted(driven[i][0][2] for i in range(3)) == [1, 2, 3]
    assert driven[3] == [(1, 1.0, 1)]
    assert [(j, rank) for j, _, rank in driven[4]] == [(2, 2)] and driven[4][0][1] == pytest.approx(0.25, abs=1e-9)
    assert [(j, rank) for j, _, rank in driven[5]] == [(2, 1)] and driven[5][0][1] == pytest.approx(0.75, abs=1e-9)

    # random drive, lists of 3: the two views hold the same (neuron, feature, share) triples
    g = torch.Generator().manual_seed(4)
    F, N = 40, 12
    W_dec = torch.randn(F, N, generator=g)
    tokens = torch.randint(1, 9, (20, 10), generator=g)
    f = torch.relu(torch.randn(20, 10, F, generator=g)) * (torch.rand(20, 10, F, generator=g) < 0.3)
    random = planted_analysis(
        [(f, tokens)], [f"t{k}" for k in range(9)], CFG, W_dec=W_dec, neurons=True, expected_sequences=20
    )
    from_neurons = {
        (s.neuron, d.feature, round(d.share, 12)) for s in neuron_summaries(random, drivers=3) for d in s.drivers
    }
    from_features = {(j, i, round(share, 12)) for i, row in enumerate(neurons_driven(random, 3)) for j, share, _ in row}
    assert from_neurons == from_features and len(from_neurons) == 3 * N
    shares = driver_shares(random)
    D = (f.double().sum((0, 1))[:, None] * W_dec.double()).T.clamp_min(0)  # [N, F] by hand
    torch.testing.assert_close(shares, D / D.sum(1, keepdim=True), rtol=1e-5, atol=1e-9)


def test_top_examples_are_grouped_by_the_feature_at_the_peak(planted):
    analysis, f, tokens, W_dec = planted
    t = analysis.neurons.tensors
    L = CFG.window_left
    groups = neuron_summaries(analysis)[0].groups
    assert sorted(g.feature for g in groups) == [0, 1, 2]  # the strongest driver rotates over sequences
    for g in groups:
        for k in g.examples:
            assert int(t["top_tokens"][0, k, L]) == g.feature + 1  # feature i fires on token i + 1
    # every recorded driver is the brute-force contribution f_i W_dec[i, j] at the peak
    for j in range(3):
        for k in range(CFG.top_k):
            s, p = int(t["top_seq"][j, k]), int(t["top_pos"][j, k])
            if s < 0:
                continue
            contribution = f[s, p] * W_dec[:, j]
            best = int(contribution.argmax())
            assert int(t["peak_driver_ids"][j, k, 0]) == best
            assert t["peak_driver_values"][j, k, 0].item() == pytest.approx(contribution[best].item(), rel=1e-6)


def test_peak_drivers_follow_their_examples_across_batches():
    """Random activations over many batches: slots are re-ordered and replaced as the top-k merges, and
    each slot's drivers must still be those of its own example."""
    g = torch.Generator().manual_seed(3)
    F, N, B, TT = 20, 6, 4, 10
    W_dec = torch.randn(F, N, generator=g)
    cfg = AnalysisConfig(top_k=5, intervals=2, interval_samples=2, window_left=2, window_right=1, random_sequences=2)
    pass_ = NeuronPass(W_dec, 30, TT, cfg, expected_sequences=48)
    fs, ts = [], []
    for _ in range(12):
        f = torch.relu(torch.randn(B, TT, F, generator=g)) * (torch.rand(B, TT, F, generator=g) < 0.3)
        tokens = torch.randint(1, 30, (B, TT), generator=g)
        pass_.update(f @ W_dec, f, tokens)
        fs.append(f)
        ts.append(tokens)
    f_all = torch.cat(fs)
    x_all = f_all @ W_dec
    top = pass_.stats.top.fields
    checked = 0
    for j in range(N):
        for k in range(cfg.top_k):
            s, p = int(top["seq"][j, k]), int(top["pos"][j, k])
            if s < 0:
                continue
            assert x_all[s, p, j] == pytest.approx(pass_.stats.top.scores[j, k].item(), rel=1e-5)
            contribution = f_all[s, p] * W_dec[:, j]
            expected = contribution.topk(4).indices[contribution.topk(4).values > 0]
            assert pass_.driver_ids[j, k, : len(expected)].tolist() == expected.tolist()
            checked += 1
    assert checked == N * cfg.top_k


def test_neuron_labels_and_the_comparison(planted, tmp_path):
    from interp.app.cli.main import main

    analysis, _, _, _ = planted
    analysis.save(tmp_path / "a")
    written = run_labels(tmp_path / "a", progress=False)
    assert set(written) == {"features", "neurons"} and written["neurons"].parent.name == "neurons"
    loaded = Analysis.load(tmp_path / "a")
    summaries = {s.neuron: s for s in neuron_summaries(loaded)}
    assert summaries[1].label.startswith("fires on `") and summaries[1].label_score == 1.0  # neuron 1 is feature 3
    assert summaries[1].drivers[0].label == summaries[1].label.split(" · ")[0]
    assert summaries[1].label_positives == read_labels(tmp_path / "a" / "neurons")[1]["held_out"]["positives"] > 0
    assert main(["neurons", "--analysis", str(tmp_path / "a"), "--top", "2"]) == 0
    assert main(["neurons", "--analysis", str(tmp_path / "a"), "--json"]) == 0


def test_neurons_cli_json(planted, tmp_path, capsys):
    from interp.app.cli.main import main

    analysis, _, _, _ = planted
    analysis.save(tmp_path / "a")
    capsys.readouterr()
    assert main(["neurons", "--analysis", str(tmp_path / "a"), "--json", "--top", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["neurons"][0]["neuron"] == 0 and out["neurons"][0]["effective_features"] == pytest.approx(3.0)
    assert out["label_scores"]["features"]["count"] == 0


def test_score_comparison_known_values():
    c = score_comparison([0.5, 0.7, 0.9, 1.0], [0.5, 0.6])
    assert c["features"]["count"] == 4 and c["features"]["mean"] == pytest.approx(0.775)
    assert c["features"]["median"] == pytest.approx(0.8) and c["features"]["share_ge_0.9"] == pytest.approx(0.5)
    assert c["features"]["q25"] == pytest.approx(0.65)  # linear interpolation at rank 0.75: 0.5 + 0.75 * (0.7 - 0.5)
    assert c["neurons"]["median"] == pytest.approx(0.55) and c["neurons"]["share_ge_0.75"] == 0.0
    assert score_comparison([], [])["features"]["mean"] is None


def test_drivers_need_an_mlp_analysis(planted):
    analysis, _, _, _ = planted
    other = Analysis(
        meta={**analysis.meta, "neurons_written": False, "hook_name": "blocks.0.hook_resid_post"},
        tensors=analysis.tensors,
        token_strings=analysis.token_strings,
    )
    with pytest.raises(ValueError, match="neurons_written.*mlp.hook_post"):
        driver_mass(other)


def test_neurons_sub_artifact_through_a_model(tmp_path):
    """analyze() on a real (tiny, untrained) model's MLP: the neuron statistics are those of the raw
    hook activations, and they survive save/load."""
    import transformer_lens.model_bridge.sources.native  # noqa: F401
    from transformer_lens.model_bridge.bridge import TransformerBridge

    from interp.model.tokenizer import train_tokenizer
    from interp.model.transformer import LoadedModel
    from sae.architectures import build_sae

    text = [f"def f{i}(x):\n    return x * {i}\n" for i in range(100)]
    tokenizer = train_tokenizer(text, vocab_size=280, show_progress=False)
    bridge = TransformerBridge.boot_native(
        dict(
            d_model=32,
            d_head=8,
            n_layers=1,
            n_ctx=16,
            n_heads=4,
            d_vocab=280,
            d_mlp=48,
            act_fn="gelu",
            seed=0,
            normalization_type="LN",
        )
    )
    model = LoadedModel(bridge=bridge.eval(), tokenizer=tokenizer, name="tiny", context_length=16)
    windows = torch.randint(1, tokenizer.vocab_size, (24, 16), generator=torch.Generator().manual_seed(1))
    windows[:, 0] = tokenizer.bos_id
    torch.manual_seed(0)
    sae = build_sae("topk", d_in=48, d_sae=40, k=5)
    cfg = AnalysisConfig(
        top_k=4, intervals=2, interval_samples=2, window_left=3, window_right=1, random_sequences=4, batch_size=5
    )
    analysis = analyze(model, sae, "blocks.0.mlp.hook_post", iter(windows), cfg, progress=False)
    with torch.no_grad():
        _, cache = bridge.run_with_cache(windows, names_filter=lambda n: n == "blocks.0.mlp.hook_post")
    x = cache["blocks.0.mlp.hook_post"].clone()
    x[:, 0] = 0.0  # BOS is left out
    n = analysis.neurons
    assert n.d_sae == 48 and n.meta["dictionary"] == "neurons"
    assert n.tensors["fire_count"].tolist() == (x > 0).sum((0, 1)).tolist()
    torch.testing.assert_close(n.tensors["max_activation"], x.clamp_min(0).amax((0, 1)))
    assert "logit_top_ids" in n.tensors and n.tensors["peak_driver_ids"].shape == (48, 4, 4)
    analysis.save(tmp_path / "a")
    loaded = Analysis.load(tmp_path / "a")
    assert loaded.neurons is not None and torch.equal(
        loaded.neurons.tensors["peak_driver_ids"], n.tensors["peak_driver_ids"]
    )
    assert len(neuron_summaries(loaded)) == 48
