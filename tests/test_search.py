"""Search: each query kind against brute-force answers on planted data (token detectors with known
values, planted logit effects and decoder neighbours, labels), the filters, the records and CLI, text
queries through a saved model and SAE against the model's own forward pass, and bad inputs."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from planted import planted_analysis, token_detector_batches, zipf_tokens

from interp.features.analysis.artifact import Analysis
from interp.features.analysis.config import AnalysisConfig
from interp.features.analysis.run import analyze
from interp.features.labels.config import LabelConfig
from interp.features.labels.files import save_labels
from interp.features.labels.labeller import label_analysis
from interp.features.search import FeatureHit, FeatureIndex, format_hits

N_SEQ, T, V, F, D = 120, 24, 40, 10, 12
VOCAB = ["<bos>"] + [f" t{i}" for i in range(1, V)]
FEATURE_TOKENS = [[5], [5], [6], [7], [7, 8], [9], [10], [11], [], []]  # 8, 9: never fire
CFG = AnalysisConfig(
    top_k=8,
    intervals=2,
    interval_samples=3,
    window_left=3,
    window_right=1,
    top_tokens=6,
    neighbours=4,
    random_sequences=40,
)


def planted_decoder_and_unembed():
    """Decoder [F, D]: feature 1 is feature 0 plus a little noise (their cosine is near 1); unembed
    [D, V] makes feature 3 promote token 7 by 5, feature 4 by 3, and feature 6 suppress it by 4."""
    g = torch.Generator().manual_seed(2)
    W = torch.randn(F, D, generator=g)
    W[1] = W[0] + 0.05 * torch.randn(D, generator=g)
    unembed = 0.01 * torch.randn(D, V, generator=g)
    pinv = torch.linalg.pinv(W)  # [D, F]: W @ pinv = I, so W @ (pinv @ e) = e
    target = torch.zeros(F)
    target[3], target[4], target[6] = 5.0, 3.0, -4.0
    unembed[:, 7] = pinv @ target
    return W, unembed


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("search") / "analysis"
    tokens = zipf_tokens(N_SEQ, T, V, seed=0, exponent=0.5)
    W, unembed = planted_decoder_and_unembed()
    batches = list(token_detector_batches(tokens, FEATURE_TOKENS, seed=1))
    analysis = planted_analysis(iter(batches), VOCAB, CFG, W_dec=W, unembed=unembed, expected_sequences=N_SEQ)
    analysis.save(folder)
    labels = label_analysis(analysis, progress=False)
    save_labels([label.to_dict() for label in labels], folder, dataclasses.asdict(LabelConfig()))
    f = torch.cat([b[0] for b in batches])
    f[:, 0] = 0.0  # BOS is left out of the analysis
    return folder, f, tokens, W, unembed


def test_by_token_ranks_by_activation_per_occurrence(index_dir):
    folder, f, tokens, _, _ = index_dir
    index = FeatureIndex.load(folder)
    hits = index.by_token(" t5")
    occurrences = (tokens[:, 1:] == 5).sum().item()
    expected = {i: f[..., i][tokens == 5].double().sum().item() / occurrences for i in (0, 1)}
    assert [h.feature for h in hits] == [1, 0]  # feature 1's values are twice feature 0's
    for h in hits:
        assert h.score == pytest.approx(expected[h.feature], rel=1e-5)
        assert h.detail["firings"] == occurrences and h.detail["mass_share"] == pytest.approx(1.0, rel=1e-5)
    four = index.by_token(" t8")
    assert [h.feature for h in four] == [4] and four[0].detail["mass_share"] < 1.0
    assert index.by_token(" t30") == []
    assert index.by_token("#5")[0].feature == 1


def test_by_logit_and_suppress(index_dir):
    folder, _, _, W, unembed = index_dir
    index = FeatureIndex.load(folder)
    hits = index.by_logit(" t7", top=3)
    assert [h.feature for h in hits] == [3, 4, hits[2].feature] and hits[2].feature not in (6,)
    assert hits[0].score == pytest.approx(5.0, abs=1e-4) and hits[1].score == pytest.approx(3.0, abs=1e-4)
    torch.testing.assert_close(index.logit_effects(" t7"), W @ unembed[:, 7], rtol=1e-5, atol=1e-5)
    down = index.by_logit(" t7", top=1, suppress=True)
    assert down[0].feature == 6 and down[0].score == pytest.approx(-4.0, abs=1e-4)


def test_nearest_by_id_and_by_vector(index_dir):
    folder, _, _, W, _ = index_dir
    index = FeatureIndex.load(folder)
    hits = index.nearest(0, top=F)
    unit = W / W.norm(dim=1, keepdim=True)
    cosine = unit @ unit[0]
    assert hits[0].feature == 1 and hits[0].score == pytest.approx(cosine[1].item(), rel=1e-5)
    assert 0 not in [h.feature for h in hits] and len(hits) == F - 1
    assert [h.feature for h in hits] == torch.argsort(cosine[1:], descending=True).add(1).tolist()
    by_vector = index.nearest(3.0 * W[5], top=2)
    assert by_vector[0].feature == 5 and by_vector[0].score == pytest.approx(1.0, abs=1e-6)


def test_by_label_regex_and_order(index_dir):
    folder, _, _, _, _ = index_dir
    index = FeatureIndex.load(folder)
    hits = index.by_label(r"` t(5|7)`")
    assert {h.feature for h in hits} == {0, 1, 3, 4}
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True) and all(h.label and h.label_score == h.score for h in hits)
    assert [h.feature for h in index.by_label("dead")] == [8, 9]
    with pytest.raises(ValueError, match="regular expression"):
        index.by_label("(")


def test_filters(index_dir):
    folder, f, _, _, _ = index_dir
    index = FeatureIndex.load(folder)
    density = index.density
    assert index.mask(min_density=float(density[1])).tolist() == (density >= density[1]).tolist()
    hits = index.by_token(" t5", max_density=float(density[0]) / 2)
    assert hits == []  # both features of token 5 fire on it exactly as often
    assert [h.feature for h in index.nearest(0, top=3, min_density=1e-9)] and 8 not in [
        h.feature for h in index.nearest(0, top=F, min_density=1e-9)
    ]
    scored = index.by_label(".", min_label_score=0.99)
    assert scored and all(h.label_score >= 0.99 for h in scored)
    assert [h.feature for h in index.by_label(".", min_label_score=0.0)] == [
        h.feature for h in index.by_label(".") if h.label_score is not None
    ]


def test_records_table_and_cli(index_dir, capsys):
    from interp.app.cli.main import main

    folder, _, _, _, _ = index_dir
    hit = FeatureIndex.load(folder).by_token(" t5")[0]
    assert isinstance(hit, FeatureHit) and json.loads(json.dumps(hit.to_dict()))["feature"] == 1
    table = format_hits([hit], "act/occur")
    assert "act/occur" in table and "fires on ` t5`" in table
    capsys.readouterr()
    assert main(["search", "--index", str(folder), "logit", " t7", "--top", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["feature"] for r in out] == [3, 4] and set(out[0]) >= {
        "feature",
        "score",
        "density",
        "label",
        "label_score",
    }
    assert main(["search", "--index", str(folder), "nearest", "0", "--top", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[0] == "1"
    assert main(["search", "--index", str(folder), "token", "t5"]) == 2  # not a vocabulary string: a clear error
    assert "the closest are ' t5'" in capsys.readouterr().err


def test_bad_queries(index_dir, tmp_path):
    folder, _, _, _, _ = index_dir
    index = FeatureIndex.load(folder)
    with pytest.raises(ValueError, match="not in this analysis's vocabulary"):
        index.by_token("zzz")
    with pytest.raises(ValueError, match="out of range"):
        index.nearest(F)
    with pytest.raises(ValueError, match=f"needs {D} values"):
        index.nearest(torch.ones(3))
    with pytest.raises(ValueError, match="model.spec"):
        index.by_text("hello")
    bare = Analysis.load(folder)
    bare.tensors.pop("logit_directions")
    bare.save(tmp_path / "bare")
    with pytest.raises(ValueError, match="logit_directions"):
        FeatureIndex.load(tmp_path / "bare").by_logit(" t7")
    with pytest.raises(ValueError, match="interp label"):
        FeatureIndex.load(tmp_path / "bare").by_label("x")


def test_queries_and_filters_are_validated(index_dir):
    folder, _, _, _, _ = index_dir
    index = FeatureIndex.load(folder)
    with pytest.raises(ValueError, match="takes a feature id .* got str '22'"):
        index.nearest("22")
    with pytest.raises(ValueError, match="finite and non-zero"):
        index.nearest([0.0] * D)
    assert [h.feature for h in index.nearest(index.unit_decoder[0].tolist(), top=1)] == [0]  # a list works
    for bad_top in (-1, 0, 1.5, True):
        with pytest.raises(ValueError, match="top must be a positive integer"):
            index.nearest(0, top=bad_top)
    with pytest.raises(ValueError, match="min_density=0.5 is above max_density=0.1"):
        index.by_token(" t5", min_density=0.5, max_density=0.1)
    with pytest.raises(ValueError, match=r"min_label_score=2 must be a number in \[0, 1\]"):
        index.by_label("t", min_label_score=2)
    with pytest.raises(ValueError, match=r"unknown filter\(s\) \['min_densty'\]; the filters are min_density"):
        index.by_logit(" t7", min_densty=0.1)
    with pytest.raises(ValueError, match="the closest are ' t5'"):
        index.by_token("t5 ")
    index.token_counts = index.token_counts.clone()
    index.token_counts[index.token_id(" t30")] = 0  # as if the analysed text never held it
    with pytest.raises(ValueError, match="never occurs in the .* analysed windows"):
        index.by_token(" t30")


def test_text_query_matches_the_models_forward_pass(tmp_path):
    from interp.model.config import ModelConfig
    from interp.model.tokenizer import train_tokenizer
    from interp.model.transformer import build_native_model, load_model, save_model
    from sae.architectures import build_sae
    from sae.io import save_sae

    text = [f"def f{i}(x):\n    return x * {i} + {i % 7}\n" for i in range(200)]
    tokenizer = train_tokenizer(text, vocab_size=300, show_progress=False)
    cfg = ModelConfig(d_model=32, n_heads=4, d_mlp=48, context_length=16, d_vocab=300)
    save_model(build_native_model(cfg), cfg, tokenizer, tmp_path / "model")
    model = load_model(tmp_path / "model")
    torch.manual_seed(0)
    hook = "blocks.0.mlp.hook_post"
    save_sae(build_sae("topk", d_in=48, d_sae=32, k=4), tmp_path / "sae", metadata={"hook_name": hook})
    from sae.io import load_sae

    sae = load_sae(tmp_path / "sae")
    windows = torch.tensor(
        [[tokenizer.bos_id, *tokenizer.encode(t)][:16] for t in text[:20] if len(tokenizer.encode(t)) >= 15]
    )
    analysis = analyze(
        model,
        sae,
        hook,
        iter(windows),
        AnalysisConfig(top_k=4, intervals=2, interval_samples=2, window_left=2, window_right=1, random_sequences=4),
        progress=False,
        meta={"model": {"spec": str(tmp_path / "model")}, "sae": {"path": str(tmp_path / "sae")}},
    )
    analysis.save(tmp_path / "analysis")
    index = FeatureIndex.load(tmp_path / "analysis")
    prompt = "def main(x):\n    return x"
    results = index.by_text(prompt, top=3)
    ids = tokenizer.encode(prompt)
    with torch.no_grad():
        _, cache = model.bridge.run_with_cache(
            torch.tensor([[tokenizer.bos_id, *ids]]), names_filter=lambda n: n == hook
        )
        f = sae.encode(cache[hook][0])[1:]
    assert [r.position for r in results] == list(range(len(ids)))
    assert [r.token for r in results] == [analysis.token_strings[i] for i in ids]
    for r in results:
        expected = f[r.position].topk(3)
        assert [h.feature for h in r.hits] == [
            i for i, v in zip(expected.indices.tolist(), expected.values.tolist()) if v > 0
        ]
        assert [h.score for h in r.hits] == pytest.approx([v for v in expected.values.tolist() if v > 0], rel=1e-4)
    last = index.by_text(prompt, top=2, positions=[-1])
    assert len(last) == 1 and last[0].position == len(ids) - 1
    with pytest.raises(ValueError, match="outside the prompt"):
        index.by_text(prompt, positions=[99])
    # ranked by share of each feature's max: the order follows activation / max over the analysis
    maxes = index.max_activation
    for r in index.by_text(prompt, top=3, rank="share_of_max"):
        share = torch.where(f[r.position] > 0, f[r.position] / maxes.clamp_min(1e-30), 0.0)
        best = share.topk(3)
        expected = [i for i, v in zip(best.indices.tolist(), best.values.tolist()) if v > 0]
        assert [h.feature for h in r.hits] == expected
        assert all(h.detail["share_of_max"] == pytest.approx(float(share[h.feature])) for h in r.hits)
