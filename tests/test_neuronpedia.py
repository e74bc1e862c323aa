"""Neuronpedia export of a tiny analysis with planted token detectors: the layout Neuronpedia's
import reads, records that only use its table columns, and known answers for every field."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch

from interp.activations.hooks import hook_layer
from interp.app.cli.main import main as interp_main
from interp.app.config import ExportConfig
from interp.app.neuronpedia import export_neuronpedia, histogram_centres, neuronpedia_id
from interp.features.analysis.config import AnalysisConfig
from interp.features.analysis.run import analyze

T = 16
# Columns of Neuronpedia's tables (apps/webapp/prisma/schema.prisma) that the export may fill.
NEURON_COLUMNS = {
    "modelId",
    "layer",
    "index",
    "sourceSetName",
    "creatorId",
    "maxActApprox",
    "hookName",
    "topkCosSimIndices",
    "topkCosSimValues",
    "neuron_alignment_indices",
    "neuron_alignment_values",
    "neg_str",
    "neg_values",
    "pos_str",
    "pos_values",
    "frac_nonzero",
    "freq_hist_data_bar_heights",
    "freq_hist_data_bar_values",
    "logits_hist_data_bar_heights",
    "logits_hist_data_bar_values",
}
ACTIVATION_COLUMNS = {
    "id",
    "tokens",
    "dataIndex",
    "index",
    "layer",
    "modelId",
    "maxValue",
    "maxValueTokenIndex",
    "minValue",
    "values",
    "creatorId",
    "binMin",
    "binMax",
    "binContains",
}
ACTIVATION_REQUIRED = {
    "id",
    "tokens",
    "index",
    "layer",
    "modelId",
    "maxValue",
    "maxValueTokenIndex",
    "minValue",
    "values",
    "creatorId",
}
EXPLANATION_COLUMNS = {"id", "modelId", "layer", "index", "description", "authorId", "notes"}
MODEL_COLUMNS = {
    "id",
    "displayNameShort",
    "displayName",
    "creatorId",
    "tlensId",
    "dimension",
    "layers",
    "neuronsPerLayer",
    "owner",
}
SOURCESET_COLUMNS = {"modelId", "name", "description", "type", "creatorName", "urls", "creatorId"}
SOURCE_COLUMNS = {
    "id",
    "modelId",
    "setName",
    "creatorId",
    "hasDashboards",
    "num_prompts",
    "num_tokens_in_prompt",
    "dataset",
    "notes",
}


class TokenDetector:
    """A planted "SAE" on hook_embed: feature i fires, with value |E[t_i]|^2, exactly on token t_i."""

    arch = "planted"

    def __init__(self, W_E: torch.Tensor, token_ids: list[int]):
        self.E = W_E[token_ids].detach().float()
        self.W_dec = self.E / self.E.norm(dim=1, keepdim=True)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        sims = x.float() @ self.E.T
        own = (self.E * self.E).sum(1)
        return torch.where((sims - own).abs() < 1e-4 * own, sims, 0.0)


@pytest.fixture(scope="module")
def analysis_dir(tmp_path_factory):
    import transformer_lens.model_bridge.sources.native  # noqa: F401
    from transformer_lens.model_bridge.bridge import TransformerBridge

    from interp.model.tokenizer import train_tokenizer
    from interp.model.transformer import LoadedModel

    tokenizer = train_tokenizer(
        [f"def f{i}(x):\n    return x * {i} + {i % 7}\n" for i in range(300)], vocab_size=300, show_progress=False
    )
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
    model = LoadedModel(bridge=bridge.eval(), tokenizer=tokenizer, name="Tiny Model", context_length=T)
    windows = torch.randint(1, tokenizer.vocab_size, (40, T), generator=torch.Generator().manual_seed(3))
    windows[:, 0] = tokenizer.bos_id
    counts = torch.bincount(windows[:, 1:].reshape(-1), minlength=300)
    frequent = torch.argsort(counts, descending=True)[:4].tolist()
    token_ids = [frequent[0], *frequent]  # features 0 and 1 detect the same token (they co-fire)
    sae = TokenDetector(bridge.W_E, token_ids)
    cfg = AnalysisConfig(
        tokens=40 * T,
        top_k=4,
        window_left=3,
        window_right=2,
        intervals=3,
        interval_samples=2,
        neighbours=4,
        logit_bins=8,
        random_sequences=4,
    )
    analysis = analyze(model, sae, "hook_embed", iter(windows), cfg, progress=False)
    folder = tmp_path_factory.mktemp("analysis") / "a"
    analysis.save(folder)
    labels = [
        {"id": 0, "label": f"fires on `{analysis.token_strings[token_ids[0]]}`", "score": 0.97, "correlation": 0.9},
        {"id": 3, "label": "something else", "score": None, "correlation": None},
    ]
    (folder / "labels.json").write_text(
        json.dumps({"format": "monosemantic-labels", "format_version": 1, "features": labels})
    )
    return folder, analysis, token_ids, counts, sae


def read_gz(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def test_export_layout_columns_and_known_answers(analysis_dir, tmp_path):
    folder, analysis, token_ids, counts, sae = analysis_dir
    cfg = ExportConfig(
        analysis=str(folder), out=str(tmp_path / "np"), source_set="Planted Detectors", features_per_batch=3
    )
    out = export_neuronpedia(cfg)
    assert out == tmp_path / "np" / "tiny-model" / "0-planted-detectors"
    assert sorted(p.name for p in out.iterdir()) == [
        "activations",
        "explanations",
        "features",
        "model.jsonl",
        "source.jsonl",
        "sourceset.jsonl",
    ]
    assert sorted(p.name for p in (out / "features").iterdir()) == ["batch-0.jsonl.gz", "batch-1.jsonl.gz"]
    features = read_gz(out / "features" / "batch-0.jsonl.gz") + read_gz(out / "features" / "batch-1.jsonl.gz")
    activations = [r for name in ("batch-0.jsonl.gz", "batch-1.jsonl.gz") for r in read_gz(out / "activations" / name)]
    explanations = read_gz(out / "explanations" / "batch-0.jsonl.gz") + read_gz(
        out / "explanations" / "batch-1.jsonl.gz"
    )
    vocab = analysis.token_strings
    own = (sae.E * sae.E).sum(1)
    tokens_analysed = analysis.meta["tokens_analysed"]

    assert [f["index"] for f in features] == ["0", "1", "2", "3", "4"]
    for i, f in enumerate(features):
        assert set(f) <= NEURON_COLUMNS
        assert f["modelId"] == "tiny-model" and f["layer"] == "0-planted-detectors" and f["hookName"] == "hook_embed"
        assert f["maxActApprox"] == pytest.approx(own[i].item(), rel=1e-5)
        assert f["frac_nonzero"] == pytest.approx(counts[token_ids[i]].item() / tokens_analysed, rel=1e-6)
        assert sum(f["freq_hist_data_bar_heights"]) == counts[token_ids[i]].item()
        assert len(f["freq_hist_data_bar_values"]) == len(f["freq_hist_data_bar_heights"])
        t = analysis.tensors
        assert f["pos_str"] == [vocab[j] for j in t["logit_top_ids"][i].tolist()]
        assert f["neg_values"] == pytest.approx(t["logit_bottom_values"][i].tolist())
        assert f["neg_values"] == sorted(f["neg_values"]) and f["pos_values"] == sorted(f["pos_values"], reverse=True)
        assert sum(f["logits_hist_data_bar_heights"]) == analysis.meta["vocab_size"]
        lo, hi = t["logit_range"][i].tolist()
        assert f["logits_hist_data_bar_values"][0] == pytest.approx(lo + (hi - lo) / 16)
        assert len(f["topkCosSimIndices"]) == 4 and i not in f["topkCosSimIndices"]

    assert activations and len({a["id"] for a in activations}) == len(activations)
    for a in activations:
        assert ACTIVATION_REQUIRED <= set(a) <= ACTIVATION_COLUMNS
        i = int(a["index"])
        peak = a["maxValueTokenIndex"]
        assert a["tokens"][peak] == vocab[token_ids[i]]  # the detector's token is the peak
        assert a["maxValue"] == pytest.approx(own[i].item(), rel=1e-5) == pytest.approx(a["values"][peak])
        assert a["minValue"] == min(a["values"]) and len(a["tokens"]) == len(a["values"]) <= 6
        assert all(v == 0 or v == pytest.approx(own[i].item(), rel=1e-5) for v in a["values"])
        if "binMin" in a:
            assert a["binMin"] <= a["maxValue"] < a["binMax"] and 0 < a["binContains"] <= 1
    tops = [a for a in activations if a["index"] == "0" and ":top" in a["id"]]
    assert len(tops) == min(4, int((analysis.tensors["top_seq"][0] >= 0).sum()))

    assert [e["index"] for e in explanations] == ["0", "3"]
    assert all(set(e) == EXPLANATION_COLUMNS for e in explanations)
    assert explanations[0]["description"] == f"fires on `{vocab[token_ids[0]]}`"
    assert "AUROC 0.970" in explanations[0]["notes"] and "AUROC n/a" in explanations[1]["notes"]

    model = json.loads((out / "model.jsonl").read_text())
    sourceset = json.loads((out / "sourceset.jsonl").read_text())
    source = json.loads((out / "source.jsonl").read_text())
    assert set(model) <= MODEL_COLUMNS and set(sourceset) <= SOURCESET_COLUMNS and set(source) <= SOURCE_COLUMNS
    assert model["id"] == "tiny-model" and model["layers"] == 1 and model["dimension"] == 32
    assert sourceset["name"] == "planted-detectors" and source["id"] == "0-planted-detectors"
    assert source["setName"] == sourceset["name"] and source["num_tokens_in_prompt"] == T


def test_helpers_known_answers():
    assert neuronpedia_id("GPT-2 Small/v1") == "gpt-2-small-v1"
    assert hook_layer("blocks.11.hook_resid_post") == 11 and hook_layer("hook_embed") is None
    cfg = AnalysisConfig(histogram_low_exp=-2, histogram_high_exp=0, bins_per_octave=1)
    assert histogram_centres(cfg) == pytest.approx([0.125, 2**-1.5, 2**-0.5, 1.0])
    with pytest.raises(ValueError, match="--model-id"):
        neuronpedia_id("///")


def test_cli_and_bad_input(analysis_dir, tmp_path, capsys):
    folder = analysis_dir[0]
    assert (
        interp_main(
            [
                "export-neuronpedia",
                "--analysis",
                str(folder),
                "--out",
                str(tmp_path / "np"),
                "--model-id",
                "my-model",
                "--creator-id",
                "admin-7",
            ]
        )
        == 0
    )
    out = tmp_path / "np" / "my-model" / "0-mono-planted-5"
    assert f"Neuronpedia export: {out}" in capsys.readouterr().out
    assert {r["creatorId"] for r in read_gz(out / "activations" / "batch-0.jsonl.gz")} == {"admin-7"}
    assert interp_main(["export-neuronpedia", "--analysis", str(tmp_path / "none"), "--out", str(tmp_path / "x")]) == 2
    assert "does not exist; create it with `interp analyze`" in capsys.readouterr().err
    assert (
        interp_main(
            ["export-neuronpedia", "--analysis", str(folder), "--out", str(tmp_path / "x"), "--features-per-batch", "0"]
        )
        == 2
    )
    assert "--features-per-batch must be positive" in capsys.readouterr().err
