"""The demo pipeline on a tiny budget: every artifact appears, a second run reuses them all, a capture
holding too few tokens is continued, and a rebuilt step makes the steps after it rebuild too."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from interp.activations.capture import run_capture
from interp.activations.config import CaptureConfig
from interp.app.cli.main import main as interp_main
from interp.app.config import DemoConfig, demo_config
from interp.app.demo import STEPS, run_demo
from interp.features.analysis.config import AnalysisConfig
from interp.features.scorecard.concepts import concept_suite
from interp.features.scorecard.config import ScorecardConfig
from interp.interventions.config import EvalConfig
from interp.interventions.evaluate import run_eval
from interp.model.config import ModelConfig, ModelTrainConfig
from interp.model.transformer import load_model
from sae.config import TrainConfig as SAETrainConfig
from sae.data import ActivationDataset

HOOK_WIDTHS = {"blocks.0.mlp.hook_post": 64, "blocks.0.hook_resid_post": 32}
ALL_STEPS = [step.name for step in STEPS if step.name != "second"]  # the paper preset's second model and SAE


def tiny_demo(out: Path, capture_tokens: int = 1000, corpus: str = "stdlib") -> DemoConfig:
    """The demo shrunk to seconds: a 1-layer model of width 32 trained on 2048 tokens."""
    train = ModelTrainConfig(
        corpus=corpus,
        tokens=2048,
        batch_size=8,
        warmup_steps=2,
        vocab_size=300,
        tokenizer_chars=200_000,
        eval_tokens=256,
        heldout_points=1,
        sample_tokens=4,
    )
    model = ModelConfig(n_layers=1, d_model=32, n_heads=2, d_mlp=64, context_length=32)
    sae_train = SAETrainConfig(batch_size=200, device="cpu", checkpoint_every=0, init_tokens=400, shuffle_buffer=1000)
    return DemoConfig(
        out=out,
        train=train,
        model=model,
        hooks=tuple(HOOK_WIDTHS),
        capture_tokens=capture_tokens,
        sae_fields={"d_sae": 48, "k": 4},
        sae_tokens=2000,
        sae_train=sae_train,
        analysis=AnalysisConfig(tokens=512),
        scorecard=ScorecardConfig(tokens=1024, min_positives=3),
        widths=(16, 32),
        ks=(8,),
        progress=False,
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> DemoConfig:
    """A finished tiny demo; tests that change it work on a copy (`copy_of`)."""
    cfg = tiny_demo(tmp_path_factory.mktemp("built") / "demo")
    assert run_demo(cfg) == ALL_STEPS
    return cfg


def copy_of(cfg: DemoConfig, where: Path) -> DemoConfig:
    shutil.copytree(cfg.out, where)
    return dataclasses.replace(cfg, out=where)


def modification_times(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def test_demo_builds_every_artifact(built):
    assert all(step.is_complete(built) for step in STEPS if step.name in ALL_STEPS)
    loaded = load_model(built.model_dir)
    assert loaded.context_length == 32 and loaded.tokenizer.vocab_size == 300
    for hook, width in HOOK_WIDTHS.items():
        dataset = ActivationDataset(built.activations_dir / hook, verify=True)
        assert (dataset.num_tokens, dataset.d_in, dataset.hook_name) == (1000, width, hook)
        metadata = dataset.manifest["metadata"]
        assert (metadata["corpus"], metadata["split"], metadata["model"]) == (
            "stdlib",
            "train",
            str(built.model_dir.resolve()),
        )


def test_the_sae_is_streamed_from_the_model_for_its_own_token_budget(built):
    config = json.loads((built.sae_dir / "train_config.json").read_text())
    assert (config["source"], config["model"], config["tokens"]) == ("model", str(built.model_dir.resolve()), 2000)
    assert config["resolved"]["dead_window_tokens"] == 200  # a tenth of the 2000-token run, at least one batch


def test_an_sae_is_refused_against_a_model_whose_weights_changed(built, tmp_path):
    """The SAE records the fingerprint of the weights it was trained on; the analysis records it too."""
    cfg = copy_of(built, tmp_path / "demo")
    sae_meta = json.loads((cfg.sae_dir / "cfg.json").read_text())["metadata"]
    analysis_meta = json.loads((cfg.analysis_dir / "analysis.json").read_text())
    assert sae_meta["model_weights"] == analysis_meta["model"]["weights"]
    weights = cfg.model_dir / "model.safetensors"
    state = load_file(weights)
    state["tok_embed.weight"][0, 0] += 1.0  # another model in the same folder
    save_file(state, weights)
    with pytest.raises(ValueError, match="was trained on the activations of other weights"):
        run_eval(EvalConfig(model=str(cfg.model_dir), sae=str(cfg.sae_dir), tokens=64), progress=False)


def test_presets_budget_in_tokens():
    demo, paper = demo_config(), demo_config("paper")
    for cfg in (demo, paper):
        assert cfg.train.minutes is None and cfg.train.tokens > 0 and cfg.sae_tokens > 0
        assert cfg.sae_fields["d_sae"] >= 4 * cfg.model.d_mlp  # a dictionary at least 4x the neurons
        assert cfg.train.autocast == "auto" and cfg.corpus == "stdlib"
    assert paper.sae_fields["d_sae"] == 4096 and paper.sae_tokens >= 50_000_000
    assert paper.train.tokens > demo.train.tokens and paper.sae_tokens > demo.sae_tokens
    assert demo_config("demo", "shakespeare").corpus == "shakespeare"
    with pytest.raises(ValueError, match="unknown demo preset 'huge'"):
        demo_config("huge")


def test_bad_demo_settings_are_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "demo"
    assert interp_main(["demo", "--out", str(out), "--report", str(tmp_path / "r"), "--capture-tokens", "0"]) == 2
    assert "--capture-tokens must be positive" in capsys.readouterr().err
    assert interp_main(["demo", "--out", str(out), "--report", str(tmp_path / "r"), "--corpus", "notes.txt"]) == 2
    assert "--corpus 'notes.txt': the demo runs on a built-in corpus" in capsys.readouterr().err
    cfg = tiny_demo(out)
    cfg.sae_tokens = 10  # less than one SAE batch
    with pytest.raises(ValueError, match="sae_tokens"):
        run_demo(cfg)
    assert not out.exists() and not (tmp_path / "r").exists()


def test_demo_refuses_report_and_output_paths_it_would_overwrite_before_any_work(tmp_path, capsys):
    out, mine = tmp_path / "demo", tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    (tmp_path / "file.txt").write_text("keep me too")
    cases = [
        (["--report", str(mine)], "holds files that are not a report"),
        (["--report", str(tmp_path / "file.txt")], "is a file, not a folder"),
        (["--report", str(out)], "would hold the artifacts in --out"),
        (["--report", str(tmp_path)], "would hold the artifacts in --out"),
    ]
    for flags, message in cases:
        assert interp_main(["demo", "--out", str(out), *flags]) == 2
        assert message in capsys.readouterr().err
    assert interp_main(["demo", "--out", str(tmp_path / "file.txt"), "--report", str(tmp_path / "r")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    report = ["--report", str(tmp_path / "r")]
    assert interp_main(["demo", "--out", str(out), *report, "--capture-tokens", "1"]) == 2
    assert "less than one window of 128 tokens" in capsys.readouterr().err
    assert interp_main(["demo", "--out", str(out), *report, "--capture-tokens", "1000000000000"]) == 2
    assert "GiB for its activations" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "r").exists()
    assert (mine / "notes.txt").read_text() == "keep me" and (tmp_path / "file.txt").read_text() == "keep me too"


def test_demo_on_shakespeare_tells_the_seed_story(tmp_path):
    cfg = tiny_demo(tmp_path / "demo", corpus="shakespeare")
    assert run_demo(cfg) == ALL_STEPS
    record = json.loads((cfg.model_dir / "training.json").read_text())
    assert record["prompt"] == "To be, or not to be, that is the question:"
    assert record["config"]["corpus"]["spec"] == "shakespeare"
    assert (cfg.report_dir / "model.html").is_file()


def test_demo_on_the_mix_corpus_scores_each_characters_source(tmp_path):
    cfg = tiny_demo(tmp_path / "demo", corpus="mix")
    cfg.scorecard.tokens = 2048
    assert run_demo(cfg) == ALL_STEPS
    record = json.loads((cfg.scorecard_dir / "scorecard.json").read_text())
    rows = {c["name"]: c for c in record["concepts"]}
    assert {"mix.python", "mix.english", "mix.base64", "mix.hex", "text.digits"} <= set(rows)
    assert not any(name.startswith("python.") for name in rows)  # the pieces are not whole Python files
    assert rows["mix.hex"]["scored"] and rows["mix.hex"]["positives"] > 0
    assert (cfg.report_dir / "scorecard.html").is_file()


def test_second_run_reuses_every_artifact(built, capsys):
    before = modification_times(built.out)
    capsys.readouterr()
    assert run_demo(built) == []
    out = capsys.readouterr().out
    for step in STEPS:
        assert (f"[{step.name}] reusing {step.artifact(built)}" in out) == (step.name in ALL_STEPS)
    assert modification_times(built.out) == before


def test_capture_holding_too_few_tokens_is_continued_to_the_same_bytes(tmp_path):
    cfg = tiny_demo(tmp_path / "demo", capture_tokens=1000)
    assert run_demo(cfg) == ALL_STEPS
    cfg.capture_tokens = 2000  # the datasets now hold too few tokens: the step runs again and continues them
    assert run_demo(cfg) == ALL_STEPS[1:]
    fresh = run_capture(
        CaptureConfig(model=str(cfg.model_dir), hooks=list(cfg.hooks), tokens=2000, out=str(tmp_path / "fresh")),
        progress=False,
    )
    for hook in HOOK_WIDTHS:
        continued, reference = (
            ActivationDataset(cfg.activations_dir / hook, verify=True),
            ActivationDataset(fresh[hook]),
        )
        assert continued.num_tokens == 2000 and continued.num_shards == reference.num_shards
        for i in range(reference.num_shards):
            for key, tensor in reference.shard(i).items():
                assert torch.equal(continued.shard(i)[key], tensor), (hook, i, key)


def test_rebuilt_step_rebuilds_every_later_step(built, tmp_path, capsys):
    cfg = copy_of(built, tmp_path / "demo")
    (cfg.model_dir / "training.json").unlink()  # the model folder's last-written file: an unfinished model
    capsys.readouterr()
    assert run_demo(cfg) == ALL_STEPS
    assert f"[capture] {cfg.activations_dir} is stale" in capsys.readouterr().out
    assert all(step.is_complete(cfg) for step in STEPS if step.name in ALL_STEPS)


def test_steer_command_prints_clean_and_steered(built, tmp_path, capsys):
    from interp.activations.sources import open_model_and_sae
    from interp.interventions.intervene import clamp, clean_text, steered_text

    common = [
        "steer",
        "--model",
        str(built.model_dir),
        "--sae",
        str(built.sae_dir),
        "--prompt",
        "def ",
        "--tokens",
        "6",
    ]
    out = tmp_path / "steer.json"
    assert interp_main([*common, "--feature", "3=25", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    opened = open_model_and_sae(built.model_dir, built.sae_dir)
    assert result["clean"] == clean_text(opened, "def ", 6)
    assert result["steered"] == steered_text(opened, "def ", [clamp(3, 25.0)], 6)
    assert result["steer"] == {"3": 25.0}
    capsys.readouterr()
    assert interp_main([*common, "--feature", "3=25"]) == 0
    printed = capsys.readouterr().out
    assert "clean" in printed and "steered (feature 3 = 25)" in printed and " | " in printed
    assert interp_main([*common, "--feature", "48=1"]) == 2
    assert "out of range" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        interp_main([*common, "--feature", "3"])


def test_serve_refuses_a_report_of_another_sae(built, tmp_path, capsys):
    report = tmp_path / "report"
    shutil.copytree(built.report_dir, report)
    meta = report / "data" / "meta.js"
    meta.write_text(meta.read_text().replace('"d_sae":48', '"d_sae":49'))
    args = ["serve", "--report", str(report), "--model", str(built.model_dir), "--sae", str(built.sae_dir)]
    assert interp_main([*args, "--port", "0"]) == 2
    assert "shows 49 features but the SAE" in capsys.readouterr().err
    assert interp_main(["serve", "--report", str(tmp_path), "--model", "x", "--sae", "y"]) == 2
    assert "holds no report" in capsys.readouterr().err
    meta.write_text("monoReport.meta = [1, 2];")  # valid JSON, but not a meta object
    args = ["serve", "--report", str(report), "--model", str(built.model_dir), "--sae", str(built.sae_dir)]
    assert interp_main([*args, "--port", "0"]) == 2
    assert "holds a JSON list, not the object of a report's meta file" in capsys.readouterr().err
    same_width = built.k_sae_dirs[0]  # 48 features like the report's SAE, k 8 instead of 4: another SAE
    args = ["serve", "--report", str(built.report_dir), "--model", str(built.model_dir), "--sae", str(same_width)]
    assert interp_main([*args, "--port", "0"]) == 2
    assert "was built from another SAE" in capsys.readouterr().err


def test_demo_builds_the_scorecard_with_its_control_and_links_it(built):
    record = json.loads((built.scorecard_dir / "scorecard.json").read_text())
    assert (record["format"], record["format_version"], record["split"]) == ("monosemantic-scorecard", 2, "heldout")
    assert record["tokens"] == 1024 and record["control"]["model"] == "random init"
    assert record["control"]["model_spec"] == str((built.control_dir / "model").resolve())
    names = [c["name"] for c in record["concepts"]]
    assert "python.keyword def" in names and "text.digits" in names
    scored = [c for c in record["concepts"] if c["scored"]]
    assert scored and all(
        set(c["sides"]) == {"features", "neurons", "control_features", "control_neurons"} for c in scored
    )
    assert record["universality"]["features"] is None and "second model" in record["universality"]["missing"]
    assert [(row["d_sae"], row["k"]) for row in record["frontier"]] == [(48, 4), (16, 4), (32, 4), (48, 8)]
    assert all(row["k1_skill"]["value"] is not None for row in record["frontier"])
    assert record["splitting"]["widths"] == [16, 32, 48]  # the k = 8 sibling joins the frontier, not the families
    assert record["splitting"]["widths"] == [16, 32, 48] and len(record["splitting"]["families"]) == 16
    # the control model is the trained model's initialisation: the same config, another set of weights
    control = json.loads((built.control_dir / "model" / "config.json").read_text())
    trained = json.loads((built.model_dir / "config.json").read_text())
    assert control["model"] == trained["model"] and control["training"]["initialisation_of"] == str(
        built.model_dir.resolve()
    )
    page = (built.report_dir / "scorecard.html").read_text()
    assert "report-scorecard" in page and (built.report_dir / "scorecard.js").is_file()
    meta = (built.report_dir / "data" / "meta.js").read_text()
    assert '"scorecard":true' in meta  # every page's top bar links the scorecard


def test_scorecard_command_reads_the_windows_capture_writes_and_takes_user_concepts(built, tmp_path, capsys):
    from interp.activations.sources import open_model_and_sae
    from interp.features.scorecard.run import _scored_tokens

    out = tmp_path / "card"
    args = ["scorecard", "--model", str(built.model_dir), "--sae", str(built.sae_dir), "--tokens", "640"]
    args += ["--concept", r"self=\bself\b", "--concept", "letter e=e", "--min-positives", "2", "--out", str(out)]
    assert interp_main(args) == 0
    printed = capsys.readouterr().out
    record = json.loads((out / "scorecard.json").read_text())
    rows = {c["name"]: c for c in record["concepts"]}
    assert rows["letter e"]["source"] == "regex" and rows["letter e"]["scored"] and "letter e" in printed
    assert rows["self"]["source"] == "regex" and rows["self"]["description"] == "matches /\\bself\\b/"
    assert record["control"] is None and record["universality"]["features"] is None
    assert "context concepts:" in printed and "median skill" in printed
    assert record["tokens"] == 640 and record["split"] == "heldout"
    # windows of `interp capture --split heldout --corpus-seed 0`, evenly spaced over the whole split
    capture = CaptureConfig(
        model=str(built.model_dir), hooks=[built.sae_hook], split="heldout", tokens=10**6, out=str(tmp_path / "acts")
    )
    captured = run_capture(capture, progress=False)
    dataset = ActivationDataset(captured[built.sae_hook])
    ids = torch.cat([dataset.shard(i)["tokens"].long() for i in range(dataset.num_shards)]).view(-1, 32)
    opened = open_model_and_sae(built.model_dir, built.sae_dir)
    tokens = _scored_tokens(opened.model, concept_suite("auto", [], "stdlib"), "stdlib", ScorecardConfig(tokens=640))
    chosen = np.linspace(0, len(ids) - 1, 20).round().astype(np.int64)
    assert torch.equal(tokens.windows, ids[chosen])
    assert record["documents"] == tokens.documents > 10  # spread over the split, not a prefix of a few documents
    bad = ["scorecard", "--model", str(built.model_dir), "--sae", str(built.sae_dir), "--out", str(tmp_path / "bad")]
    assert interp_main([*bad, "--concept", "x=("]) == 2
    assert "--concept x: '(' is not a valid regular expression" in capsys.readouterr().err
    assert interp_main([*bad, "--concept", "w=(\\w+)+!", "--regex-seconds", "0.5"]) == 2
    assert "--concept w: /(\\w+)+!/ took more than 0.5 s" in capsys.readouterr().err
    assert interp_main([*bad, "--control-model", str(built.model_dir)]) == 2
    assert "--control-model and --control-sae go together" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()  # refused before any work


def test_one_pass_per_model_serves_every_concept(built, tmp_path, monkeypatch):
    import interp.features.scorecard.run as scorecard_run
    from interp.features.scorecard.config import ScorecardInputs
    from interp.features.scorecard.run import run_scorecard

    passes = []
    real = scorecard_run.unit_activations
    monkeypatch.setattr(scorecard_run, "unit_activations", lambda *a, **k: passes.append(a[0]) or real(*a, **k))
    inputs = ScorecardInputs(
        model=str(built.model_dir),
        sae=str(built.sae_dir),
        corpus="stdlib",
        control_model=str(built.control_dir / "model"),
        control_sae=str(built.control_dir / "sae"),
        sibling_saes=[str(p) for p in built.width_sae_dirs],
    )
    concepts = [f"c{i}=[a-z]{{{i + 1}}}" for i in range(12)]
    record = run_scorecard(inputs, ScorecardConfig(tokens=512, concepts=concepts), tmp_path / "card", progress=False)
    assert len(record["concepts"]) > 60 and len(passes) == 2  # the trained model once, the control once


def test_report_replaces_only_a_report(built, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert interp_main(["report", "--analysis", str(built.analysis_dir), "--out", str(mine)]) == 2
    assert "holds files that are not a report" in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    copy = tmp_path / "report"
    shutil.copytree(built.report_dir, copy)
    assert interp_main(["report", "--analysis", str(built.analysis_dir), "--out", str(copy)]) == 0  # a report: replaced


def test_report_refuses_a_scorecard_of_an_older_format(built, tmp_path, capsys):
    old = tmp_path / "old"
    old.mkdir()
    record = json.loads((built.scorecard_dir / "scorecard.json").read_text())
    (old / "scorecard.json").write_text(json.dumps({**record, "format_version": 1}))
    args = ["report", "--analysis", str(built.analysis_dir), "--scorecard", str(old), "--out", str(tmp_path / "r")]
    assert interp_main(args) == 2
    assert "format version 1, this report reads version 2" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_model_init_never_overwrites_its_source_or_mixes_files(built, tmp_path, capsys):
    like = str(built.model_dir)
    before = {p.name: p.read_bytes() for p in built.model_dir.iterdir() if p.is_file()}
    assert interp_main(["model", "init", "--like", like, "--out", like, "--overwrite"]) == 2
    assert "is --like itself" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in built.model_dir.iterdir() if p.is_file()} == before
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert interp_main(["model", "init", "--like", like, "--out", str(mine), "--overwrite"]) == 2
    assert "holds files that are not a model, and writing the model replaces" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    trained = tmp_path / "trained"
    shutil.copytree(built.model_dir, trained)  # a trained model folder: replaced whole, its record gone
    assert interp_main(["model", "init", "--like", like, "--out", str(trained), "--overwrite"]) == 0
    assert sorted(p.name for p in trained.iterdir()) == sorted(p.name for p in (built.control_dir / "model").iterdir())
    config = json.loads((trained / "config.json").read_text())
    assert config["training"]["initialisation_of"] == str(built.model_dir.resolve())
