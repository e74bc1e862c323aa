"""Sparse TopK kernels: encoder gradients and decoder work touch only the k active latents per token.

A TopK SAE keeps k of d_sae latents per token. Plain autograd pays for the dense [n, d_sae]
code four more times after the encoder matmul (decoder forward, two decoder backward products,
the encoder weight gradient), each 2 * n * d_sae * d_in FLOPs. Here the only dense [n, d_sae]
product is the encoder's forward pre-activations (computed without autograd); everything else
costs O(n * k * d_in):

- `gather_preacts`: values = pre_acts[i, indices[i, j]]; its backward scatters the [n, k]
  gradient straight into W_enc / b_enc / b_dec (and x when asked).
- `sparse_decode`: x_hat[i] = sum_j values[i, j] * W_dec[indices[i, j]] (`embedding_bag`);
  its backward gives the [n, k] value gradient by a sampled product (only the n * k needed dot
  products of grad_out with decoder rows) and W_dec's gradient by a latent-major segment sum.

Both weight gradients are "for each latent l, sum over the (token, slot) pairs that chose l";
`CodeLayout` sorts the pairs by latent once per batch and both backward passes reuse it.

Shapes: x [n, d_in], W_enc [d_in, d_sae], W_dec [d_sae, d_in], values/indices [n, k].
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


class CodeLayout:
    """The [n, k] latent choices of a batch, grouped by latent (a CSR view of the transposed code).

    order [n*k]: positions of the flattened choices sorted by latent; tokens [n*k]: the token of
    each sorted choice; offsets [d_sae]: where each latent's run starts (empty runs allowed).
    """

    def __init__(self, indices: Tensor, d_sae: int):
        self.shape = tuple(indices.shape)
        self.d_sae = d_sae
        flat = indices.reshape(-1)
        if flat.device.type == "cpu" and d_sae <= 2**16:  # numpy's stable sort of 16-bit keys is a radix sort
            self.order = torch.from_numpy(np.argsort(flat.numpy().astype(np.uint16), kind="stable"))
        else:
            self.order = torch.argsort(flat)
        k = indices.shape[1]
        power_of_two = k & (k - 1) == 0
        self.tokens = self.order >> (k.bit_length() - 1) if power_of_two else self.order // k
        counts = torch.bincount(flat, minlength=d_sae)
        self.offsets = torch.cumsum(counts, 0) - counts

    def scatter_outer(self, weights: Tensor, rows: Tensor) -> Tensor:
        """out[l] = sum over (i, j) with indices[i, j] = l of weights[i, j] * rows[i] -> [d_sae, d].

        weights [n, k], rows [n, d]; never forms an [n, d_sae] matrix.
        """
        return F.embedding_bag(
            self.tokens,
            rows,
            offsets=self.offsets,
            per_sample_weights=weights.reshape(-1).index_select(0, self.order),
            mode="sum",
        )


def _layout(indices: Tensor, d_sae: int, layout: CodeLayout | None) -> CodeLayout:
    if layout is None:
        return CodeLayout(indices, d_sae)
    if layout.shape != tuple(indices.shape) or layout.d_sae != d_sae:
        raise ValueError(
            f"CodeLayout built for indices {layout.shape}, d_sae {layout.d_sae}; got {tuple(indices.shape)}, {d_sae}"
        )
    return layout


def gather_rows_dot(indices: Tensor, table: Tensor, vectors: Tensor, sort_columns: bool | None = None) -> Tensor:
    """out[i, j] = table[indices[i, j]] . vectors[i]; indices [n, k], table [m, d], vectors [n, d] -> [n, k].

    A sampled dense-dense product: only the n * k requested dot products are computed.
    sort_columns (default: on CUDA) sorts each row's indices first and puts the results back in the
    given order: cuSPARSE takes the column indices of a CSR row to be sorted.
    """
    n, k = indices.shape
    order = None
    if indices.is_cuda if sort_columns is None else sort_columns:
        indices, order = indices.sort(dim=1)
    dtype = vectors.dtype
    if dtype not in (torch.float32, torch.float64):  # the sampled product has no half-precision kernel
        table, vectors = table.float(), vectors.float()
    crow = torch.arange(0, n * k + 1, k, device=indices.device, dtype=torch.int64)
    zeros = torch.zeros(n * k, dtype=vectors.dtype, device=vectors.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        pattern = torch.sparse_csr_tensor(
            crow, indices.reshape(-1), zeros, size=(n, table.shape[0]), check_invariants=False
        )
        dots = torch.sparse.sampled_addmm(pattern, vectors, table.t(), beta=0.0).values().view(n, k)
    if order is not None:
        dots = torch.empty_like(dots).scatter_(1, order, dots)
    return dots.to(dtype)


class _GatherPreacts(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre_acts, indices, x, W_enc, b_enc, b_dec, layout):  # type: ignore[override]
        ctx.save_for_backward(indices, x, W_enc, b_dec)
        ctx.layout = layout
        if pre_acts.dtype == W_enc.dtype:
            return pre_acts.gather(1, indices)
        # Pre-activations in a lower precision (autocast, or a bfloat16 selection product) only chose the
        # latents; their values are computed again in the weights' dtype, n * k dot products.
        with torch.autocast(x.device.type, enabled=False):
            x_in = (x - b_dec if b_dec is not None else x).to(W_enc.dtype)
            return gather_rows_dot(indices, W_enc.t(), x_in) + b_enc.to(W_enc.dtype)[indices]

    @staticmethod
    def backward(ctx, grad_values):  # type: ignore[override]
        indices, x, W_enc, b_dec = ctx.saved_tensors
        d_sae, dtype = W_enc.shape[1], W_enc.dtype  # gradients are computed in the weights' dtype
        grad_values = grad_values.to(dtype).contiguous()
        grad_x = grad_W_enc = grad_b_enc = grad_b_dec = None
        need_x, need_W, need_b_enc, need_b_dec = ctx.needs_input_grad[2:6]
        if need_b_enc or need_b_dec:
            grad_b_enc = torch.zeros(d_sae, dtype=dtype, device=grad_values.device)
            grad_b_enc.index_add_(0, indices.reshape(-1), grad_values.reshape(-1))
        if need_x:
            grad_x = F.embedding_bag(indices, W_enc.t().contiguous(), per_sample_weights=grad_values, mode="sum")
            grad_x = grad_x.to(x.dtype)
        if need_W:
            x_in = (x - b_dec if b_dec is not None else x).to(dtype)
            layout = _layout(indices, d_sae, ctx.layout)
            grad_W_enc = layout.scatter_outer(grad_values, x_in).t()
        if need_b_dec:
            grad_b_dec = -(W_enc @ grad_b_enc).to(b_dec.dtype)  # = -sum_i grad_x[i]: x_in = x - b_dec for every token
        return None, None, grad_x, grad_W_enc, grad_b_enc if need_b_enc else None, grad_b_dec, None


def encoder_preacts(
    x: Tensor, W_enc: Tensor, b_enc: Tensor, b_dec: Tensor | None = None, dtype: torch.dtype | None = None
) -> Tensor:
    """Dense pre-activations (x - b_dec) @ W_enc + b_enc, [n, d_sae], computed without autograd.

    One plain product [x - b_dec, 1] @ [W_enc; b_enc] (the bias as an extra input row): `addmm`
    on CPU first copies the broadcast bias into the [n, d_sae] output (and its result once more),
    two extra passes over the largest tensor of the step.

    dtype (default: x's): the dtype both factors are rounded to and the product returned in. A
    bfloat16 product runs about twice as fast where the hardware multiplies bfloat16 natively; its
    pre-activations (8 significant bits) are for choosing latents, and `gather_preacts` then
    computes the chosen values in the weights' dtype.
    """
    with torch.no_grad():
        n, d_in = x.shape
        x_in = torch.empty(n, d_in + 1, dtype=dtype or x.dtype, device=x.device)
        if b_dec is not None:
            torch.sub(x, b_dec, out=x_in[:, :d_in])
        else:
            x_in[:, :d_in] = x
        x_in[:, d_in] = 1
        return x_in @ torch.cat([W_enc, b_enc[None]]).to(x_in.dtype)


def gather_preacts(
    pre_acts: Tensor,
    indices: Tensor,
    x: Tensor,
    W_enc: Tensor,
    b_enc: Tensor,
    b_dec: Tensor | None = None,
    layout: CodeLayout | None = None,
) -> Tensor:
    """pre_acts.gather(1, indices) [n, k], differentiable w.r.t. x, W_enc, b_enc and b_dec.

    pre_acts must equal `encoder_preacts(x, W_enc, b_enc, b_dec)` (b_dec None: no subtraction), up to
    rounding when they are in a lower precision than W_enc (bfloat16 selection, autocast): the values
    are then computed from x and the weights in W_enc's dtype, not gathered.
    The backward touches only the gathered latents:
    dW_enc[:, l] = sum over (i, j) with indices[i, j] = l of g[i, j] (x_i - b_dec);
    db_enc[l] = the same sum of g[i, j]; db_dec = -W_enc @ db_enc.
    """
    return _GatherPreacts.apply(pre_acts, indices, x, W_enc, b_enc, b_dec, layout)


class _SparseDecode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, values, indices, W_dec, layout):  # type: ignore[override]
        weights = values.to(W_dec.dtype)  # computed in the decoder's dtype (values may be autocast)
        ctx.save_for_backward(weights, indices, W_dec)
        ctx.layout, ctx.values_dtype = layout, values.dtype
        return F.embedding_bag(indices, W_dec, per_sample_weights=weights, mode="sum")

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        weights, indices, W_dec = ctx.saved_tensors
        grad_out = grad_out.to(W_dec.dtype).contiguous()
        grad_values = grad_W_dec = None
        if ctx.needs_input_grad[0]:
            grad_values = gather_rows_dot(indices, W_dec, grad_out).to(ctx.values_dtype)
        if ctx.needs_input_grad[2]:
            grad_W_dec = _layout(indices, W_dec.shape[0], ctx.layout).scatter_outer(weights, grad_out)
        return grad_values, None, grad_W_dec, None


def sparse_decode(values: Tensor, indices: Tensor, W_dec: Tensor, layout: CodeLayout | None = None) -> Tensor:
    """sum_j values[i, j] * W_dec[indices[i, j]] -> [n, d_in] (no decoder bias).

    Differentiable w.r.t. values and W_dec; pass the batch's `CodeLayout` to share its sort with
    `gather_preacts`.
    """
    return _SparseDecode.apply(values, indices, W_dec, layout)


def densify(values: Tensor, indices: Tensor, d_sae: int) -> Tensor:
    """[n, k] values at indices -> dense [n, d_sae] (for inference outputs, not training)."""
    return torch.zeros(values.shape[0], d_sae, dtype=values.dtype, device=values.device).scatter_(1, indices, values)
