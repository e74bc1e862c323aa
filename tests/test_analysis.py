"""Feature analysis: every streamed statistic against a brute-force computation over the whole dense
activation tensor; a planted model/SAE case whose answers are known by construction; the logit map
against the model's own forward pass; the artifact and CLI, bad inputs included."""

from __future__ import annotations

import json
import math
from collections import defaultdict

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from interp.features.analysis.artifact import Analysis
from interp.features.analysis.config import AnalysisConfig
from interp.features.analysis.decoder import LogitMap, decoder_statistics, logit_map
from interp.features.analysis.run import analyze, resolve_ignored_tokens
from interp.features.analysis.statistics import FeatureStatistics
from interp.features.analysis.tables import hash_keys, rank_in_group

F, V, T = 24, 50, 16
BOS, IGNORED = 0, 7


def planted_stream(seed: int, batch_sizes=(3, 5, 1, 4, 3)) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Batches (f [B, T, F], tokens [B, T]) of sparse log-normal activations spanning many octaves,
    with a few negative values (which must count as not firing) and BOS first in every window."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for i, B in enumerate(batch_sizes):
        tokens = torch.randint(1, V, (B, T), generator=g)
        tokens[:, 0] = BOS
        scale = torch.exp(torch.randn(1, 1, F, generator=g)) * (1 + i)  # later batches reach higher octaves
        f = torch.exp(torch.randn(B, T, F, generator=g) * 1.5) * scale
        f = f * (torch.rand(B, T, F, generator=g) < 0.25)
        f[torch.rand(B, T, F, generator=g) < 0.02] = -1.0
        batches.append((f, tokens))
    return batches


def brute_force(batches, cfg: AnalysisConfig, ignored: list[int]) -> dict:
    """Every statistic from the whole dense tensor, with plain loops and numpy float64."""
    f = torch.cat([b[0] for b in batches]).double().numpy()
    tokens = torch.cat([b[1] for b in batches]).numpy()
    analysed = ~np.isin(tokens, ignored)
    f = np.where(analysed[..., None] & (f > 0), f, 0.0)
    S = f.shape[0]
    out: dict = {
        "tokens": int(analysed.sum()),
        "fire_count": (f > 0).sum((0, 1)),
        "sum": f.sum((0, 1)),
        "max": f.max((0, 1)),
    }
    bpo, low = cfg.bins_per_octave, cfg.histogram_low_exp
    hist = np.zeros((F, cfg.histogram_bins), dtype=np.int64)
    s_idx, p_idx, j_idx = np.nonzero(f)
    for s, p, j in zip(s_idx, p_idx, j_idx):
        level = math.floor(math.log2(f[s, p, j]) * bpo)
        hist[j, min(max(level - low * bpo + 1, 0), cfg.histogram_bins - 1)] += 1
    out["histogram"] = hist
    out["sequences_fired"] = (f.max(1) > 0).sum(0)

    def window(s, p, j):
        toks, acts = [], []
        for o in range(-cfg.window_left, cfg.window_right + 1):
            q = p + o
            toks.append(int(tokens[s, q]) if 0 <= q < T else -1)
            acts.append(float(f[s, q, j]) if 0 <= q < T else 0.0)
        return toks, acts

    top = {}
    for j in range(F):
        per_seq = [(f[s, :, j].max(), s, int(f[s, :, j].argmax())) for s in range(S) if f[s, :, j].max() > 0]
        per_seq.sort(key=lambda e: -e[0])
        top[j] = [
            (s, p, v, (f[s, :, j] > 0).sum() / analysed[s].sum(), *window(s, p, j)) for v, s, p in per_seq[: cfg.top_k]
        ]
    out["top"] = top

    intervals = {}
    for j in range(F):
        if out["max"][j] <= 0:
            continue
        top_octave = math.floor(math.log2(out["max"][j]))
        for i in range(cfg.intervals):
            octave = top_octave - i
            firings = [
                (s, p) for s, p in zip(*np.nonzero(f[:, :, j] > 0)) if math.floor(math.log2(f[s, p, j])) == octave
            ]
            keys = hash_keys(torch.tensor([(s * T + p) * F + j for s, p in firings], dtype=torch.long)).tolist()
            chosen = [firings[k] for k in np.argsort(keys, kind="stable")[: cfg.interval_samples]]
            intervals[j, i] = (
                octave,
                len(firings),
                {(int(s), int(p)): (f[s, p, j], window(s, p, j)) for s, p in chosen},
            )
    out["intervals"] = intervals

    mass = defaultdict(lambda: [0.0, 0])
    cofire = defaultdict(int)
    for s in range(S):
        for p in range(T):
            active = np.nonzero(f[s, p])[0]
            if len(active) > cfg.cofire_max_active:
                active = active[np.argsort(-f[s, p, active], kind="stable")[: cfg.cofire_max_active]]
            for j in np.nonzero(f[s, p])[0]:
                mass[j, int(tokens[s, p])][0] += f[s, p, j]
                mass[j, int(tokens[s, p])][1] += 1
            for a in active:
                for b in active:
                    if a != b:
                        cofire[int(a), int(b)] += 1
    out["mass"], out["cofire"], out["f"], out["token_array"] = dict(mass), dict(cofire), f, tokens
    return out


def run_stream(batches, cfg: AnalysisConfig, ignored: list[int]) -> FeatureStatistics:
    stats = FeatureStatistics(F, V, T, cfg, ignored_ids=ignored, expected_sequences=sum(b[0].shape[0] for b in batches))
    for f, tokens in batches:
        stats.update(f, tokens)
    return stats


SMALL = dict(
    top_k=5,
    intervals=3,
    interval_samples=3,
    window_left=3,
    window_right=2,
    top_tokens=6,
    neighbours=5,
    random_sequences=4,
)


@pytest.mark.parametrize(
    "variant",
    [
        dict(),  # dense pair tables
        dict(dense_pair_limit=1),  # sparse pair tables, exact
        dict(cofire_max_active=3),  # co-firing among each token's 3 strongest features
    ],
)
def test_streamed_statistics_equal_brute_force(variant):
    cfg = AnalysisConfig(**SMALL, **variant)
    batches = planted_stream(seed=1)
    ignored = [BOS, IGNORED]
    stats = run_stream(batches, cfg, ignored)
    r, ref = stats.result(), brute_force(batches, cfg, ignored)
    assert stats.flags()["token_mass_exact"] and stats.flags()["cofire_exact"]
    assert stats.tokens_seen == ref["tokens"]
    assert r["fire_count"].tolist() == ref["fire_count"].tolist()
    assert r["fire_count"].sum() > 100 and (r["fire_count"] > 0).all()
    np.testing.assert_allclose(r["activation_sum"].numpy(), ref["sum"], rtol=1e-12)
    np.testing.assert_array_equal(r["max_activation"].numpy(), ref["max"].astype(np.float32))
    np.testing.assert_allclose(r["density"].numpy(), ref["fire_count"] / ref["tokens"])
    np.testing.assert_array_equal(r["histogram"].numpy(), ref["histogram"])
    assert r["sequences_fired"].tolist() == ref["sequences_fired"].tolist()

    for j in range(F):  # top examples: one per sequence, largest first, with their windows
        expected = ref["top"][j]
        n = len(expected)
        assert r["top_seq"][j, :n].tolist() == [e[0] for e in expected]
        assert r["top_pos"][j, :n].tolist() == [e[1] for e in expected]
        np.testing.assert_allclose(r["top_value"][j, :n].numpy(), [e[2] for e in expected], rtol=1e-6)
        np.testing.assert_allclose(r["top_seq_share"][j, :n].numpy(), [e[3] for e in expected], rtol=1e-6)
        assert r["top_tokens"][j, :n].tolist() == [e[4] for e in expected]
        np.testing.assert_allclose(r["top_acts"][j, :n].numpy(), [e[5] for e in expected], rtol=1e-6)
        assert (r["top_seq"][j, n:] == -1).all()

    shifted = 0
    for j in range(F):  # interval samples: the S smallest hash keys of every firing in each octave
        for i in range(cfg.intervals):
            octave, count, chosen = ref["intervals"][j, i]
            assert int(r["interval_octave"][j, i]) == octave
            assert int(r["interval_count"][j, i]) == count
            got = {
                (int(s), int(p)): k
                for k, (s, p) in enumerate(zip(r["interval_seq"][j, i].tolist(), r["interval_pos"][j, i].tolist()))
                if s >= 0
            }
            assert set(got) == set(chosen)
            for key, k in got.items():
                value, (toks, acts) = chosen[key]
                assert r["interval_value"][j, i, k].item() == pytest.approx(value, rel=1e-6)
                assert 2.0**octave <= r["interval_value"][j, i, k].item() < 2.0 ** (octave + 1)
                assert r["interval_tokens"][j, i, k].tolist() == toks
                np.testing.assert_allclose(r["interval_acts"][j, i, k].numpy(), acts, rtol=1e-6)
            shifted += count > len(chosen)
    assert shifted > 0  # some octaves held more firings than samples: the reservoir did choose

    for j in range(F):  # activation mass by token: the top tokens, their mass and count
        by_token = sorted(((m, c, t) for (jj, t), (m, c) in ref["mass"].items() if jj == j), reverse=True)[
            : cfg.top_tokens
        ]
        ids = r["token_mass_ids"][j]
        assert ids[: len(by_token)].tolist() == [t for _, _, t in by_token]
        np.testing.assert_allclose(r["token_mass"][j, : len(by_token)].numpy(), [m for m, _, _ in by_token], rtol=1e-5)
        assert r["token_mass_count"][j, : len(by_token)].tolist() == [c for _, c, _ in by_token]
    assert r["token_counts"][[BOS, IGNORED]].tolist() == [0, 0]
    assert r["token_counts"].sum() == ref["tokens"]

    fire = ref["fire_count"]
    for j in range(F):  # co-firing: counts and the top features by Jaccard index
        pairs = [(c / (fire[j] + fire[b] - c), c, b) for (a, b), c in ref["cofire"].items() if a == j]
        pairs.sort(key=lambda e: (-e[0], e[2]))
        n = min(len(pairs), cfg.neighbours)
        got = dict(zip(r["cofire_ids"][j, :n].tolist(), r["cofire_count"][j, :n].tolist()))
        assert all(ref["cofire"][j, b] == c for b, c in got.items())
        np.testing.assert_allclose(
            sorted(r["cofire_jaccard"][j, :n].tolist(), reverse=True), [e[0] for e in pairs[:n]], rtol=1e-6
        )

    f_all, tokens_all = ref["f"], ref["token_array"]  # the random sample: whole windows, every firing
    chosen_seqs = [s for s in range(f_all.shape[0]) if s % stats.random_stride == 0][: cfg.random_sequences]
    assert r["random_tokens"].tolist() == tokens_all[chosen_seqs].tolist()
    ptr = r["random_ptr"]
    for k, s in enumerate(chosen_seqs):
        for p in range(T):
            a, b = int(ptr[k * T + p]), int(ptr[k * T + p + 1])
            dense = np.zeros(F)
            dense[r["random_features"][a:b].long().numpy()] = r["random_values"][a:b].numpy()
            np.testing.assert_allclose(dense, f_all[s, p], rtol=1e-6)


def test_pruned_pair_tables_say_so_and_never_overstate():
    cfg = AnalysisConfig(**SMALL, dense_pair_limit=1, max_pairs=F * 4)
    batches = planted_stream(seed=2)
    stats = FeatureStatistics(F, V, T, cfg, ignored_ids=[BOS], expected_sequences=16)
    for f, tokens in batches:
        stats.update(f, tokens)
        stats.token_mass._coalesce()  # force the table to its cap after every batch
    r, ref = stats.result(), brute_force(batches, cfg, [BOS])
    assert stats.flags()["token_mass_exact"] is False
    for j in range(F):
        for t, m, c in zip(
            r["token_mass_ids"][j].tolist(), r["token_mass"][j].tolist(), r["token_mass_count"][j].tolist()
        ):
            if t >= 0:
                assert m <= ref["mass"][j, t][0] * (1 + 1e-6) and c <= ref["mass"][j, t][1]


def test_random_sample_keeps_no_batch_alive():
    """The kept windows' firings are copies: a view would pin every batch's firing arrays in memory."""
    cfg = AnalysisConfig(**SMALL)
    stats = run_stream(planted_stream(seed=4), cfg, [BOS])
    assert stats.random_entries
    for tensors in stats.random_entries:
        for t in tensors:
            assert t.untyped_storage().nbytes() == t.numel() * t.element_size()


def test_rank_in_group_and_hash():
    g = torch.tensor([2, 0, 2, 2, 0, 1])
    s = torch.tensor([0.5, 3.0, 0.9, 0.1, 4.0, 1.0])
    assert rank_in_group(g, s, largest=True).tolist() == [1, 1, 0, 2, 0, 0]
    keys = hash_keys(torch.arange(200_000))
    assert keys.min() >= 0 and keys.max() < 2**31 - 1
    assert len(torch.unique(keys)) > 199_990  # near-injective
    counts = torch.bincount(keys * 16 // (2**31 - 1), minlength=16).double()  # near-uniform
    assert ((counts - counts.mean()).abs() / counts.mean()).max() < 0.03


def test_config_and_shape_errors():
    with pytest.raises(ValueError, match="top_k"):
        AnalysisConfig(top_k=0).validate()
    with pytest.raises(ValueError, match="histogram_high_exp"):
        AnalysisConfig(histogram_low_exp=3, histogram_high_exp=3).validate()
    stats = FeatureStatistics(F, V, T, AnalysisConfig(**SMALL))
    with pytest.raises(ValueError, match=r"f \[B, 16, 24\]"):
        stats.update(torch.rand(2, T, F + 1), torch.zeros(2, T, dtype=torch.long))
    with pytest.raises(ValueError, match="neither a token string"):
        resolve_ignored_tokens(["nope"], ["a", "b"], bos_id=0)
    assert resolve_ignored_tokens(["b", "0"], ["a", "b"], bos_id=None) == [0, 1]


# ---- through a model -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model():
    """A 1-layer native model (untrained), a byte-level tokenizer and held-out-like token windows."""
    import transformer_lens.model_bridge.sources.native  # noqa: F401
    from transformer_lens.model_bridge.bridge import TransformerBridge

    from interp.model.tokenizer import train_tokenizer
    from interp.model.transformer import LoadedModel

    text = [f"def f{i}(x):\n    return x * {i} + {i % 7}\n" for i in range(300)]
    tokenizer = train_tokenizer(text, vocab_size=300, show_progress=False)
    bridge = TransformerBridge.boot_native(
        dict(
            d_model=32,
            d_head=8,
            n_layers=1,
            n_ctx=T,
            n_heads=4,
            d_vocab=300,
            d_mlp=64,
            act_fn="gelu",
            seed=0,
            normalization_type="LN",
        )
    )
    model = LoadedModel(bridge=bridge.eval(), tokenizer=tokenizer, name="tiny", context_length=T)
    g = torch.Generator().manual_seed(3)
    windows = torch.randint(1, tokenizer.vocab_size, (40, T), generator=g)
    windows[:, 0] = tokenizer.bos_id
    return model, windows


class TokenDetector:
    """A hand-made "SAE" on hook_embed: feature i fires, with value |E[t_i]|^2, exactly on token t_i
    (features 0 and 1 both detect token t_0, so they co-fire on every firing and share a decoder)."""

    def __init__(self, W_E: torch.Tensor, token_ids: list[int]):
        self.token_ids = token_ids
        self.E = W_E[token_ids].detach().float()  # [F, d_model]
        self.W_dec = self.E / self.E.norm(dim=1, keepdim=True)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        sims = x.float() @ self.E.T  # [n, F]
        own = (self.E * self.E).sum(1)
        return torch.where((sims - own).abs() < 1e-4 * own, sims, 0.0)


def test_planted_token_detectors_are_found(tiny_model):
    model, windows = tiny_model
    W_E = model.bridge.W_E
    counts = torch.bincount(windows[:, 1:].reshape(-1), minlength=300)
    frequent = torch.argsort(counts, descending=True)[:6].tolist()
    token_ids = [frequent[0], frequent[0], *frequent[1:]]
    sae = TokenDetector(W_E, token_ids)
    cfg = AnalysisConfig(**SMALL, batch_size=7)
    analysis = analyze(model, sae, "hook_embed", iter(windows), cfg, progress=False)
    t = analysis.tensors
    own = (sae.E * sae.E).sum(1)
    for i, tok in enumerate(token_ids):
        assert int(t["fire_count"][i]) == int(counts[tok])
        assert t["max_activation"][i].item() == pytest.approx(own[i].item(), rel=1e-5)
        assert t["token_mass_ids"][i, 0] == tok and (t["token_mass_ids"][i, 1:] == -1).all()
        assert t["token_mass"][i, 0].item() == pytest.approx(counts[tok].item() * own[i].item(), rel=1e-5)
        peak_tokens = t["top_tokens"][i][:, cfg.window_left]
        assert (peak_tokens[t["top_seq"][i] >= 0] == tok).all()
    assert t["cofire_ids"][0, 0] == 1 and t["cofire_jaccard"][0, 0].item() == pytest.approx(1.0)
    assert t["nearest_ids"][0, 0] == 1 and t["nearest_cosine"][0, 0].item() == pytest.approx(1.0, abs=1e-6)
    assert analysis.meta["tokens_analysed"] == 40 * (T - 1)  # BOS left out
    assert analysis.meta["logit_effects"] is not None and "neuron_ids" not in t


def _frozen_scale_logit_change(bridge, tokens, hook_name, position, direction):
    """Logits(with `direction` added at `hook_name`, `position`) - clean logits, the final norm's
    scale held at its clean value; returned already multiplied by that scale: [d_vocab]."""
    _, cache = bridge.run_with_cache(tokens, names_filter=lambda n: n == "ln_final.hook_scale")
    clean_scale = cache["ln_final.hook_scale"]

    def add(act, hook):
        act = act.clone()
        act[0, position] += direction
        return act

    def freeze(act, hook):
        return clean_scale

    clean = bridge(tokens)
    with bridge.hooks(fwd_hooks=[(hook_name, add), ("ln_final.hook_scale", freeze)]):
        patched = bridge(tokens)
    return (patched - clean)[0, position] * clean_scale[0, position]


@pytest.mark.parametrize("hook_name", ["blocks.0.mlp.hook_post", "blocks.0.hook_resid_post"])
def test_logit_map_matches_the_forward_pass(tiny_model, hook_name):
    model, windows = tiny_model
    bridge = model.bridge
    d_in = 64 if "mlp" in hook_name else 32
    lm, basis = logit_map(bridge, hook_name, d_in)
    assert isinstance(lm, LogitMap) and "W_U" in basis
    direction = torch.randn(d_in, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = _frozen_scale_logit_change(bridge, windows[:1], hook_name, 5, direction)
    torch.testing.assert_close(lm(direction[None])[0], expected.float(), rtol=1e-4, atol=1e-4)
    missing, why = logit_map(bridge, "blocks.0.attn.hook_pattern", 16)
    assert missing is None and "residual" in why


def test_decoder_statistics_known_answers():
    cfg = AnalysisConfig(neighbours=3, logit_bins=4)
    W = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 0.0, -2.0], [0.0, 1.0, 0.0]])
    identity = LogitMap(None, False, None, torch.eye(3), "identity")
    d = decoder_statistics(W, identity, cfg, neurons=True, chunk=3)
    assert d["nearest_ids"][0].tolist()[0] == 1 and d["nearest_ids"][1].tolist()[0] == 0
    assert d["logit_top_ids"][2, 0] == 0 and d["logit_bottom_ids"][2, 0] == 2 and d["logit_bottom_values"][2, 0] == -2.0
    assert d["logit_histogram"].sum(1).tolist() == [3, 3, 3, 3] and d["logit_histogram"][2].tolist() == [1, 0, 0, 2]
    assert d["neuron_ids"][2, 0] == 2 and d["neuron_weights"][2, 0] == -2.0


def test_topk_sae_through_model_equals_brute_force(tiny_model, tmp_path):
    from sae.architectures import build_sae

    model, windows = tiny_model
    torch.manual_seed(0)
    sae = build_sae("topk", d_in=64, d_sae=48, k=6)
    cfg = AnalysisConfig(**SMALL, batch_size=16, ignore_bos=False)
    analysis = analyze(model, sae, "blocks.0.mlp.hook_post", iter(windows[:30]), cfg, progress=False)
    with torch.no_grad():
        _, cache = model.bridge.run_with_cache(windows[:30], names_filter=lambda n: n == "blocks.0.mlp.hook_post")
        f = sae.encode(cache["blocks.0.mlp.hook_post"].reshape(-1, 64)).clamp_min(0)
    t = analysis.tensors
    assert t["fire_count"].tolist() == (f > 0).sum(0).tolist()
    torch.testing.assert_close(t["max_activation"], f.max(0).values)
    assert analysis.meta["tokens_analysed"] == 30 * T and analysis.meta["neurons_written"]
    top_neurons = sae.W_dec.detach().abs().topk(5, dim=1).indices
    assert t["neuron_ids"][:, :5].long().tolist() == top_neurons.tolist()

    analysis.save(tmp_path / "a")
    loaded = Analysis.load(tmp_path / "a")
    assert loaded.token_strings == analysis.token_strings and loaded.meta == json.loads(json.dumps(analysis.meta))
    for key, value in analysis.tensors.items():  # ablation_change holds NaN where no example ran
        torch.testing.assert_close(loaded.tensors[key], value, rtol=0, atol=0, equal_nan=True, msg=key)
    record = loaded.feature(int(t["fire_count"].argmax()))
    assert record["top_examples"] and record["intervals"] and record["neurons"] and record["logit_top"]
    assert sum(i["count"] for i in record["intervals"]) <= record["fire_count"]
    with pytest.raises(ValueError, match="out of range"):
        loaded.feature(48)


def test_hook_width_mismatch_is_refused(tiny_model):
    from sae.architectures import build_sae

    model, windows = tiny_model
    sae = build_sae("topk", d_in=32, d_sae=16, k=2)
    with pytest.raises(ValueError, match="--hook"):
        analyze(model, sae, "blocks.0.mlp.hook_post", iter(windows), AnalysisConfig(**SMALL), progress=False)


def test_load_refuses_bad_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="interp analyze"):
        Analysis.load(tmp_path / "missing")
    (tmp_path / "a").mkdir()
    with pytest.raises(FileNotFoundError, match="analysis.json"):
        Analysis.load(tmp_path / "a")
    folder = tmp_path / "a"
    save_file({"x": torch.zeros(1)}, str(folder / "features.safetensors"))
    (folder / "vocab.json").write_text(json.dumps({"token_strings": ["a"]}))
    meta = {"format": "monosemantic-analysis", "format_version": 99, "sae": {"d_sae": 1}}
    (folder / "analysis.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format_version"):
        Analysis.load(folder)
    (folder / "analysis.json").write_text(json.dumps({**meta, "format_version": 1}))
    with pytest.raises(ValueError, match=r"tensor\(s\) \['x'\] are not in the analysis schema"):
        Analysis.load(folder)
    with pytest.raises(ValueError, match=r"tensor\(s\) \['x'\] are not in the analysis schema"):
        Analysis(meta=meta, tensors={"x": torch.zeros(1)}, token_strings=["a"]).save(tmp_path / "b")
    (tmp_path / "a" / "analysis.json").write_text("{nope")
    with pytest.raises(ValueError, match="not readable JSON"):
        Analysis.load(tmp_path / "a")
