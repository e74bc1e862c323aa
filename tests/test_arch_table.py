"""scripts/arch_table.py on a tiny generated activation dataset: six rows, held-out tail, bad input."""

import contextlib
import importlib.util
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sae.data import ActivationDataset
from sae.io import load_sae
from sae.writer import ActivationWriter

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "arch_table.py"
spec = importlib.util.spec_from_file_location("arch_table", SCRIPT)
arch_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(arch_table)

D_IN, CONTEXT, ROWS, HELDOUT = 16, 16, 640, 128
TAIL_MARK = 1000.0  # test_training_rows_never_reach_the_tail plants this value in the held-out rows


def write_dataset(path: Path, tail_value: float | None = None) -> Path:
    """ROWS rows of planted sparse codes: 48 unit features in d 16, 2 active per row, plus small noise.
    With tail_value, the last HELDOUT rows are that constant instead."""
    g = torch.Generator().manual_seed(0)
    features = torch.randn(48, D_IN, generator=g)
    features /= features.norm(dim=1, keepdim=True)
    active = torch.rand(ROWS, 48, generator=g).argsort(1)[:, :2]
    codes = torch.zeros(ROWS, 48).scatter_(1, active, torch.rand(ROWS, 2, generator=g) * 2 + 0.5)
    acts = codes @ features + 0.01 * torch.randn(ROWS, D_IN, generator=g)
    if tail_value is not None:
        acts[-HELDOUT:] = tail_value
    with ActivationWriter(
        path,
        d_in=D_IN,
        dtype="float32",
        hook_name="blocks.0.mlp.hook_post",
        model_id="planted",
        context_length=CONTEXT,
        tokens_per_shard=128,
    ) as writer:
        writer.add(acts, torch.arange(ROWS, dtype=torch.int32) % 50)
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """main() on the planted dataset, no model; returns (document, stdout lines, tmp folder)."""
    tmp = tmp_path_factory.mktemp("arch_table")
    acts = write_dataset(tmp / "acts")
    argv = [
        "--acts",
        str(acts),
        "--model",
        "none",
        "--steps",
        "40",
        "--batch-size",
        "64",
        "--d-sae",
        "32",
        "--k",
        "4",
        "--heldout-tokens",
        str(HELDOUT),
        "--threads",
        "1",
        "--no-progress",
        "--out",
        str(tmp / "saes"),
        "--json",
        str(tmp / "table.json"),
    ]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        document = arch_table.main(argv)
    return document, printed.getvalue().splitlines(), tmp


def test_six_rows_with_finite_fvu_and_positive_l0(run):
    document, _, tmp = run
    on_disk = json.loads((tmp / "table.json").read_text())
    assert on_disk["rows"] == json.loads(json.dumps(document["rows"]))
    assert [r["arch"] for r in on_disk["rows"]] == list(arch_table.ARCHS)
    for row in on_disk["rows"]:
        assert math.isfinite(row["fvu"]) and 0 <= row["fvu"] <= 1.5, row
        assert row["l0"] > 0, row
        assert 0 <= row["dead_fraction"] <= 1, row
        assert row["tokens_per_s"] > 0 and row["train_tokens"] == 40 * 64, row
        assert row["heldout_tokens"] == HELDOUT, row
    assert on_disk["train_rows"] == ROWS - HELDOUT and on_disk["heldout_rows"] == HELDOUT
    k_of = {r["arch"]: r["config"] for r in on_disk["rows"]}
    assert k_of["topk"]["k"] == k_of["batchtopk"]["k"] == k_of["matryoshka"]["k"] == 4
    assert k_of["jumprelu"]["l0_target"] == 4


def test_command_first_and_a_markdown_row_per_architecture(run):
    document, lines, _ = run
    assert lines[0].startswith("command: .venv/bin/python scripts/arch_table.py --acts ")
    assert document["command"] in lines[0]
    table = [line for line in lines if line.startswith("| ")]
    assert table[0].startswith("| arch | held-out FVU | L0 | dead | train tok/s |")
    assert "CE loss recovered" not in table[0]  # no model, no splice columns
    assert [line.split(" | ")[0][2:] for line in table[1:]] == list(arch_table.ARCHS)


def test_fvu_is_the_held_out_tail_fvu_of_the_saved_sae(run):
    """Recompute FVU = sum (x - x_hat)^2 / sum (x - mean)^2 in float64 on the last HELDOUT rows."""
    document, _, tmp = run
    dataset = ActivationDataset(tmp / "acts")
    x = dataset.rows(np.arange(ROWS - HELDOUT, ROWS)).double()
    for row in document["rows"]:
        sae = load_sae(tmp / "saes" / row["arch"]).double()
        with torch.no_grad():
            f = sae.encode(x)
            x_hat = sae.decode(f)
        fvu = float((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
        assert row["fvu"] == pytest.approx(fvu, rel=1e-4, abs=1e-6), row["arch"]
        assert row["l0"] == pytest.approx(float((f != 0).sum(1).double().mean()), rel=1e-4, abs=1e-3), row["arch"]


def test_training_rows_never_reach_the_tail(tmp_path):
    dataset = ActivationDataset(write_dataset(tmp_path / "acts", tail_value=TAIL_MARK))
    rows = arch_table.TrainingRows(dataset, ROWS - HELDOUT, 64, seed=0)
    seen = 0
    for step, batch in zip(range(3 * (ROWS - HELDOUT) // 64), rows):  # three epochs
        assert batch.shape == (64, D_IN)
        assert batch.abs().max() < TAIL_MARK / 10, f"batch {step} holds a held-out row"
        seen += batch.shape[0]
    assert seen == 3 * (ROWS - HELDOUT)
    tail = torch.cat(list(arch_table.heldout_batches(dataset, ROWS - HELDOUT, 50)))
    assert tail.shape == (HELDOUT, D_IN) and bool((tail == TAIL_MARK).all())


def test_bad_input_is_named(tmp_path):
    acts = write_dataset(tmp_path / "acts")
    common = ["--acts", str(acts), "--model", "none", "--no-progress", "--batch-size", "64"]
    with pytest.raises(ValueError, match="leaves nothing to train on"):
        arch_table.main(common + ["--heldout-tokens", str(ROWS)])
    with pytest.raises(ValueError, match="relu has no settable field 'k'"):
        arch_table.main(common + ["--set", "relu.k=3"])
    with pytest.raises(ValueError, match="ARCH.FIELD=VALUE"):
        arch_table.main(common + ["--set", "l1_coefficient=3"])
    with pytest.raises(ValueError, match="unknown architecture"):
        arch_table.main(common + ["--archs", "relu,nope"])
    with pytest.raises(FileNotFoundError, match="model folder"):
        arch_table.main(common + ["--model", str(tmp_path / "missing")])
    assert arch_table.parse_overrides(["relu.l1_coefficient=3", "gated.l1_coefficient=0.5"]) == {
        "relu": {"l1_coefficient": 3.0},
        "gated": {"l1_coefficient": 0.5},
    }
