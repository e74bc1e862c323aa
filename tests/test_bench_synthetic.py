"""`sae bench-synthetic`: training on planted ground truth recovers it, and the command reports it."""

from __future__ import annotations

import json

import pytest
import torch

from sae.architectures import build_sae, get_architecture
from sae.bench_synthetic import run_benchmark
from sae.cli import main, parse_bench_args
from sae.config import SyntheticConfig, TrainConfig
from sae.synthetic import SyntheticActivations, mmcs

# An easy planted set: 32 equally frequent features in 32 dimensions, 2 active per sample.
EASY = SyntheticConfig(d=32, num_features=32, mean_active=2.0, firing_exponent=0.0, seed=3)
EASY_TRAIN = TrainConfig(
    batch_size=256, steps=300, lr=4e-3, device="cpu", init_tokens=2048, checkpoint_every=0, log_every=50
)


def topk_config(**fields):
    cls = get_architecture("topk").config_class
    return cls.from_dict({"d_in": 32, "d_sae": 64, "k": 2, **fields})


def test_topk_recovers_an_easy_planted_set():
    result = run_benchmark("topk", topk_config(), EASY_TRAIN, EASY, eval_tokens=4096, progress=False)
    assert result["recovered_0.9"] >= 0.95
    assert result["mmcs"] > 0.95
    assert result["fvu"] < 0.3  # samples with more than k = 2 active features are cut to 2
    assert result["l0"] == pytest.approx(2.0, abs=0.05)
    # the recovery numbers are those of the trained dictionary (cos with the planted features)
    assert 0 <= result["recovered_0.99"] <= result["recovered_0.9"] <= 1
    assert result["train_tokens"] == 300 * 256 and result["eval_tokens"] == 4096
    assert result["sae"]["k"] == 2 and result["train"]["steps"] == 300 and result["synthetic"]["d"] == 32


def test_a_random_dictionary_recovers_little():
    """The measure can fail: an untrained SAE's decoder finds few planted features."""
    torch.manual_seed(0)
    untrained = build_sae("topk", d_in=32, d_sae=64, k=2)
    features = SyntheticActivations(EASY).features
    assert mmcs(features, untrained.W_dec) < 0.8


def test_cli_writes_the_result_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(
        [
            "bench-synthetic",
            "--arch",
            "topk",
            "--d",
            "32",
            "--num-features",
            "32",
            "--mean-active",
            "2",
            "--firing-exponent",
            "0",
            "--data-seed",
            "3",
            "--d-sae",
            "64",
            "--k",
            "2",
            "--steps",
            "300",
            "--batch-size",
            "256",
            "--lr",
            "4e-3",
            "--init-tokens",
            "2048",
            "--eval-tokens",
            "2048",
            "--match-table",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    result = json.loads(out.read_text())
    assert {"mmcs", "recovered_0.9", "recovered_0.99", "fvu", "l0", "sae", "train", "synthetic"} <= result.keys()
    assert result["recovered_0.9"] >= 0.95
    assert result["train"]["lr"] == 4e-3
    assert len(result["match_table"]) == 32
    assert sum(row["cosine"] for row in result["match_table"]) / 32 == pytest.approx(result["mmcs"], abs=1e-12)
    assert json.loads(capsys.readouterr().out.splitlines()[0])["arch"] == "topk"


def test_defaults_are_the_tuned_benchmark_settings():
    request, _ = parse_bench_args(["--arch", "topk"])
    assert request["data_cfg"] == SyntheticConfig()
    assert request["sae_cfg"].d_in == 256 and request["sae_cfg"].d_sae == 1024 and request["sae_cfg"].k == 5
    assert request["train_cfg"].steps == 1500 and request["train_cfg"].batch_size == 1024
    assert parse_bench_args(["--arch", "topk", "--steps", "7", "--d", "64"])[0]["sae_cfg"].d_in == 64


def test_mismatched_widths_and_missing_steps_are_refused():
    with pytest.raises(ValueError, match=r"d_in=16.*d=32"):
        run_benchmark("topk", topk_config(d_in=16), EASY_TRAIN, EASY, progress=False)
    no_steps = TrainConfig(batch_size=256, steps=None, device="cpu")
    with pytest.raises(ValueError, match="steps must be set"):
        run_benchmark("topk", topk_config(), no_steps, EASY, progress=False)


def test_unknown_architecture_is_refused_by_name(capsys):
    assert main(["bench-synthetic", "--arch", "nope"]) == 2
    assert "unknown architecture 'nope'" in capsys.readouterr().err


def test_per_architecture_training_defaults_apply_and_yield_to_options():
    assert parse_bench_args(["--arch", "relu"])[0]["train_cfg"].lr == 4e-3
    assert parse_bench_args(["--arch", "relu", "--lr", "1e-3"])[0]["train_cfg"].lr == 1e-3
    jumprelu = parse_bench_args(["--arch", "jumprelu"])[0]["sae_cfg"]
    assert jumprelu.initial_threshold == 2.0 and jumprelu.l0_coefficient == 4.0


def test_topk_at_the_default_settings_recovers_at_least_99_percent():
    """The benchmark as `sae bench-synthetic --arch topk` runs it (1500 steps of 1024 tokens): at least
    99% of the 512 planted features found at cosine > 0.9. It fell to 94.9% while AuxK's dead window
    (10M tokens) was longer than the 1.5M-token run; the window now scales with the run."""
    request, _ = parse_bench_args(["--arch", "topk"])
    result = run_benchmark(**request, progress=False)
    assert result["recovered_0.9"] >= 0.99 and result["mmcs"] >= 0.99, result
