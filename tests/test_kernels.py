"""The sparse TopK kernels against plain dense autograd, in float64 on random inputs."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from sae.kernels import CodeLayout, densify, encoder_preacts, gather_preacts, gather_rows_dot, sparse_decode

D64 = torch.float64


def random_problem(n=23, d_in=11, d_sae=37, seed=0):
    g = torch.Generator().manual_seed(seed)
    leaf = lambda *shape: torch.randn(*shape, generator=g, dtype=D64).requires_grad_()  # noqa: E731
    return leaf(n, d_in), leaf(d_in, d_sae), leaf(d_sae), leaf(d_in), leaf(d_sae, d_in), g


def dense_topk_sae(x, W_enc, b_enc, b_dec, W_dec, k):
    """The reference: plain autograd through a dense [n, d_sae] code."""
    pre = (x - b_dec) @ W_enc + b_enc
    top = pre.topk(k, dim=1)
    f = torch.zeros_like(pre).scatter(1, top.indices, F.relu(top.values))
    return f @ W_dec + b_dec


def sparse_topk_sae(x, W_enc, b_enc, b_dec, W_dec, k, shared_layout=True):
    pre = encoder_preacts(x, W_enc, b_enc, b_dec)
    indices = pre.topk(k, dim=1, sorted=False).indices
    layout = CodeLayout(indices, W_enc.shape[1]) if shared_layout else None
    values = F.relu(gather_preacts(pre, indices, x, W_enc, b_enc, b_dec, layout))
    return sparse_decode(values, indices, W_dec, layout) + b_dec


@pytest.mark.parametrize("shared_layout", [True, False])
def test_sparse_path_matches_dense_autograd_values_and_every_gradient(shared_layout):
    x, W_enc, b_enc, b_dec, W_dec, g = random_problem()
    inputs = (x, W_enc, b_enc, b_dec, W_dec)
    upstream = torch.randn(x.shape, generator=g, dtype=D64)
    out_dense = dense_topk_sae(*inputs, k=5)
    grads_dense = torch.autograd.grad((out_dense * upstream).sum(), inputs)
    out_sparse = sparse_topk_sae(*inputs, k=5, shared_layout=shared_layout)
    grads_sparse = torch.autograd.grad((out_sparse * upstream).sum(), inputs)
    assert (out_sparse - out_dense).abs().max() < 1e-10
    for name, a, b in zip(["x", "W_enc", "b_enc", "b_dec", "W_dec"], grads_sparse, grads_dense):
        assert (a - b).abs().max() < 1e-10, name
        assert b.abs().max() > 0, name  # the comparison is not vacuous


def test_gradcheck_through_topk_encode_and_sparse_decode():
    x, W_enc, b_enc, b_dec, W_dec, _ = random_problem(n=4, d_in=3, d_sae=9, seed=1)
    assert torch.autograd.gradcheck(lambda *a: sparse_topk_sae(*a, k=3), (x, W_enc, b_enc, b_dec, W_dec))


def test_gradcheck_each_kernel_with_fixed_indices():
    g = torch.Generator().manual_seed(2)
    n, d_in, d_sae, k = 7, 4, 10, 3
    indices = torch.rand(n, d_sae, generator=g).argsort(1)[:, :k]
    x = torch.randn(n, d_in, generator=g, dtype=D64, requires_grad=True)
    W_enc = torch.randn(d_in, d_sae, generator=g, dtype=D64, requires_grad=True)
    b_enc = torch.randn(d_sae, generator=g, dtype=D64, requires_grad=True)
    b_dec = torch.randn(d_in, generator=g, dtype=D64, requires_grad=True)

    def gathered(x, W_enc, b_enc, b_dec):
        return gather_preacts(encoder_preacts(x, W_enc, b_enc, b_dec), indices, x, W_enc, b_enc, b_dec)

    assert torch.autograd.gradcheck(gathered, (x, W_enc, b_enc, b_dec))
    assert torch.autograd.gradcheck(
        lambda x, W, b: gather_preacts(encoder_preacts(x, W, b), indices, x, W, b), (x, W_enc, b_enc)
    )
    values = torch.randn(n, k, generator=g, dtype=D64, requires_grad=True)
    W_dec = torch.randn(d_sae, d_in, generator=g, dtype=D64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, W: sparse_decode(v, indices, W), (values, W_dec))


@pytest.mark.parametrize("d_sae", [50, 2**16 + 7])  # 16-bit radix sort of the latents, and torch's sort beyond
def test_layout_scatter_outer_and_gather_rows_dot_against_loops(d_sae):
    g = torch.Generator().manual_seed(3)
    n, k, d = 9, 4, 3  # most latents unused: empty runs in the layout
    indices = torch.rand(n, d_sae, generator=g).argsort(1)[:, :k]
    weights = torch.randn(n, k, generator=g, dtype=D64)
    rows = torch.randn(n, d, generator=g, dtype=D64)
    expected = torch.zeros(d_sae, d, dtype=D64)
    for i in range(n):
        for j in range(k):
            expected[indices[i, j]] += weights[i, j] * rows[i]
    layout = CodeLayout(indices, d_sae)
    assert (layout.order.diff() > 0)[indices.reshape(-1)[layout.order].diff() == 0].all()  # stable: pairs in order
    assert (layout.scatter_outer(weights, rows) - expected).abs().max() < 1e-12
    table = torch.randn(d_sae, d, generator=g, dtype=D64)
    dots = torch.tensor([[float(table[indices[i, j]] @ rows[i]) for j in range(k)] for i in range(n)], dtype=D64)
    assert (gather_rows_dot(indices, table, rows) - dots).abs().max() < 1e-12
    dense = densify(weights, indices, d_sae)
    assert dense.shape == (n, d_sae) and (dense.gather(1, indices) == weights).all() and (dense != 0).sum() == n * k


def test_layout_built_for_other_indices_is_refused():
    indices = torch.randint(0, 20, (5, 3))
    layout = CodeLayout(indices, 20)
    values = torch.randn(5, 4, requires_grad=True)
    W_dec = torch.randn(20, 6, requires_grad=True)
    out = sparse_decode(values, torch.randint(0, 20, (5, 4)), W_dec, layout)
    with pytest.raises(ValueError, match="CodeLayout built for indices"):
        out.sum().backward()


class DenseCodeWatcher(TorchDispatchMode):
    """Records every dense tensor an op produces with at least `limit` elements."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit, self.seen = limit, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.layout == torch.strided and t.numel() >= self.limit:
                self.seen.append((str(func), tuple(t.shape)))
        return out


def test_decoder_and_backward_never_form_a_dense_code():
    x, W_enc, b_enc, b_dec, W_dec, _ = random_problem(n=64, d_in=4, d_sae=256, seed=4)
    pre = encoder_preacts(x, W_enc, b_enc, b_dec)  # the one dense [n, d_sae] product, by design
    indices = pre.topk(4, dim=1, sorted=False).indices
    watcher = DenseCodeWatcher(limit=64 * 256 // 4)  # a quarter of the dense code; weights are 256 x 4
    with watcher:
        layout = CodeLayout(indices, 256)
        values = F.relu(gather_preacts(pre, indices, x, W_enc, b_enc, b_dec, layout))
        out = sparse_decode(values, indices, W_dec, layout) + b_dec
        out.pow(2).sum().backward()
    assert W_enc.grad is not None and W_dec.grad is not None and b_dec.grad is not None
    assert watcher.seen == [], watcher.seen
    # The watcher does see a dense code where one is formed:
    with watcher:
        densify(values.detach(), indices, 256)
    assert watcher.seen


def test_autocast_and_half_precision_give_gradients_in_the_parameters_dtype():
    x, W_enc, b_enc, b_dec, W_dec, _ = random_problem(n=40, d_in=8, d_sae=64, seed=5)
    params32 = [t.detach().float().requires_grad_() for t in (W_enc, b_enc, b_dec, W_dec)]
    x32 = x.detach().float()
    reference = torch.autograd.grad(sparse_topk_sae(x32, *params32[:3], params32[3], k=4).pow(2).sum(), params32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sparse_topk_sae(x32, *params32[:3], params32[3], k=4)
    grads = torch.autograd.grad(out.float().pow(2).sum(), params32)
    for g, ref in zip(grads, reference):  # bf16 pre-activations may pick a different latent here and there
        assert g.dtype == torch.float32 and F.cosine_similarity(g.flatten(), ref.flatten(), dim=0) > 0.97
    params16 = [t.detach().bfloat16().requires_grad_() for t in params32]
    grads16 = torch.autograd.grad(sparse_topk_sae(x32.bfloat16(), *params16, k=4).float().pow(2).sum(), params16)
    assert all(g.dtype == torch.bfloat16 for g in grads16)


@pytest.mark.parametrize("with_b_dec", [True, False])
def test_encoder_preacts_against_float64_formula(with_b_dec):
    g = torch.Generator().manual_seed(21)
    x, W_enc = torch.randn(33, 17, generator=g), torch.randn(17, 70, generator=g)
    b_enc, b_dec = torch.randn(70, generator=g), torch.randn(17, generator=g)
    got = encoder_preacts(x, W_enc, b_enc, b_dec if with_b_dec else None)
    x_in = x.double() - b_dec.double() if with_b_dec else x.double()
    expected = x_in @ W_enc.double() + b_enc.double()
    assert got.shape == (33, 70) and got.dtype == torch.float32
    assert (got.double() - expected).abs().max() < 1e-4
    assert not got.requires_grad


def test_values_chosen_by_bfloat16_preacts_are_computed_in_the_weights_dtype():
    """A bfloat16 selection product only picks latents: the gathered values and every gradient equal
    the float64 formula at those latents, as if the pre-activations had been exact."""
    x, W_enc, b_enc, b_dec, W_dec, g = random_problem(n=40, d_in=24, d_sae=300, seed=8)
    inputs = (x, W_enc, b_enc, b_dec, W_dec)
    pre16 = encoder_preacts(x, W_enc, b_enc, b_dec, dtype=torch.bfloat16)
    assert pre16.dtype == torch.bfloat16
    exact = (x - b_dec) @ W_enc + b_enc
    assert (pre16.double() - exact).abs().max() < 0.05 * exact.abs().max()  # 8 significant bits
    indices = pre16.topk(6, dim=1).indices
    values = gather_preacts(pre16, indices, x, W_enc, b_enc, b_dec)
    assert values.dtype == D64
    assert (values - exact.gather(1, indices)).abs().max() < 1e-12
    upstream = torch.randn(x.shape, generator=g, dtype=D64)
    out = sparse_decode(F.relu(values), indices, W_dec) + b_dec
    reference = torch.zeros_like(exact).scatter(1, indices, F.relu(exact.gather(1, indices))) @ W_dec + b_dec
    grads = torch.autograd.grad((out * upstream).sum(), inputs)
    grads_ref = torch.autograd.grad((reference * upstream).sum(), inputs)
    for name, a, b in zip(["x", "W_enc", "b_enc", "b_dec", "W_dec"], grads, grads_ref):
        assert (a - b).abs().max() < 1e-10, name
        assert b.abs().max() > 0, name
