"""Exact per-row top-k selection on CPU for an SAE's wide rows and small k.

`torch.topk` on CPU runs a general selection over every element of every row, which can cost more
than the encoder matmul that produced the pre-activations. An SAE's rows are wide (d_sae) and k is
small, so most elements can be ruled out cheaply. For each row, while it sits in the L1 cache:

1. split the row into G = 4k strided groups (group g holds columns g, g + G, g + 2G, ...) and
   take every group's maximum: G-wide element-wise maxima of consecutive slices, which compile
   to vector instructions;
2. t = the k-th largest group maximum. Those k maxima are k distinct elements >= t, so every
   element of the row's top k is >= t, and only groups whose maximum is >= t can hold one;
3. collect the elements >= t of those groups (typically k to 2k of them) and move the k largest
   to the front by quickselect.

The kernel is compiled by numba and runs without the GIL on row ranges split across threads; where
numba is not installed (it can lag a new Python release), every call goes to `torch.topk`. The
result is exact: the same values as `torch.topk` (among equal values the chosen indices may
differ, as they may between torch's own kernels). Anything the kernel does not cover (CUDA
tensors, dtypes other than float32/float64/bfloat16, rows narrower than 4k) goes to `torch.topk`.
bfloat16 rows (pre-activations that only pick latents, `sae.kernels.encoder_preacts(dtype=...)`)
are widened to float32 one row at a time, which is exact.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

try:
    import numba
except ImportError:
    numba = None  # the kernels below stay plain Python and are never called: torch.topk serves


def _compiled(**options):
    """numba.njit(**options) where numba is installed, else the function as it is."""
    return numba.njit(nogil=True, cache=True, **options) if numba is not None else (lambda function: function)


GROUPS_PER_K = 4  # groups per row as a multiple of k: more groups, fewer candidates to collect
_MIN_ROWS_PER_THREAD = 64


@_compiled(inline="always")
def _elementwise_max(acc: np.ndarray, has_nan: np.ndarray, values: np.ndarray) -> None:
    """acc[i] = max(acc[i], values[i]); has_nan[i] |= values[i] is NaN (vectorised; NaN never wins the max)."""
    for i in range(values.shape[0]):
        v = values[i]
        acc[i] = v if v > acc[i] else acc[i]
        has_nan[i] |= v != v


@_compiled()
def _move_largest_first(values: np.ndarray, columns: np.ndarray, count: int, k: int) -> None:
    """Quickselect: reorder values[:count] (and columns alongside) so its k largest come first."""
    lo, hi = 0, count - 1
    while lo < hi:
        pivot = values[(lo + hi) // 2]
        i, j = lo, hi
        while i <= j:
            while values[i] > pivot:
                i += 1
            while values[j] < pivot:
                j -= 1
            if i <= j:
                values[i], values[j] = values[j], values[i]
                columns[i], columns[j] = columns[j], columns[i]
                i += 1
                j -= 1
        if k - 1 <= j:
            hi = j
        elif k - 1 >= i:
            lo = i
        else:
            break


@_compiled(inline="always")
def _select_row(row, groups, out_row, maxima, nan_in_group, ranked, group_ids, values, columns) -> bool:
    """out_row = columns of the k = out_row.shape[0] largest entries of row [d]; returns whether the
    row holds NaN (its selection is then meaningless). The other arrays are scratch space."""
    d, k = row.shape[0], out_row.shape[0]
    full = d // groups  # complete slices of `groups` columns; the rest joins the first groups
    tail = d - full * groups
    maxima[:] = -np.inf
    nan_in_group[:] = False
    for s in range(full):
        _elementwise_max(maxima, nan_in_group, row[s * groups : (s + 1) * groups])
    if tail:
        _elementwise_max(maxima[:tail], nan_in_group[:tail], row[full * groups :])
    for g in range(groups):
        ranked[g] = maxima[g]
        group_ids[g] = g
    _move_largest_first(ranked, group_ids, groups, k)
    threshold = ranked[0]  # the k-th largest group maximum: the smallest of the first k
    for g in range(1, k):
        threshold = min(threshold, ranked[g])
    count = 0
    for g in range(groups):  # every group that can hold an element >= threshold
        if maxima[g] >= threshold:
            for j in range(g, d, groups):
                if row[j] >= threshold:
                    values[count] = row[j]
                    columns[count] = j
                    count += 1
    if count > k:
        _move_largest_first(values, columns, count, k)
    out_row[:] = columns[:k]
    return nan_in_group.any()


@_compiled()
def _topk_rows(pre: np.ndarray, groups: int, out: np.ndarray, has_nan: np.ndarray, start: int, stop: int) -> None:
    """out[i] = columns of the k = out.shape[1] largest entries of pre[i] (float32 or float64), for
    rows start..stop-1; has_nan[i] = whether the row holds NaN."""
    d = pre.shape[1]
    maxima, ranked = np.empty(groups, pre.dtype), np.empty(groups, pre.dtype)
    nan_in_group, group_ids = np.empty(groups, np.bool_), np.empty(groups, np.int64)
    values, columns = np.empty(d, pre.dtype), np.empty(d, np.int64)
    for i in range(start, stop):
        has_nan[i] = _select_row(pre[i], groups, out[i], maxima, nan_in_group, ranked, group_ids, values, columns)


@_compiled()
def _topk_rows_bfloat16(
    bits: np.ndarray, groups: int, out: np.ndarray, has_nan: np.ndarray, start: int, stop: int
) -> None:
    """_topk_rows for bfloat16 rows given as their uint16 bit patterns: each row is widened to
    float32 (the bits shifted into the high half, exact) in an L1-sized buffer, then selected."""
    d = bits.shape[1]
    widened = np.empty(d, np.uint32)
    row = widened.view(np.float32)
    maxima, ranked = np.empty(groups, np.float32), np.empty(groups, np.float32)
    nan_in_group, group_ids = np.empty(groups, np.bool_), np.empty(groups, np.int64)
    values, columns = np.empty(d, np.float32), np.empty(d, np.int64)
    for i in range(start, stop):
        source = bits[i]
        for j in range(d):
            widened[j] = np.uint32(source[j]) << 16
        has_nan[i] = _select_row(row, groups, out[i], maxima, nan_in_group, ranked, group_ids, values, columns)


_pool: ThreadPoolExecutor | None = None


def _thread_pool(workers: int) -> ThreadPoolExecutor:
    global _pool
    if _pool is None or _pool._max_workers < workers:
        _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="topk")
    return _pool


def kernel_applies(pre: Tensor, k: int) -> bool:
    """Whether `topk_indices` runs the group kernel on pre [n, d] (else it calls torch.topk)."""
    return (
        numba is not None
        and pre.device.type == "cpu"
        and pre.dtype in (torch.float32, torch.float64, torch.bfloat16)
        and pre.ndim == 2
        and pre.shape[1] >= GROUPS_PER_K * k
    )


def topk_indices(pre: Tensor, k: int, threads: int | None = None) -> Tensor:
    """Column indices [n, k] (int64, in no particular order) of the k largest entries of each row of
    pre [n, d]. threads: default torch.get_num_threads(). A row holding NaN raises ValueError naming it."""
    if not 0 < k <= pre.shape[-1]:
        raise ValueError(f"k must be in 1..{pre.shape[-1]} (the row width), got {k}")
    if not kernel_applies(pre, k):
        return pre.topk(k, dim=-1, sorted=False).indices
    pre = pre.detach().contiguous()
    n, d = pre.shape
    if pre.dtype == torch.bfloat16:  # numpy has no bfloat16: the kernel reads the bit patterns
        kernel, array = _topk_rows_bfloat16, pre.view(torch.int16).numpy().view(np.uint16)
    else:
        kernel, array = _topk_rows, pre.numpy()
    out = np.empty((n, k), dtype=np.int64)
    has_nan = np.empty(n, dtype=np.bool_)
    groups = GROUPS_PER_K * k
    workers = max(1, min(threads or torch.get_num_threads(), n // _MIN_ROWS_PER_THREAD))
    if workers == 1:
        kernel(array, groups, out, has_nan, 0, n)
    else:
        step = math.ceil(n / workers)
        jobs = [
            _thread_pool(workers).submit(kernel, array, groups, out, has_nan, s, min(s + step, n))
            for s in range(0, n, step)
        ]
        for job in jobs:
            job.result()
    if has_nan.any():
        rows = np.flatnonzero(has_nan)
        raise ValueError(
            f"top-k selection: row {int(rows[0])} of the [{n}, {d}] pre-activations holds NaN "
            f"({rows.size} such rows); check the inputs and the SAE's weights for NaN"
        )
    return torch.from_numpy(out)
