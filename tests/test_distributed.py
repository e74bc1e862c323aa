"""Data-parallel training (sae.distributed + sae.train) on 2 CPU processes with gloo: two ranks
reproduce one process with the same global batch and seed, stay identical to each other, write
files from rank 0 only, resume across rank counts, and stop together on bad data; `sae train --nproc`."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import sae.architectures as architectures
import sae.train
from sae.architectures.relu import ReLUSAE
from sae.checkpoint import latest_checkpoint
from sae.cli import main as sae_main
from sae.config import BatchTopKConfig, GatedConfig, JumpReLUConfig, ReLUConfig, TopKConfig, TrainConfig
from sae.data import ActivationDataset
from sae.distributed import Ranks, resolve_device
from sae.train import train_sae
from sae.writer import ActivationWriter

ROOT = Path(__file__).resolve().parents[1]
D_IN, D_SAE, BATCH = 16, 64, 128


def planted(n: int, seed: int) -> torch.Tensor:
    """[n, D_IN] sums of a few of 48 random directions, with an offset and a scale far from 1."""
    g = torch.Generator().manual_seed(seed)
    directions = torch.randn(48, D_IN, generator=torch.Generator().manual_seed(1234))
    codes = torch.rand(n, 48, generator=g) * (torch.rand(n, 48, generator=g) < 4 / 48)
    return 5.0 * (codes @ directions) + 2.0


def write_dataset(path: Path, n: int = 2048) -> Path:
    x = planted(n, seed=0)
    with ActivationWriter(
        path,
        d_in=D_IN,
        dtype="float32",
        hook_name="blocks.0.hook_mlp_out",
        model_id="test-model",
        context_length=16,
        tokens_per_shard=512,
    ) as writer:
        writer.add(x, torch.arange(n, dtype=torch.int32) % 50)
    return path


def config(**overrides) -> TrainConfig:
    base = dict(
        batch_size=BATCH,
        steps=12,
        log_every=4,
        checkpoint_every=4,
        init_tokens=2 * BATCH,
        shuffle_buffer=256,
        dead_window_tokens=3 * BATCH,
        lr=3e-3,
    )
    return TrainConfig(**{**base, **overrides})


# Per-token losses: two ranks must reproduce one process.
EXACT = [
    ("topk", TopKConfig(d_in=D_IN, d_sae=D_SAE, k=4)),
    ("relu", ReLUConfig(d_in=D_IN, d_sae=D_SAE, l1_coefficient=3.0)),
    ("jumprelu", JumpReLUConfig(d_in=D_IN, d_sae=D_SAE, l0_coefficient=0.05)),
    ("gated", GatedConfig(d_in=D_IN, d_sae=D_SAE)),
]
NAMES = [arch for arch, _ in EXACT]


# --- running several ranks ---------------------------------------------------------------------
def _rank_main(rank: int, world_size: int, store: str, job, args, result: Path) -> None:
    try:
        torch.set_num_threads(1)  # first: OpenMP pools do not survive fork; one thread never enters them
        torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
        trained = job(Ranks(rank=rank, world_size=world_size), *args)
        save_file(
            {f"{i}.{k}": v.detach().contiguous() for i, sae in enumerate(trained) for k, v in sae.state_dict().items()},
            str(result),
        )
        torch.distributed.destroy_process_group()
    except BaseException:
        result.with_suffix(".err").write_text(traceback.format_exc())
        os._exit(1)
    os._exit(0)


def run_ranks(tmp: Path, job, *args, world_size: int = 2, timeout: float = 120) -> list[dict[str, torch.Tensor] | str]:
    """Run job(ranks, *args) -> list[SAE] on `world_size` forked processes joined by gloo; per rank,
    the trained SAEs' tensors ("i.name") or the traceback of the error it raised."""
    tmp.mkdir(parents=True, exist_ok=True)
    store = tmp / "store"
    store.unlink(missing_ok=True)
    context = multiprocessing.get_context("fork")
    results = [tmp / f"rank{r}.safetensors" for r in range(world_size)]
    for path in results:
        path.unlink(missing_ok=True)
        path.with_suffix(".err").unlink(missing_ok=True)
    procs = [
        context.Process(target=_rank_main, args=(r, world_size, str(store), job, args, results[r]))
        for r in range(world_size)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
    for p in procs:
        if p.is_alive():
            p.kill()
            raise AssertionError(f"a rank did not finish within {timeout} s (deadlocked collective?)")
    return [load_file(str(r)) if r.is_file() else r.with_suffix(".err").read_text() for r in results]


def train_job(ranks: Ranks, acts: str, out: str | None, cfg: TrainConfig, saes, resume: bool = False):
    names = [a.split("_")[-1] for a, _ in saes]
    return train_sae(saes, ActivationDataset(acts), cfg, out, names=names, resume=resume, progress=False, ranks=ranks)


def crashing_job(ranks: Ranks, acts: str, out: str, cfg: TrainConfig, saes, crash_at: int):
    """As train_job, but every rank's data stops with an error when batch `crash_at` is asked for."""
    plain_next = sae.feed.BatchFeed.next

    def next_or_crash(self):
        if self.read == crash_at:
            raise KeyboardInterrupt
        return plain_next(self)

    sae.feed.BatchFeed.next = next_or_crash
    return train_job(ranks, acts, out, cfg, saes)


def tensors_of(trained) -> dict[str, torch.Tensor]:
    return {f"{i}.{k}": v.detach() for i, sae in enumerate(trained) for k, v in sae.state_dict().items()}


def assert_close(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor], atol: float = 2e-5) -> None:
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=atol, rtol=1e-4, msg=name)


# --- tests -------------------------------------------------------------------------------------
def test_two_ranks_reproduce_one_process_and_only_rank_0_writes(tmp_path):
    """At the default settings: `auto` selection is float32 under data parallelism, so two ranks equal
    one process selecting in float32, whatever the hardware's bfloat16."""
    acts = write_dataset(tmp_path / "acts")
    cfg = config()
    assert cfg.selection_dtype == "auto"
    one_process = dataclasses.replace(cfg, selection_dtype="float32")
    single = train_sae(EXACT, ActivationDataset(acts), one_process, tmp_path / "one", names=NAMES, progress=False)
    ranks = run_ranks(tmp_path / "job", train_job, str(acts), str(tmp_path / "two"), cfg, EXACT)
    assert all(isinstance(r, dict) for r in ranks), ranks
    assert_close(tensors_of(single), ranks[0])
    assert_close(ranks[0], ranks[1], atol=0)  # the ranks hold identical weights
    for name in NAMES:  # the files written by rank 0 are the single-process ones
        expected, got = (
            load_file(str(tmp_path / "one" / name / "sae_weights.safetensors")),
            load_file(str(tmp_path / "two" / name / "sae_weights.safetensors")),
        )
        assert_close(expected, got)
    one_log = [json.loads(line) for line in (tmp_path / "one" / "log.jsonl").read_text().splitlines()]
    two_log = [json.loads(line) for line in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    assert len(two_log) == len(one_log)  # one writer: no line twice
    for a, b in zip(one_log, two_log):  # logged metrics are those of the global batch
        assert a.keys() == b.keys() and a["step"] == b["step"] and a["sae"] == b["sae"]
        for key in ("loss", "fvu", "l0", "dead_fraction"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (a["sae"], key)
    resolved = json.loads((tmp_path / "two" / "train_config.json").read_text())["resolved"]
    assert resolved["selection_dtype"] == "float32"
    state = json.loads((latest_checkpoint(tmp_path / "two") / "state.json").read_text())
    assert state["step"] == 12 and state["data_position"]["stream"]["global_batch"] == BATCH


def test_batch_topk_trains_per_local_batch_with_one_threshold(tmp_path):
    acts = write_dataset(tmp_path / "acts")
    saes = [("batchtopk", BatchTopKConfig(d_in=D_IN, d_sae=D_SAE, k=4))]
    ranks = run_ranks(tmp_path / "job", train_job, str(acts), None, config(steps=6), saes)
    assert all(isinstance(r, dict) for r in ranks), ranks
    assert_close(ranks[0], ranks[1], atol=0)  # the threshold is averaged over ranks: one value everywhere
    assert ranks[0]["0.log_threshold"].unique().numel() == 1  # its inference form: one JumpReLU threshold


class SilentReLU(ReLUSAE):
    """ReLU whose latents 48..63 report never firing: dead after the window, resampled."""

    arch = "silent_relu"

    def train_step(self, x, state):
        out = super().train_step(x, state)
        out.fired = out.fired * (torch.arange(self.cfg.d_sae) < 48)
        return out

    def inference_form(self):
        plain = ReLUSAE(self.cfg)
        plain.load_state_dict(self.state_dict())
        return plain


def test_resume_across_rank_counts_matches_the_uninterrupted_run(tmp_path, monkeypatch):
    """relu resampling its dead latents at step 6, after the resume, from the all-gathered batch."""
    monkeypatch.setitem(architectures.ARCHITECTURES, "silent_relu", SilentReLU)  # forked ranks inherit it
    acts = write_dataset(tmp_path / "acts")
    saes = [("silent_relu", EXACT[1][1])]
    cfg = config(resample_steps=[6])
    reference = tensors_of(
        train_sae(saes, ActivationDataset(acts), cfg, tmp_path / "ref", names=["relu"], progress=False)
    )
    log = [json.loads(line) for line in (tmp_path / "ref" / "log.jsonl").read_text().splitlines()]
    assert [row["resampled"] for row in log if "resampled" in row] == [16]
    ranks = run_ranks(tmp_path / "job", crashing_job, str(acts), str(tmp_path / "cut"), cfg, saes, 6)
    assert all(isinstance(r, str) and "KeyboardInterrupt" in r for r in ranks), ranks
    assert latest_checkpoint(tmp_path / "cut").name == "step-00000004"
    shutil.copytree(tmp_path / "cut", tmp_path / "cut2")
    # two ranks stopped; one process finishes the run ...
    one = train_sae(saes, ActivationDataset(acts), cfg, tmp_path / "cut", names=["relu"], resume=True, progress=False)
    assert_close(reference, tensors_of(one))
    # ... or two ranks again
    two = run_ranks(tmp_path / "job", train_job, str(acts), str(tmp_path / "cut2"), cfg, saes, True)
    assert isinstance(two[0], dict), two
    assert_close(reference, two[0])


def slices_job(ranks: Ranks, global_batches: list[torch.Tensor], cfg: TrainConfig, saes):
    """Train on plain tensors: each rank takes its slice of every global batch."""
    local = ranks.local_batch(cfg.batch_size)
    mine = [b[ranks.rank * local : (ranks.rank + 1) * local] for b in global_batches]
    return train_sae(saes, mine, cfg, None, progress=False, ranks=ranks)


def test_plain_iterables_split_by_rank_reproduce_one_process(tmp_path):
    batches = list(planted(12 * BATCH, seed=3).split(BATCH))
    single = train_sae(EXACT[:1], batches, config(selection_dtype="float32"), None, progress=False)
    ranks = run_ranks(tmp_path / "job", slices_job, batches, config(), EXACT[:1])  # auto: float32 under ranks
    assert isinstance(ranks[0], dict), ranks
    assert_close(tensors_of(single), ranks[0])


def test_a_bad_batch_on_one_rank_stops_every_rank(tmp_path):
    batches = list(planted(12 * BATCH, seed=3).split(BATCH))
    batches[5] = batches[5].clone()
    batches[5][BATCH // 2 + 6, 3] = float("nan")  # row 6 of rank 1's half of global batch 5
    ranks = run_ranks(tmp_path / "job", slices_job, batches, config(), EXACT[:1])
    assert isinstance(ranks[0], str) and isinstance(ranks[1], str), ranks
    assert "batch 5 of rank 1 is bad" in ranks[0]
    assert "batch 5 (0-based" in ranks[1] and "NaN or Inf" in ranks[1] and "row 6" in ranks[1]


def test_global_batch_must_split_evenly():
    with pytest.raises(ValueError, match="batch_size 127 is not divisible by the 2 ranks"):
        Ranks(rank=0, world_size=2).local_batch(127)


def test_device_names_are_checked():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="use auto, cpu, cuda or cuda:N"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA device; use --device cpu"):
            resolve_device("cuda:1")


def test_cli_nproc_2_through_torchrun_matches_one_process(tmp_path, capsys):
    acts = write_dataset(tmp_path / "acts")
    args = [
        "train",
        "--acts",
        str(acts),
        "--arch",
        "topk",
        "--d-sae",
        str(D_SAE),
        "--k",
        "4",
        "--batch-size",
        str(BATCH),
        "--steps",
        "8",
        "--init-tokens",
        "256",
        "--shuffle-buffer",
        "256",
        "--threads",
        "1",
        "--checkpoint-every",
        "4",
        "--lr",
        "0.003",
    ]
    # the default (auto) selection on 2 processes equals float32 selection on one
    assert sae_main([*args, "--out", str(tmp_path / "one"), "--selection-dtype", "float32"]) == 0
    assert sae_main([*args, "--out", str(tmp_path / "bad"), "--nproc", "0"]) == 2
    assert "--nproc must be at least 1, got 0" in capsys.readouterr().err
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    two = subprocess.run(
        [sys.executable, "-m", "sae", *args, "--out", str(tmp_path / "two"), "--nproc", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("saved 1 SAE(s)") == 1  # rank 0 reports
    assert_close(
        load_file(str(tmp_path / "one" / "sae_weights.safetensors")),
        load_file(str(tmp_path / "two" / "sae_weights.safetensors")),
    )


def test_auto_selection_is_float32_under_data_parallelism(monkeypatch):
    import sae.hardware

    monkeypatch.setattr(sae.hardware, "native_bfloat16_matmul", lambda device: True)  # hardware that has bf16
    cfg = config()
    cpu = torch.device("cpu")
    assert sae.hardware.resolve_selection_dtype(cfg, cpu) == torch.bfloat16
    assert sae.hardware.resolve_selection_dtype(cfg, cpu, distributed=True) is None  # the parameter dtype
