"""Reconstruction metrics against known answers and float64 numpy references."""

import math

import numpy as np
import pytest
import torch

from sae.metrics import ReconstructionMetrics, evaluate_sae, format_table


def stream(x, x_hat, f, sizes):
    """Feed the rows in batches of the given sizes (cycled) and return compute()."""
    m = ReconstructionMetrics(x.shape[1], f.shape[1])
    start, i = 0, 0
    while start < len(x):
        stop = start + sizes[i % len(sizes)]
        m.update(x[start:stop], x_hat[start:stop], f[start:stop])
        start, i = stop, i + 1
    return m


def reference(x, x_hat, f):
    """The definitions of sae/metrics.py in explicit numpy float64."""
    x, x_hat, f = (np.asarray(t, dtype=np.float64) for t in (x, x_hat, f))
    err = ((x - x_hat) ** 2).sum()
    fvu = err / ((x - x.mean(axis=0)) ** 2).sum()
    nx, nh = np.linalg.norm(x, axis=1), np.linalg.norm(x_hat, axis=1)
    density = (f != 0).mean(axis=0)
    return {
        "fvu": fvu,
        "explained_variance": 1 - fvu,
        "nmse": err / (x**2).sum(),
        "mse": err / x.size,
        "l0": (f != 0).sum(axis=1).mean(),
        "l1": np.abs(f).sum(axis=1).mean(),
        "cosine": ((x * x_hat).sum(axis=1) / (nx * nh)).mean(),
        "norm_ratio": (nh / nx).mean(),
        "dead_fraction": (density == 0).mean(),
        "dense_fraction_1pct": (density > 0.01).mean(),
        "dense_fraction_10pct": (density > 0.1).mean(),
    }


def random_case(n, d_in, d_sae, seed, offset=3.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = (
        torch.randn(n, d_in, generator=g, dtype=torch.float64) * torch.rand(d_in, generator=g, dtype=torch.float64)
        + offset
    )
    x_hat = x + 0.3 * torch.randn(n, d_in, generator=g, dtype=torch.float64)
    f = torch.relu(torch.randn(n, d_sae, generator=g, dtype=torch.float64) - 1.0)
    return x.to(dtype), x_hat.to(dtype), f.to(dtype)


def test_mean_predictor_explains_nothing():
    x, _, f = random_case(500, 7, 11, seed=1, offset=40.0)
    x_hat = x.mean(0, keepdim=True).expand_as(x)
    result = stream(x, x_hat, f, [37, 100, 1]).compute()
    assert abs(result["explained_variance"]) < 1e-12 and abs(result["fvu"] - 1) < 1e-12
    # measured against zero instead of the mean, the same predictor would look excellent
    assert 1 - result["nmse"] > 0.99


def test_identity_explains_everything():
    x, _, f = random_case(300, 5, 8, seed=2)
    result = stream(x, x, f, [64]).compute()
    assert result["explained_variance"] == 1.0 and result["fvu"] == 0.0 and result["nmse"] == 0.0
    assert abs(result["cosine"] - 1) < 1e-12 and abs(result["norm_ratio"] - 1) < 1e-12


def test_tiny_random_case_matches_hand_computed_values():
    x, x_hat, f = random_case(6, 3, 5, seed=3)
    result = stream(x, x_hat, f, [1, 2, 3]).compute()
    expected = reference(x.numpy(), x_hat.numpy(), f.numpy())
    for key, value in expected.items():
        assert math.isclose(result[key], value, rel_tol=1e-12, abs_tol=1e-15), key
    assert result["num_tokens"] == 6


@pytest.mark.parametrize("sizes", [[1], [7, 13], [250], [1000]])
def test_streaming_equals_one_shot_float64(sizes):
    # float32 inputs with a large mean: a naive sum x^2 - (sum x)^2/n in float32 would lose the variance
    x, x_hat, f = random_case(1000, 16, 32, seed=4, offset=1000.0, dtype=torch.float32)
    result = stream(x, x_hat, f, sizes).compute()
    expected = reference(x.numpy(), x_hat.numpy(), f.numpy())
    for key, value in expected.items():
        assert math.isclose(result[key], value, rel_tol=1e-10, abs_tol=1e-14), key
    assert 0.1 < result["fvu"] < 1  # the fixture is a meaningful reconstruction, not a degenerate one


def test_planted_sparse_code():
    n, d_sae = 1000, 10
    g = torch.Generator().manual_seed(5)
    f = torch.zeros(n, d_sae, dtype=torch.float32)
    f[:, 0] = torch.rand(n, generator=g) + 0.5  # fires everywhere: density 1
    rows1 = torch.randperm(n, generator=g)[:50]
    f[rows1, 1] = 2.0  # density 0.05: dense at 1%, not at 10%
    rows2 = torch.randperm(n, generator=g)[:5]
    f[rows2, 2] = -3.0  # density 0.005: negative activations count as firing
    # features 3..9 never fire
    x = torch.randn(n, 4, generator=g)
    m = stream(x, x, f, [300])
    result = m.compute()
    assert result["l0"] == (1000 + 50 + 5) / 1000
    assert math.isclose(result["l1"], (f[:, 0].double().sum().item() + 100 + 15) / 1000, rel_tol=1e-12)
    assert result["dead_fraction"] == 0.7
    assert result["dense_fraction_1pct"] == 0.2 and result["dense_fraction_10pct"] == 0.1
    assert m.fire_count.tolist() == [1000, 50, 5] + [0] * 7
    assert torch.allclose(
        m.mean_activation()[:3], torch.tensor([f[:, 0].double().mean().item(), 2.0, -3.0], dtype=torch.float64)
    )
    assert m.mean_activation()[3:].eq(0).all()
    edges, counts = m.density_histogram()
    # bins of 0.25 decades from -8: log10 1 = 0 -> last bin 31; log10 0.05 = -1.30 -> 26; log10 0.005 = -2.30 -> 22
    assert len(edges) == 33 and edges[0] == -8.0 and edges[-1] == 0.0
    assert {i: c for i, c in enumerate(counts) if c} == {22: 1, 26: 1, 31: 1}  # dead features are not binned


class TinySAE(torch.nn.Module):
    """ReLU encoder, linear decoder: enough for evaluate_sae."""

    def __init__(self, d_in, d_sae, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W_enc = torch.nn.Parameter(torch.randn(d_in, d_sae, generator=g) / d_in**0.5)
        self.W_dec = torch.nn.Parameter(torch.randn(d_sae, d_in, generator=g) / d_sae**0.5)

    def encode(self, x):
        return torch.relu(x @ self.W_enc)

    def decode(self, f):
        return f @ self.W_dec


def test_evaluate_sae_streams_an_sae_over_batches():
    sae = TinySAE(6, 20, seed=6)
    x = torch.randn(250, 6, generator=torch.Generator().manual_seed(7)) + 1
    result = evaluate_sae(sae, iter(x.split(64)), progress=False)
    with torch.no_grad():
        f = sae.encode(x)
        expected = reference(x.numpy(), sae.decode(f).numpy(), f.numpy())
    for key, value in expected.items():
        assert math.isclose(result[key], value, rel_tol=1e-6, abs_tol=1e-9), key
    assert result["num_tokens"] == 250 and sum(result["log10_density_hist_counts"]) == 20 * (
        1 - result["dead_fraction"]
    )
    truncated = evaluate_sae(sae, iter(x.split(64)), max_tokens=100, progress=False)
    with torch.no_grad():
        f = sae.encode(x[:100])
        assert math.isclose(
            truncated["fvu"], reference(x[:100].numpy(), sae.decode(f).numpy(), f.numpy())["fvu"], rel_tol=1e-6
        )
    assert truncated["num_tokens"] == 100


def test_bad_input_is_refused():
    m = ReconstructionMetrics(4, 8)
    with pytest.raises(
        ValueError, match=r"expected x and x_hat \[n, 4\] and f \[n, 8\], got x \[3, 4\], x_hat \[3, 4\], f \[3, 7\]"
    ):
        m.update(torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 7))
    with pytest.raises(ValueError, match="no tokens were evaluated"):
        m.compute()
    with pytest.raises(ValueError, match="no tokens were evaluated"):
        evaluate_sae(TinySAE(4, 8, 0), iter([]), progress=False)


def test_sae_eval_cli_writes_flat_json(tmp_path, capsys):
    import json

    from sae.architectures import build_sae
    from sae.cli import main
    from sae.data import ActivationDataset
    from sae.io import save_sae
    from sae.writer import ActivationWriter

    g = torch.Generator().manual_seed(11)
    sae = build_sae("topk", d_in=8, d_sae=32, k=4)
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    save_sae(sae, tmp_path / "sae", metadata={"hook_name": "blocks.0.hook_mlp_out"})
    acts = torch.randn(300, 8, generator=g) + 0.5
    with ActivationWriter(
        tmp_path / "acts",
        d_in=8,
        dtype="float32",
        hook_name="blocks.0.hook_mlp_out",
        model_id="toy",
        context_length=10,
        tokens_per_shard=100,
    ) as w:
        w.add(acts, torch.arange(300))

    assert (
        main(
            [
                "eval",
                "--acts",
                str(tmp_path / "acts"),
                "--sae",
                str(tmp_path / "sae"),
                "--json",
                str(tmp_path / "m.json"),
                "--batch-size",
                "64",
                "--tokens",
                "250",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "explained_variance" in out and "dead_fraction" in out
    result = json.loads((tmp_path / "m.json").read_text())
    with torch.no_grad():
        f = sae.encode(acts[:250])
        expected = reference(acts[:250].numpy(), sae.decode(f).numpy(), f.numpy())
    assert result["num_tokens"] == 250 and result["hook_name"] == "blocks.0.hook_mlp_out"
    for key, value in expected.items():
        assert math.isclose(result[key], value, rel_tol=1e-5, abs_tol=1e-9), key
    assert all(not isinstance(v, dict) for v in result.values())  # flat keys

    wrong = build_sae("topk", d_in=6, d_sae=32, k=4)
    with torch.no_grad():
        for p in wrong.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    save_sae(wrong, tmp_path / "wrong")
    assert main(["eval", "--acts", str(tmp_path / "acts"), "--sae", str(tmp_path / "wrong"), "--device", "cpu"]) == 2
    assert "takes d_in=6 but the activations" in capsys.readouterr().err
    ActivationDataset(tmp_path / "acts", verify=True)


def test_cosine_and_norm_ratio_do_not_depend_on_the_units():
    g = torch.Generator().manual_seed(5)
    x, x_hat = (
        torch.randn(64, 8, generator=g, dtype=torch.float64),
        torch.randn(64, 8, generator=g, dtype=torch.float64),
    )
    f = torch.rand(64, 16, generator=g, dtype=torch.float64)
    results = []
    for scale in (1.0, 1e-30, 1e30):
        m = ReconstructionMetrics(8, 16)
        m.update(x * scale, x_hat * scale, f)
        results.append(m.compute())
    expected_cos = float((torch.nn.functional.cosine_similarity(x, x_hat, dim=1, eps=0)).mean())
    for r in results:
        assert r["cosine"] == pytest.approx(expected_cos, rel=1e-12)
        assert r["norm_ratio"] == pytest.approx(results[0]["norm_ratio"], rel=1e-12)
        assert r["fvu"] == pytest.approx(results[0]["fvu"], rel=1e-12)


def test_constant_activations_and_nan_reconstructions_are_named():
    f = torch.rand(32, 4, generator=torch.Generator().manual_seed(0))
    constant = ReconstructionMetrics(3, 4)
    constant.update(torch.full((32, 3), 2.5), torch.randn(32, 3), f)
    with pytest.raises(ValueError, match="no variance .* FVU and explained variance are undefined"):
        constant.compute()
    broken = ReconstructionMetrics(3, 4)
    x_hat = torch.randn(32, 3)
    x_hat[7, 1] = float("nan")
    broken.update(torch.randn(32, 3), x_hat, f)
    with pytest.raises(ValueError, match="outputs NaN or Inf"):
        broken.compute()


def test_the_eval_table_states_the_dead_window():
    """sae eval's "dead" is the log's "dead" over a window of the evaluated tokens, and says so."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(64, 3, generator=g)
    f = torch.rand(64, 4, generator=g)
    f[:, 2] = 0  # never fires
    m = ReconstructionMetrics(3, 4)
    m.update(x, x + 0.1 * torch.randn(64, 3, generator=g), f)
    result = m.compute()
    assert result["dead_fraction"] == 0.25 and result["dead_window_tokens"] == 64
    line = next(line for line in format_table(result).splitlines() if line.startswith("dead_fraction"))
    assert line.split()[1:] == ["0.25", "(no", "firing", "in", "64", "tokens)"]
