"""sae.train and `sae train`: schedules, data initialisation, sweeps, dead latents, checkpoints,
exact resume after SIGKILL, and every bad-input path."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import sae.architectures as architectures
from sae.architectures.topk import TopKSAE
from sae.checkpoint import config_differences, latest_checkpoint
from sae.cli import main as sae_main
from sae.config import TopKConfig, TrainConfig
from sae.data import ActivationDataset
from sae.files import folder_lock
from sae.schedule import lr_factor
from sae.train import activation_scale, geometric_median, train_sae
from sae.writer import ActivationWriter

ROOT = Path(__file__).resolve().parents[1]
D_IN, D_SAE, K, BATCH = 16, 64, 4, 128


def planted(n: int, seed: int, d_in: int = D_IN, n_features: int = 48) -> torch.Tensor:
    """[n, d_in] sums of a few of n_features random directions, with an offset and scale far from 1."""
    g = torch.Generator().manual_seed(seed)
    directions = torch.randn(n_features, d_in, generator=torch.Generator().manual_seed(1234))
    codes = torch.rand(n, n_features, generator=g) * (torch.rand(n, n_features, generator=g) < 4 / n_features)
    return 5.0 * (codes @ directions) + 2.0


def batch_list(num: int, seed: int = 0) -> list[torch.Tensor]:
    return list(planted(num * BATCH, seed).split(BATCH))


def small_cfg(**overrides) -> TrainConfig:
    base = dict(batch_size=BATCH, steps=12, log_every=4, checkpoint_every=4, init_tokens=2 * BATCH)
    return TrainConfig(**{**base, **overrides})


def topk(k: int = K, d_sae: int = D_SAE, d_in: int = D_IN) -> tuple[str, TopKConfig]:
    return "topk", TopKConfig(d_in=d_in, d_sae=d_sae, k=k)


def write_dataset(path: Path, n: int, d_in: int = D_IN, seed: int = 0) -> ActivationDataset:
    with ActivationWriter(
        path,
        d_in=d_in,
        dtype="float32",
        hook_name="blocks.0.hook_mlp_out",
        model_id="test-model",
        context_length=16,
        tokens_per_shard=512,
    ) as writer:
        writer.add(planted(n, seed, d_in), torch.arange(n, dtype=torch.int32) % 50)
    return ActivationDataset(path)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "sae_weights.safetensors"))


# --- schedule and data initialisation ---------------------------------------------------------
def test_lr_schedule_known_values():
    cfg = TrainConfig(lr_warmup_steps=4, lr_decay="linear", lr_decay_fraction=0.5)
    assert [lr_factor(s, cfg, 10) for s in range(10)] == pytest.approx([0.25, 0.5, 0.75, 1, 1, 1, 0.8, 0.6, 0.4, 0.2])
    cos = TrainConfig(lr_decay="cosine", lr_decay_fraction=0.5)
    assert [lr_factor(s, cos, 8) for s in range(8)] == pytest.approx(
        [1, 1, 1, 1, 1, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.5 * (1 + math.cos(3 * math.pi / 4))]
    )
    assert lr_factor(9, TrainConfig(lr_decay="none"), 10) == 1


def test_geometric_median_of_collinear_points_is_the_middle_one():
    g = torch.Generator().manual_seed(0)
    center, direction = torch.randn(8, generator=g), torch.randn(8, generator=g)
    t = torch.tensor([-3.0, -1.2, 0.4, 2.5, 7.0])
    points = center + t[:, None] * direction
    assert torch.allclose(geometric_median(points), (center + 0.4 * direction).double(), atol=1e-6)


def test_geometric_median_is_the_minimum_of_summed_distances():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(500, 6, generator=g, dtype=torch.float64) * torch.tensor([1, 2, 3, 0.5, 1, 4.0]) + 3
    m = geometric_median(x)
    unit = (x - m) / (x - m).norm(dim=1, keepdim=True)
    assert unit.sum(0).norm() < 1e-6 * len(x)  # first-order optimality: the unit vectors cancel
    objective = lambda c: (x - c).norm(dim=1).sum()  # noqa: E731
    for _ in range(20):
        assert objective(m) <= objective(m + 1e-3 * torch.randn(6, generator=g, dtype=torch.float64))
    assert not torch.allclose(m, x.mean(0), atol=1e-2)  # skewed cloud: median is not the mean


def test_activation_scale_gives_mean_squared_norm_d_in():
    x = torch.randn(300, 12) * 7 + 1
    s = activation_scale(x)
    assert (s * x.double()).pow(2).sum(1).mean().item() == pytest.approx(12, rel=1e-9)


# --- training ---------------------------------------------------------------------------------
def test_training_learns_and_writes_log_config_checkpoint_and_sae(tmp_path):
    trained = train_sae([topk()], batch_list(12), small_cfg(), tmp_path / "run", progress=False)
    run = tmp_path / "run"
    assert (run / "cfg.json").is_file() and (run / "sae_weights.safetensors").is_file()
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [4, 8, 12]
    assert set(rows[0]) >= {
        "step",
        "tokens",
        "sae",
        "lr",
        "loss",
        "terms",
        "l0",
        "fvu",
        "dead_fraction",
        "tokens_per_s",
    }
    assert set(rows[0]["terms"]) == {"mse", "auxk"} and rows[-1]["l0"] == pytest.approx(K, abs=0.5)
    assert rows[-1]["fvu"] < rows[0]["fvu"] < 1.5
    config = json.loads((run / "train_config.json").read_text())
    assert config["train"]["batch_size"] == BATCH and config["members"][0]["config"]["k"] == K
    assert latest_checkpoint(run).name == "step-00000012"
    assert [p.name for p in (run / "checkpoint").iterdir() if p.is_dir()] == ["step-00000012"]  # older ones removed
    # the returned SAE takes raw activations: its held-out FVU is that of a trained model
    x = planted(2048, seed=99)
    fvu = (x - trained[0](x)).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    assert fvu < 0.9


def test_saved_sae_is_the_trained_one_with_the_scale_folded(tmp_path):
    cfg = small_cfg(steps=6)
    trained = train_sae([topk()], batch_list(6), cfg, tmp_path / "run", progress=False)[0]
    folder = latest_checkpoint(tmp_path / "run")
    state = json.loads((folder / "state.json").read_text())
    scale = state["activation_scale"]
    x0 = torch.cat(batch_list(6)[:2])
    assert scale == pytest.approx(math.sqrt(D_IN / x0.double().pow(2).sum(1).mean().item()), rel=1e-12)
    raw = TopKSAE(TopKConfig(d_in=D_IN, d_sae=D_SAE, k=K))
    raw.load_state_dict(
        {
            k.split(".", 2)[2]: v
            for k, v in load_file(str(folder / "tensors.safetensors")).items()
            if k.startswith("sae0.param.")
        }
    )
    x = planted(512, seed=5)
    with torch.no_grad():
        expected = raw(x * scale) / scale  # the training-form SAE on scaled inputs, outputs rescaled
        assert torch.allclose(trained(x), expected, atol=1e-4, rtol=1e-4)
        assert torch.allclose(trained.encode(x), raw.encode(x * scale), atol=1e-4, rtol=1e-4)


def test_b_dec_initialisation_from_the_first_tokens(tmp_path):
    batches = batch_list(3)
    cfg = small_cfg(steps=1, lr=1e-12, b_dec_init="mean", normalize_activations=False, checkpoint_every=0)
    sae = train_sae([topk()], batches, cfg, None, progress=False)[0]
    assert torch.allclose(sae.b_dec, torch.cat(batches[:2]).mean(0), atol=1e-4)
    cfg = small_cfg(steps=1, lr=1e-12, normalize_activations=False, checkpoint_every=0)
    sae = train_sae([topk()], batches, cfg, None, progress=False)[0]
    assert torch.allclose(sae.b_dec.double(), geometric_median(torch.cat(batches[:2])), atol=1e-4)


def test_sweep_reads_each_batch_once_and_each_member_equals_its_lone_run(tmp_path):
    reads = []

    def counted(batches):
        for i, b in enumerate(batches):
            reads.append(i)
            yield b

    cfg = small_cfg(steps=8)
    sweep = train_sae([topk(k=2), topk(k=6)], counted(batch_list(8)), cfg, tmp_path / "sweep", progress=False)
    assert reads == list(range(8))
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir() if (p / "cfg.json").is_file()) == ["k2", "k6"]
    lone = train_sae([topk(k=6)], batch_list(8), cfg, tmp_path / "lone", progress=False)[0]
    for name, tensor in lone.state_dict().items():
        assert torch.equal(tensor, sweep[1].state_dict()[name]), name
    assert not torch.equal(sweep[0].W_enc, sweep[1].W_enc)


class PlantedFiring(TopKSAE):
    """TopK whose reported firing is planted: latent l fires at 0-based step s iff l % 4 == s % 4,
    except latents 60..63, which never fire. Records the dead mask the trainer hands each step."""

    arch = "planted_firing"
    seen: list[torch.Tensor] = []

    def train_step(self, x, state):
        out = super().train_step(x, state)
        PlantedFiring.seen.append(state.dead_mask.clone())
        latent = torch.arange(self.cfg.d_sae)
        out.fired = ((latent % 4 == state.step % 4) & (latent < 60)).long()
        return out

    def inference_form(self):
        plain = TopKSAE(self.cfg)
        plain.load_state_dict(self.state_dict())
        return plain


def test_dead_latents_are_those_silent_for_the_window(monkeypatch):
    monkeypatch.setitem(architectures.ARCHITECTURES, "planted_firing", PlantedFiring)
    PlantedFiring.seen = []
    cfg = small_cfg(steps=10, dead_window_tokens=3 * BATCH, checkpoint_every=0, log_every=1)
    train_sae([("planted_firing", TopKConfig(d_in=D_IN, d_sae=D_SAE, k=K))], batch_list(10), cfg, None, progress=False)
    assert len(PlantedFiring.seen) == 10

    def batches_silent(latent: int, step: int) -> int:
        """Batches since `latent` last fired, as counted before 0-based `step`."""
        fired = [t for t in range(step) if latent < 60 and t % 4 == latent % 4]
        return step - 1 - fired[-1] if fired else step

    for step, dead in enumerate(PlantedFiring.seen):
        expected = torch.tensor([batches_silent(latent, step) >= 3 for latent in range(D_SAE)])
        assert torch.equal(dead, expected), step
    assert PlantedFiring.seen[5].sum() == 4 + 15  # never-firing ones, and l % 4 == 1 (last fired at step 1)


def test_dead_fraction_is_logged(tmp_path, monkeypatch):
    monkeypatch.setitem(architectures.ARCHITECTURES, "planted_firing", PlantedFiring)
    cfg = small_cfg(steps=8, dead_window_tokens=2 * BATCH, checkpoint_every=0, log_every=8)
    train_sae(
        [("planted_firing", TopKConfig(d_in=D_IN, d_sae=D_SAE, k=K))],
        batch_list(8),
        cfg,
        tmp_path / "r",
        progress=False,
    )
    row = json.loads((tmp_path / "r" / "log.jsonl").read_text())
    # after step 8 (0-based 7): latents with l % 4 == 3 fired at step 7, l % 4 == 2 at step 6: alive;
    # l % 4 in (0, 1) last fired 3 and 2 steps earlier: dead; and the 4 never-firing latents
    assert row["dead_fraction"] == pytest.approx((2 * 15 + 4) / D_SAE)


def test_default_dead_window_follows_the_run_length():
    cfg = TrainConfig(batch_size=2048)
    assert cfg.dead_window(4_000_000) == 400_000  # a tenth of the run
    assert cfg.dead_window(10_000) == 2048  # at least one batch
    assert cfg.dead_window(10**12) == 10_000_000  # at most 10M tokens
    assert TrainConfig(dead_window_tokens=5000).dead_window(10**9) == 5000  # a set window is kept
    with pytest.raises(ValueError, match="dead_window_tokens must be positive"):
        TrainConfig(dead_window_tokens=0).validate()
    with pytest.raises(ValueError, match="steps must be positive"):
        TrainConfig(steps=0).validate()


def test_log_and_config_state_the_dead_window_and_auxk_engages_in_a_short_run(tmp_path, monkeypatch):
    """With the default window (a tenth of the run: 2 batches here), latents that never fire are dead
    after 2 steps, so AuxK's term is positive from then on; every log line states the window."""
    monkeypatch.setitem(architectures.ARCHITECTURES, "planted_firing", PlantedFiring)
    cfg = small_cfg(steps=20, checkpoint_every=0, log_every=1)
    train_sae(
        [("planted_firing", TopKConfig(d_in=D_IN, d_sae=D_SAE, k=K))],
        batch_list(20),
        cfg,
        tmp_path / "r",
        progress=False,
    )
    rows = [json.loads(line) for line in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert {row["dead_window_tokens"] for row in rows} == {2 * BATCH}
    config = json.loads((tmp_path / "r" / "train_config.json").read_text())
    assert config["resolved"]["dead_window_tokens"] == 2 * BATCH and config["train"]["dead_window_tokens"] is None
    assert rows[0]["terms"]["auxk"] == 0 and all(row["terms"]["auxk"] > 0 for row in rows[2:])


# --- bad input --------------------------------------------------------------------------------
def test_nan_batch_stops_naming_it_and_keeps_the_last_good_checkpoint(tmp_path):
    batches = batch_list(12)
    batches[6] = batches[6].clone()
    batches[6][17, 3] = float("nan")
    with pytest.raises(ValueError) as err:
        train_sae([topk()], batches, small_cfg(), tmp_path / "run", progress=False)
    message = str(err.value)
    assert "batch 6" in message and "NaN or Inf" in message and "row 17" in message
    assert "step 4" in message and str(tmp_path / "run" / "checkpoint") in message
    assert latest_checkpoint(tmp_path / "run").name == "step-00000004"
    batches[6][17, 3] = float("inf")
    with pytest.raises(ValueError, match="batch 6"):
        train_sae([topk()], batches, small_cfg(), None, progress=False)


def test_nan_in_the_first_batches_is_named_too():
    batches = batch_list(4)
    batches[1] = torch.full_like(batches[1], float("inf"))
    with pytest.raises(ValueError, match="batch 1 .* NaN or Inf .* no checkpoint was written"):
        train_sae([topk()], batches, small_cfg(steps=4), None, progress=False)


def test_d_in_mismatch_names_both(tmp_path):
    dataset = write_dataset(tmp_path / "acts", 1024)
    with pytest.raises(ValueError) as err:
        train_sae([topk(d_in=24)], dataset, small_cfg(), tmp_path / "run", progress=False)
    assert "d_in=16" in str(err.value) and "d_in=24" in str(err.value) and "manifest.json" in str(err.value)
    with pytest.raises(ValueError, match=r"batch 0 has shape \(128, 16\) but the SAE config has d_in=24"):
        train_sae([topk(d_in=24)], batch_list(2), small_cfg(), None, progress=False)


def test_k_larger_than_d_sae_is_refused():
    with pytest.raises(ValueError, match="k=65 with d_sae=64"):
        train_sae([topk(k=65)], batch_list(2), small_cfg(), None, progress=False)


def test_existing_run_needs_resume_and_resume_needs_a_checkpoint(tmp_path):
    train_sae([topk()], batch_list(4), small_cfg(steps=4), tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match="already holds a run .* --resume"):
        train_sae([topk()], batch_list(4), small_cfg(steps=4), tmp_path / "run", progress=False)
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        train_sae([topk()], batch_list(4), small_cfg(steps=4), tmp_path / "new", resume=True, progress=False)


def test_resume_with_a_different_config_lists_the_fields(tmp_path):
    train_sae([topk()], batch_list(12), small_cfg(steps=12), tmp_path / "run", progress=False)
    with pytest.raises(ValueError) as err:
        train_sae(
            [topk(k=5)], batch_list(12), small_cfg(steps=12, lr=1e-3), tmp_path / "run", resume=True, progress=False
        )
    message = str(err.value)
    assert "2 field(s)" in message and "saes.0.config.k: checkpoint has 4, this run has 5" in message
    assert "train.lr: checkpoint has None, this run has 0.001" in message
    assert config_differences({"a": {"b": 1}}, {"a": {"b": 1}}) == []


def test_resume_of_a_plain_iterator_run_matches_the_uninterrupted_run(tmp_path):
    cfg = small_cfg(steps=12, checkpoint_every=4)
    full = train_sae([topk()], batch_list(12), cfg, tmp_path / "full", progress=False)[0]

    def dies_at(n):
        for i, b in enumerate(batch_list(12)):
            if i == n:
                raise KeyboardInterrupt
            yield b

    with pytest.raises(KeyboardInterrupt):
        train_sae([topk()], dies_at(10), cfg, tmp_path / "cut", progress=False)
    assert latest_checkpoint(tmp_path / "cut").name == "step-00000008"
    resumed = train_sae([topk()], batch_list(12), cfg, tmp_path / "cut", resume=True, progress=False)[0]
    for name, tensor in full.state_dict().items():
        assert torch.allclose(tensor, resumed.state_dict()[name], atol=1e-6, rtol=0), name
    steps = [json.loads(line)["step"] for line in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert steps == [4, 8, 12]


def test_checkpoint_holds_no_pickle_and_restores_adam(tmp_path):
    train_sae([topk()], batch_list(4), small_cfg(steps=4), tmp_path / "run", progress=False)
    folder = latest_checkpoint(tmp_path / "run")
    assert sorted(p.name for p in folder.iterdir()) == ["state.json", "tensors.safetensors"]
    tensors = load_file(str(folder / "tensors.safetensors"))
    assert {
        "sae0.param.W_enc",
        "sae0.optim.0.exp_avg",
        "sae0.optim.0.exp_avg_sq",
        "sae0.optim.0.step",
        "sae0.tokens_since_fired",
        "rng.torch",
    } <= set(tensors)
    assert tensors["sae0.optim.0.step"].item() == 4


# --- command line -----------------------------------------------------------------------------
def cli_args(acts: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--acts",
        str(acts),
        "--arch",
        "topk",
        "--d-sae",
        str(D_SAE),
        "--k",
        str(K),
        "--batch-size",
        str(BATCH),
        "--steps",
        "12",
        "--out",
        str(out),
        "--init-tokens",
        "256",
        "--shuffle-buffer",
        "256",
        "--threads",
        "1",
        "--log-every",
        "4",
        "--checkpoint-every",
        "4",
        *extra,
    ]


def test_cli_sweep_config_file_and_resolved_config(tmp_path, capsys):
    acts = tmp_path / "acts"
    write_dataset(acts, 2048)
    config = tmp_path / "cfg.json"
    config.write_text(
        json.dumps({"arch": "topk", "sae": {"d_sae": D_SAE, "k": [2, 3]}, "train": {"lr": 1e-3, "steps": 3}})
    )
    out = tmp_path / "sweep"
    code = sae_main(
        [
            "train",
            "--acts",
            str(acts),
            "--config",
            str(config),
            "--out",
            str(out),
            "--batch-size",
            "128",
            "--init-tokens",
            "128",
            "--steps",
            "4",
            "--threads",
            "1",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert (out / "k2" / "cfg.json").is_file() and (out / "k3" / "sae_weights.safetensors").is_file()
    resolved = json.loads((out / "train_config.json").read_text())
    assert resolved["acts"] == str(acts) and resolved["arch"] == "topk" and resolved["sae"]["k"] == [2, 3]
    assert resolved["train"]["lr"] == 1e-3 and resolved["train"]["steps"] == 4  # file, then flag
    assert [m["name"] for m in resolved["members"]] == ["k2", "k3"]
    assert json.loads((out / "k2" / "cfg.json").read_text())["d_in"] == D_IN


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--arch", "nope"], "unknown architecture 'nope'; registered: "),
        (["--k", "65"], "k=65 with d_sae=64"),
        (["--d-in", "24"], "has d_in=16 (its manifest.json) but SAE config has d_in=24"),
    ],
)
def test_cli_bad_input_is_reported(tmp_path, capsys, extra, message):
    acts = tmp_path / "acts"
    write_dataset(acts, 512)
    assert sae_main(cli_args(acts, tmp_path / "out", *extra)) == 2
    err = capsys.readouterr().err
    assert message in err
    if "registered" in message:
        assert "topk" in err.split("registered: ")[1]


def test_cli_resume_with_changed_flags_is_refused(tmp_path, capsys):
    acts = tmp_path / "acts"
    write_dataset(acts, 2048)
    assert sae_main(cli_args(acts, tmp_path / "run")) == 0
    assert sae_main(["train", "--resume", str(tmp_path / "run"), "--k", "5", "--lr", "0.01"]) == 2
    err = capsys.readouterr().err
    assert "saes.0.config.k: checkpoint has 4, this run has 5" in err and "train.lr" in err


def test_cli_resume_works_from_another_working_directory(tmp_path, monkeypatch, capsys):
    """train_config.json stores the dataset path resolved, not as typed relative to the first cwd."""
    (tmp_path / "first").mkdir()
    (tmp_path / "elsewhere").mkdir()
    write_dataset(tmp_path / "first" / "acts", 2048)
    monkeypatch.chdir(tmp_path / "first")
    assert sae_main(cli_args(Path("acts"), Path("run"))) == 0
    stored = json.loads((tmp_path / "first" / "run" / "train_config.json").read_text())["acts"]
    assert stored == str((tmp_path / "first" / "acts").resolve())
    monkeypatch.chdir(tmp_path / "elsewhere")
    capsys.readouterr()
    assert sae_main(["train", "--resume", str(tmp_path / "first" / "run")]) == 0, capsys.readouterr().err


def test_cli_train_and_eval_check_shard_hashes_unless_told_not_to(tmp_path, capsys):
    acts = tmp_path / "acts"
    write_dataset(acts, 2048)
    shard = sorted(acts.glob("acts-*.safetensors"))[1]
    data = bytearray(shard.read_bytes())
    data[-40] ^= 0x7F  # one byte of one activation
    shard.write_bytes(bytes(data))
    assert sae_main(cli_args(acts, tmp_path / "run")) == 2
    assert f"shard {shard} is corrupt" in capsys.readouterr().err
    assert sae_main(cli_args(acts, tmp_path / "run2", "--no-verify")) == 0
    assert sae_main(["eval", "--acts", str(acts), "--sae", str(tmp_path / "run2")]) == 2
    assert f"shard {shard} is corrupt" in capsys.readouterr().err
    assert sae_main(["eval", "--acts", str(acts), "--sae", str(tmp_path / "run2"), "--no-verify"]) == 0


def test_a_second_run_into_the_same_folder_is_refused_at_once(tmp_path, capsys):
    acts = tmp_path / "acts"
    write_dataset(acts, 2048)
    out = tmp_path / "run"
    with folder_lock(out, "sae train"):  # a run in progress
        assert sae_main(cli_args(acts, out)) == 2
        assert f"{out} is in use by another `sae train` (pid {os.getpid()})" in capsys.readouterr().err
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing written
    assert sae_main(cli_args(acts, out)) == 0  # the lock goes with its holder


def test_a_checkpoint_pointer_outside_the_run_is_refused(tmp_path):
    acts = tmp_path / "acts"
    write_dataset(acts, 2048)
    assert sae_main(cli_args(acts, tmp_path / "run")) == 0
    (tmp_path / "run" / "checkpoint" / "latest.json").write_text(json.dumps({"checkpoint": "../../acts"}))
    with pytest.raises(ValueError, match="field 'checkpoint' is '../../acts', which points outside"):
        latest_checkpoint(tmp_path / "run")


def test_cli_help_lists_the_architecture_options(capsys):
    with pytest.raises(SystemExit):
        sae_main(["train", "--arch", "topk", "--help"])
    text = capsys.readouterr().out
    assert "--d-sae" in text and "--k" in text and "--batch-size" in text and "--checkpoint-every" in text


KILLED_RUN = textwrap.dedent("""
    import runpy, sys, time
    from pathlib import Path
    import sae.data
    marker, stop_at = Path(sys.argv[1]), int(sys.argv[2])
    sys.argv = ["sae", *sys.argv[3:]]
    plain_next = sae.data.BatchStream.__next__
    served = [0]
    def next_then_hang(self):
        if served[0] == stop_at:  # the step after a checkpoint and a few more: wait to be killed
            marker.write_text("waiting")
            time.sleep(600)
        served[0] += 1
        return plain_next(self)
    sae.data.BatchStream.__next__ = next_then_hang
    runpy.run_module("sae", run_name="__main__")  # as `python -m sae ...`
""")


def test_sigkill_after_a_checkpoint_then_resume_ends_with_the_uninterrupted_weights(tmp_path):
    acts = tmp_path / "acts"
    write_dataset(acts, 2048)
    assert sae_main(cli_args(acts, tmp_path / "ref")) == 0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    marker = tmp_path / "marker"
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN, str(marker), "10", *cli_args(acts, tmp_path / "cut")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while not marker.exists():
        assert child.poll() is None, child.stderr.read()
        assert time.time() < deadline
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    assert latest_checkpoint(tmp_path / "cut").name == "step-00000008"
    assert not (tmp_path / "cut" / "sae_weights.safetensors").exists()
    assert sae_main(["train", "--resume", str(tmp_path / "cut")]) == 0
    expected, got = weights(tmp_path / "ref"), weights(tmp_path / "cut")
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.allclose(expected[name], got[name], atol=1e-6, rtol=0), name


@pytest.mark.parametrize("arch", sorted(architectures.ARCHITECTURES))
def test_every_architecture_trains_and_its_saved_file_is_the_returned_sae(tmp_path, arch):
    from sae.io import load_sae

    config = architectures.get_architecture(arch).config_class.from_dict({"d_in": D_IN, "d_sae": D_SAE})
    trained = train_sae([(arch, config)], batch_list(6), small_cfg(steps=6), tmp_path / arch, progress=False)[0]
    loaded = load_sae(tmp_path / arch)
    x = planted(256, seed=3)
    with torch.no_grad():
        assert torch.allclose(loaded(x), trained(x), atol=1e-5, rtol=1e-5)
        assert torch.isfinite(trained(x)).all()


def test_relu_resampling_runs_and_resume_restores_the_random_state(tmp_path, monkeypatch):
    from sae.architectures.relu import ReLUSAE
    from sae.config import ReLUConfig

    class SilentTail(ReLUSAE):
        """ReLU whose latents 48.. never count as fired, so they are dead and get resampled."""

        arch = "silent_tail"

        def train_step(self, x, state):
            out = super().train_step(x, state)
            out.fired[48:] = 0
            return out

        def inference_form(self):
            plain = ReLUSAE(self.cfg)
            plain.load_state_dict(self.state_dict())
            return plain

    monkeypatch.setitem(architectures.ARCHITECTURES, "silent_tail", SilentTail)
    relu = ("silent_tail", ReLUConfig(d_in=D_IN, d_sae=D_SAE))
    cfg = small_cfg(steps=12, checkpoint_every=4, dead_window_tokens=2 * BATCH, resample_steps=[6, 10])
    full = train_sae([relu], batch_list(12), cfg, tmp_path / "full", progress=False)[0]
    rows = [json.loads(line) for line in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    resampled = [(r["step"], r["resampled"]) for r in rows if "resampled" in r]
    assert [step for step, _ in resampled] == [6, 10]
    assert all(count >= D_SAE - 48 for _, count in resampled)  # at least the silent tail, every time

    def dies_at(n):
        for i, b in enumerate(batch_list(12)):
            if i == n:
                raise KeyboardInterrupt
            yield b

    with pytest.raises(KeyboardInterrupt):
        train_sae([relu], dies_at(9), cfg, tmp_path / "cut", progress=False)
    resumed = train_sae([relu], batch_list(12), cfg, tmp_path / "cut", resume=True, progress=False)[0]
    for name, tensor in full.state_dict().items():
        assert torch.allclose(tensor, resumed.state_dict()[name], atol=1e-6, rtol=0), name


def test_resample_steps_need_an_architecture_that_resamples():
    with pytest.raises(ValueError, match="resample_steps is set but architecture 'topk' does not resample"):
        train_sae([topk()], batch_list(2), small_cfg(resample_steps=[1]), None, progress=False)


def test_steps_default_to_one_pass_over_the_dataset(tmp_path):
    dataset = write_dataset(tmp_path / "acts", 1024 + 100)
    cfg = small_cfg(steps=None, log_every=1, checkpoint_every=0)
    train_sae([topk()], dataset, cfg, tmp_path / "run", progress=False)
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))  # 1124 tokens // 128 per batch
    meta = json.loads((tmp_path / "run" / "cfg.json").read_text())["metadata"]
    assert meta["hook_name"] == "blocks.0.hook_mlp_out" and meta["model_name"] == "test-model"


@pytest.mark.parametrize("dtype, autocast", [("float64", "none"), ("float32", "bfloat16")])
def test_dtype_and_autocast_options_train(dtype, autocast):
    sae = train_sae([topk()], batch_list(4), small_cfg(steps=4, dtype=dtype, autocast=autocast), None, progress=False)[
        0
    ]
    assert sae.W_enc.dtype == getattr(torch, dtype)
    x = planted(256, seed=4).to(sae.W_enc.dtype)
    with torch.no_grad():
        assert torch.isfinite(sae(x)).all()


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("batch_size", 0, "TrainConfig.batch_size must be positive"),
        ("lr_decay_fraction", 1.5, "TrainConfig.lr_decay_fraction must be in [0, 1]"),
        ("grad_clip_norm", -1.0, "TrainConfig.grad_clip_norm must be positive or none"),
        ("checkpoint_every", -1, "TrainConfig.checkpoint_every must be >= 0"),
        (
            "selection_dtype",
            "float16",
            "TrainConfig.selection_dtype must be one of ['auto', 'float32', 'bfloat16'], got 'float16'",
        ),
        ("autocast", "fp8", "TrainConfig.autocast must be one of ['none', 'bfloat16', 'float16'], got 'fp8'"),
    ],
)
def test_train_config_values_are_checked(field, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        train_sae([topk()], batch_list(2), small_cfg(**{field: value}), None, progress=False)


def test_cli_config_file_with_an_unknown_key_names_the_file(tmp_path, capsys):
    acts = tmp_path / "acts"
    write_dataset(acts, 512)
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"arch": "topk", "trian": {}}))
    assert (
        sae_main(["train", "--acts", str(acts), "--config", str(config), "--out", str(tmp_path / "o"), "--d-sae", "64"])
        == 2
    )
    assert f"{config}: unknown key(s) ['trian']" in capsys.readouterr().err
    config.write_text(json.dumps({"arch": "topk", "train": {"batch_sise": 3}}))
    assert (
        sae_main(["train", "--acts", str(acts), "--config", str(config), "--out", str(tmp_path / "o"), "--d-sae", "64"])
        == 2
    )
    assert "unknown field(s) ['batch_sise'] for TrainConfig" in capsys.readouterr().err


HEAP_PROBE = """
import ctypes, sys
import torch
from sae.hardware import tune_allocator

FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in FIELDS]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] != "default":
    assert tune_allocator(sys.argv[1])
block = torch.empty(16 * 2**20, dtype=torch.float32)  # 64 MiB, the size of a [4096, 4096] pre-activation
mapped = libc.mallinfo2().hblkhd >= 64 * 2**20  # a fresh mapping, not the heap
del block
kept = libc.mallinfo2().fordblks >= 64 * 2**20  # freed, and kept for the next step
print(mapped, kept)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings are Linux-only")
def test_freed_step_temporaries_stay_in_the_heap():
    """tune_allocator("keep") (what the training commands call) and its GLIBC_TUNABLES equivalent both
    serve a step's 64 MiB temporaries from the heap and keep them when freed; the default and
    "release" map and unmap them. Each in its own process: the settings are process-wide."""
    import subprocess

    from sae.hardware import GLIBC_TUNABLES

    def probe(mode: str, env_tunables: str | None) -> str:
        env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
        if env_tunables:
            env["GLIBC_TUNABLES"] = env_tunables
        done = subprocess.run([sys.executable, "-c", HEAP_PROBE, mode], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert probe("default", None) == "True False"
    assert probe("keep", None) == "False True"
    assert probe("default", GLIBC_TUNABLES["keep"]) == "False True"
    assert probe("release", None) == "True False"
    assert probe("default", GLIBC_TUNABLES["release"]) == "True False"


def test_default_learning_rate_scales_with_width_and_input_size():
    from sae.schedule import default_lr

    assert default_lr(2**14, 256) == pytest.approx(3e-3)
    assert default_lr(4096, 256) == pytest.approx(6e-3)
    assert default_lr(1024, 512) == pytest.approx(3e-3 * 4 / 2**0.5)
    assert default_lr(64, 16) == 1e-2  # capped


def test_selection_dtype_resolution(monkeypatch):
    import sae.hardware as hardware

    cpu = torch.device("cpu")
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))
    assert hardware.native_bfloat16_matmul(cpu)
    assert hardware.resolve_selection_dtype(TrainConfig(), cpu) is torch.bfloat16
    assert hardware.resolve_selection_dtype(TrainConfig(dtype="float64"), cpu) is None  # float64 asks for precision
    assert hardware.resolve_selection_dtype(TrainConfig(selection_dtype="float32"), cpu) is None  # the parameter dtype
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))  # bfloat16 would be emulated
    assert not hardware.native_bfloat16_matmul(cpu)
    assert hardware.resolve_selection_dtype(TrainConfig(), cpu) is None
    assert hardware.resolve_selection_dtype(TrainConfig(selection_dtype="bfloat16"), cpu) is torch.bfloat16
    assert (
        hardware.resolve_selection_dtype(TrainConfig(dtype="float64", selection_dtype="float32"), cpu) is torch.float32
    )


def test_cpu_flags_come_from_the_flags_line(tmp_path):
    from sae.hardware import cpu_flags

    fake = tmp_path / "cpuinfo"
    fake.write_text(
        "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx512_bf16 amx_tile\nbugs\t\t: spectre_v1\n"
    )
    assert cpu_flags(str(fake)) == {"fpu", "sse2", "avx512_bf16", "amx_tile"}
    assert cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_bfloat16_selection_trains_as_well_and_the_run_records_it(tmp_path):
    """Choosing the latents with a bfloat16 product (values, loss and gradients in float32) ends as
    close to the planted data as float32 selection; train_config.json names the dtype used."""
    x = planted(4096, seed=99)

    def held_out_fvu(sae) -> float:
        with torch.no_grad():
            return float((x - sae(x)).pow(2).sum() / (x - x.mean(0)).pow(2).sum())

    cfg = small_cfg(steps=40, checkpoint_every=0)
    runs = {}
    for dtype in ("float32", "bfloat16"):
        runs[dtype] = train_sae(
            [topk()], batch_list(40), dataclasses.replace(cfg, selection_dtype=dtype), tmp_path / dtype, progress=False
        )[0]
        recorded = json.loads((tmp_path / dtype / "train_config.json").read_text())
        assert recorded["resolved"]["selection_dtype"] == dtype and recorded["train"]["selection_dtype"] == dtype
    exact, chosen = held_out_fvu(runs["float32"]), held_out_fvu(runs["bfloat16"])
    assert exact < 0.5 and abs(chosen - exact) < 0.05 * exact, (exact, chosen)
    assert runs["bfloat16"].W_enc.dtype == torch.float32


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--d-sae", "1000000000", "--k", "4"], r"training needs about [\d,.]+ GiB .* lower --d-sae or --batch-size"),
        (["--device", "cuda"], "asks for a GPU but this torch"),
        (["--out", "FILE"], "is a file, not a folder"),
    ],
)
def test_impossible_requests_are_refused_before_any_work(tmp_path, capsys, extra, message):
    if "cuda" in extra and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    acts = tmp_path / "acts"
    write_dataset(acts, 512)
    if "FILE" in extra:
        (tmp_path / "a-file").write_text("x")
        extra = ["--out", str(tmp_path / "a-file")]
    assert sae_main(cli_args(acts, tmp_path / "out", *extra)) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "out").exists()  # a refused command leaves nothing behind


def test_json_naming_a_folder_is_refused_when_parsed(tmp_path, capsys):
    acts = tmp_path / "acts"
    write_dataset(acts, 512)
    with pytest.raises(SystemExit):
        sae_main(["eval", "--acts", str(acts), "--sae", str(tmp_path), "--json", str(tmp_path)])
    assert f"{tmp_path} is a folder; give a file path" in capsys.readouterr().err
