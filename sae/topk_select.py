"""Exact per-row top-k selection on CPU for an SAE's wide rows and small k.

`torch.topk` on CPU runs a general selection over every element of every row (about 5 ns per
element on a 2-core Xeon: 40-70 ms for a [4096, 4096] batch of pre-activations, more than the
encoder matmul that produced it). An SAE's rows are wide (d_sae) and k is small, so most elements
can be ruled out by one vectorised pass:

1. cut each row into C = about 4k chunks of s contiguous elements and take every chunk's
   maximum (`torch.amax`, vectorised);
2. t = the k-th largest chunk maximum. Those k maxima are k distinct elements >= t, so every
   element of the row's top k is >= t, and only chunks whose maximum is >= t can hold one;
3. collect the elements >= t of those chunks (typically k to 2k of them) and move the k largest
   to the front by quickselect.

Steps 2-3 are a compiled kernel (numba) that runs without the GIL on row ranges split across
threads. The result is exact: the same values as `torch.topk` (among equal values the chosen
indices may differ, as they may between torch's own kernels). Anything the kernel does not
cover (CUDA tensors, dtypes other than float32/float64, rows narrower than 4k) goes to
`torch.topk`.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import torch
from torch import Tensor

CHUNKS_PER_K = 4  # chunks per row as a multiple of k: more chunks, fewer candidates to collect
MIN_CHUNK = 32
_MIN_ROWS_PER_THREAD = 64


@numba.njit(nogil=True, cache=True)
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


@numba.njit(nogil=True, cache=True)
def _topk_rows(pre: np.ndarray, maxima: np.ndarray, chunk: int, out: np.ndarray, start: int, stop: int) -> None:
    """out[i] = columns of the k = out.shape[1] largest entries of pre[i] for rows start..stop-1,
    given maxima[i, c] = max(pre[i, c * chunk : (c + 1) * chunk]) (the last chunk runs to the end of
    the row). Rows must be free of NaN."""
    d, n_chunks, k = pre.shape[1], maxima.shape[1], out.shape[1]
    chunk_ids = np.empty(n_chunks, np.int64)
    chunk_max = np.empty(n_chunks, pre.dtype)
    values = np.empty(d, pre.dtype)
    columns = np.empty(d, np.int64)
    for i in range(start, stop):
        for c in range(n_chunks):
            chunk_max[c] = maxima[i, c]
            chunk_ids[c] = c
        _move_largest_first(chunk_max, chunk_ids, n_chunks, k)
        threshold = chunk_max[0]  # the k-th largest chunk maximum: the smallest of the first k
        for c in range(1, k):
            threshold = min(threshold, chunk_max[c])
        count = 0
        for c in range(n_chunks):  # every chunk that can hold an element >= threshold
            if maxima[i, c] >= threshold:
                for j in range(c * chunk, d if c == n_chunks - 1 else c * chunk + chunk):
                    if pre[i, j] >= threshold:
                        values[count] = pre[i, j]
                        columns[count] = j
                        count += 1
        if count > k:
            _move_largest_first(values, columns, count, k)
        out[i, :] = columns[:k]


_pool: ThreadPoolExecutor | None = None


def _thread_pool(workers: int) -> ThreadPoolExecutor:
    global _pool
    if _pool is None or _pool._max_workers < workers:
        _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="topk")
    return _pool


def kernel_applies(pre: Tensor, k: int) -> bool:
    """Whether `topk_indices` runs the chunk kernel on pre [n, d] (else it calls torch.topk)."""
    return (
        pre.device.type == "cpu"
        and pre.dtype in (torch.float32, torch.float64)
        and pre.ndim == 2
        and pre.shape[1] >= CHUNKS_PER_K * k
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
    # about CHUNKS_PER_K * k chunks, but at least 32 elements each where the row allows (torch's
    # maximum over a shorter innermost dimension is several times slower per element)
    chunk = min(d // k, max(MIN_CHUNK, d // (CHUNKS_PER_K * k)))
    n_chunks = d // chunk
    maxima = pre[:, : n_chunks * chunk].view(n, n_chunks, chunk).amax(2)
    if n_chunks * chunk < d:  # the tail joins the last chunk
        maxima[:, -1] = torch.maximum(maxima[:, -1], pre[:, n_chunks * chunk - chunk:].amax(1))
    nan_rows = maxima.isnan().any(1).nonzero() if not torch.isfinite(maxima.sum()) else []
    if len(nan_rows):
        raise ValueError(f"top-k selection: row {int(nan_rows[0])} of the [{n}, {d}] pre-activations holds NaN "
                         f"({len(nan_rows)} such rows); check the inputs and the SAE's weights for NaN")
    array, maxima_array = pre.numpy(), maxima.numpy()
    out = np.empty((n, k), dtype=np.int64)
    workers = max(1, min(threads or torch.get_num_threads(), n // _MIN_ROWS_PER_THREAD))
    if workers == 1:
        _topk_rows(array, maxima_array, chunk, out, 0, n)
    else:
        step = math.ceil(n / workers)
        jobs = [_thread_pool(workers).submit(_topk_rows, array, maxima_array, chunk, out, s, min(s + step, n))
                for s in range(0, n, step)]
        for job in jobs:
            job.result()
    return torch.from_numpy(out)
