"""Precision and device plumbing that CPU can check: autocast (bfloat16, float16) through every
architecture's training step, the float16 gradient scaler across a resume, and the background
batch reader used on CUDA (run here without pinning)."""

from __future__ import annotations

import json

import pytest
import torch

import sae.architectures as architectures
from sae.architectures import TrainState
from sae.checkpoint import latest_checkpoint
from sae.config import TrainConfig
from sae.distributed import Ranks
from sae.feed import BatchFeed
from sae.kernels import gather_rows_dot
from sae.train import train_sae

D_IN, D_SAE = 16, 64


def data(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    directions = torch.randn(48, D_IN, generator=torch.Generator().manual_seed(1234))
    codes = torch.rand(n, 48, generator=g) * (torch.rand(n, 48, generator=g) < 4 / 48)
    return codes @ directions * 3 + 0.5


@pytest.mark.parametrize("arch", sorted(architectures.ARCHITECTURES))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_training_step_matches_float32(arch, dtype):
    """Under CPU autocast each architecture's loss and gradients stay within half-precision error of
    float32, the loss comes out in float32, and the dense products really ran in half precision."""
    cls = architectures.get_architecture(arch)
    torch.manual_seed(0)
    sae = cls(cls.config_class.from_dict({"d_in": D_IN, "d_sae": D_SAE}))
    x = data(256, seed=1)
    state = TrainState(step=5, total_steps=10, dead_mask=torch.arange(D_SAE) % 3 == 0)

    def loss_and_grads(autocast: bool):
        sae.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=dtype, enabled=autocast):
            out = sae.train_step(x, state)
        out.total.backward()
        return out, torch.cat([p.grad.flatten() for p in sae.parameters() if p.grad is not None])

    exact, exact_grad = loss_and_grads(False)
    half, half_grad = loss_and_grads(True)
    assert half.total.dtype == torch.float32
    assert half.total.item() == pytest.approx(exact.total.item(), rel=3e-2)
    assert torch.nn.functional.cosine_similarity(half_grad, exact_grad, dim=0) > 0.98
    assert not torch.equal(half.x_hat.float(), exact.x_hat)  # the half-precision path was taken


def test_float16_scaler_state_resumes_exactly(tmp_path, monkeypatch):
    plain_scaler = torch.amp.GradScaler
    monkeypatch.setattr(torch.amp, "GradScaler", lambda device: plain_scaler(device, growth_interval=2))
    batches = list(data(12 * 128, seed=2).split(128))
    arch = ("relu", architectures.get_architecture("relu").config_class.from_dict({"d_in": D_IN, "d_sae": D_SAE}))
    cfg = TrainConfig(batch_size=128, steps=12, checkpoint_every=4, log_every=4, init_tokens=256, autocast="float16")
    full = train_sae([arch], batches, cfg, tmp_path / "full", progress=False)[0]

    def dies_at(n):
        for i, b in enumerate(batches):
            if i == n:
                raise KeyboardInterrupt
            yield b

    with pytest.raises(KeyboardInterrupt):
        train_sae([arch], dies_at(10), cfg, tmp_path / "cut", progress=False)
    state = json.loads((latest_checkpoint(tmp_path / "cut") / "state.json").read_text())
    assert state["step"] == 8 and state["grad_scalers"][0]["scale"] != 2.0**16  # it grew (or backed off)
    resumed = train_sae([arch], batches, cfg, tmp_path / "cut", resume=True, progress=False)[0]
    final = [
        json.loads((latest_checkpoint(tmp_path / run) / "state.json").read_text())["grad_scalers"]
        for run in ("full", "cut")
    ]
    assert final[0] == final[1]
    for name, tensor in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], tensor, atol=1e-6, rtol=0, msg=name)


def test_background_reader_keeps_order_positions_and_errors():
    batches = list(data(6 * 32, seed=3).split(32))
    cfg = TrainConfig(batch_size=32)
    plain = BatchFeed(batches, cfg, Ranks(), None)
    ahead = BatchFeed(batches, cfg, Ranks(), None, prefetch=True)
    assert len(ahead.peek(2)) == 2
    for _ in range(6):
        a, b = plain.next(), ahead.next()
        assert torch.equal(a[0], b[0]) and plain.position == ahead.position
    assert plain.next() is None and ahead.next() is None

    def broken():
        yield batches[0]
        raise OSError("disk went away")

    feed = BatchFeed(broken(), cfg, Ranks(), None, prefetch=True)
    assert torch.equal(feed.next()[0], batches[0])
    with pytest.raises(OSError, match="disk went away"):
        feed.next()


@pytest.mark.parametrize("sort_columns", [False, True])
def test_sampled_dot_products_with_and_without_sorted_columns(sort_columns):
    """The CUDA path sorts each row's latent indices for cuSPARSE and restores their order; both
    paths equal the float64 reference."""
    g = torch.Generator().manual_seed(5)
    indices = torch.randn(64, 300, generator=g).topk(7, dim=1, sorted=False).indices
    table, vectors = torch.randn(300, 24, generator=g), torch.randn(64, 24, generator=g)
    reference = (table.double()[indices] * vectors.double()[:, None, :]).sum(-1)
    got = gather_rows_dot(indices, table, vectors, sort_columns=sort_columns)
    torch.testing.assert_close(got.double(), reference, atol=1e-5, rtol=1e-5)
