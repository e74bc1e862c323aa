"""The data structures of the streaming pass: deterministic hash keys, ranks within groups, the K
best entries per group (`BestPerGroup`), and exact pair counts and sums (`PairTotals`)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

HASH_PRIME = 2**31 - 1


def hash_keys(x: Tensor) -> Tensor:
    """Deterministic pseudo-random keys in [0, 2^31 - 1) for non-negative int64 `x` < 2^62.

    Multiply-mod-prime rounds with xor-shifts; every product stays below 2^63."""
    p = HASH_PRIME
    lo, hi = x & 0x7FFFFFFF, x >> 31
    h = (lo * 1_103_515_245 + hi * 1_664_525_013 + 12_345) % p
    h = h ^ (h >> 13)
    h = (h * 2_147_483_629 + 97) % p
    h = h ^ (h >> 11)
    return (h * 1_405_695_061 + 2_891_336_453) % p


def order_keys(scores: Tensor, *, largest: bool) -> Tensor:
    """int64 keys in [0, 2^32) that sort (ascending) like `scores` best first: int64 scores in
    [0, 2^31) as they are (smallest best) or float scores >= 0 (largest best) by their float32 bit
    pattern, which orders non-negative floats like their values."""
    if scores.is_floating_point():
        if not largest:
            raise ValueError("float scores are ranked largest first")
        bits = scores.float().clamp_min(0).view(torch.int32).long()  # monotone in the value
        return (2**31 - 1) - bits
    if largest:
        raise ValueError("integer scores are ranked smallest first")
    return scores.long()


def rank_in_group(groups: Tensor, scores: Tensor, *, largest: bool) -> Tensor:
    """Rank [n] of each entry among the entries of its group, best score first (0 = best).

    `groups` in [0, 2^31); `scores` as `order_keys` takes them. One sort of group * 2^32 + key;
    entries with equal keys in a group get distinct ranks in an arbitrary order."""
    n = groups.numel()
    if n == 0:
        return torch.zeros(0, dtype=torch.long)
    order = torch.argsort(groups.long() * 2**32 + order_keys(scores, largest=largest))
    sorted_groups = groups[order]
    positions = torch.arange(n)
    starts = torch.ones(n, dtype=torch.bool)
    starts[1:] = sorted_groups[1:] != sorted_groups[:-1]
    first = torch.cummax(torch.where(starts, positions, 0), dim=0).values
    ranks = torch.empty(n, dtype=torch.long)
    ranks[order] = positions - first
    return ranks


def top_per_row(rows: Tensor, scores: Tensor, k: int, n_rows: int) -> tuple[Tensor, Tensor]:
    """Entries ranked within their row (largest score >= 0 first): (entry index [n_rows, k], -1 where
    the row has fewer entries; a valid mask of the same shape)."""
    ranks = rank_in_group(rows, scores.float(), largest=True)
    keep = ranks < k
    table = torch.full((n_rows, k), -1, dtype=torch.long)
    table[rows[keep], ranks[keep]] = torch.nonzero(keep).squeeze(1)
    return table, table >= 0


class BestPerGroup:
    """The K best entries of each of G groups, best first, each with payload fields.

    `scores` [G, K] (largest first, or smallest first when `largest=False`; `empty` marks a free slot);
    `fields[name]` [G, K, ...]. `offer` merges candidates with torch.topk over [kept ∪ new] for the
    groups it touches.
    """

    def __init__(
        self,
        groups: int,
        k: int,
        score_dtype: torch.dtype,
        empty: float | int,
        largest: bool,
        fields: dict[str, tuple[tuple[int, ...], torch.dtype, float | int]],
    ):
        self.k, self.largest, self.empty = k, largest, empty
        self.scores = torch.full((groups, k), empty, dtype=score_dtype)
        self.fields = {
            name: torch.full((groups, k, *shape), fill, dtype=dtype) for name, (shape, dtype, fill) in fields.items()
        }
        self.fills = {name: fill for name, (_, _, fill) in fields.items()}

    def threshold(self, groups: Tensor) -> Tensor:
        """Score a candidate in each group must beat: the K-th kept score (`empty` while not full)."""
        return self.scores[groups, -1]

    def offer(self, groups: Tensor, scores: Tensor, payload: Callable[[Tensor], dict[str, Tensor]]) -> None:
        """Candidates: group [n], score [n]; `payload(index)` gives their fields for the chosen indices."""
        better = scores > self.threshold(groups) if self.largest else scores < self.threshold(groups)
        index = torch.nonzero(better).squeeze(1)
        if index.numel() == 0:
            return
        ranks = rank_in_group(groups[index], scores[index], largest=self.largest)
        index, ranks = index[ranks < self.k], ranks[ranks < self.k]
        touched, slot_of = torch.unique(groups[index], return_inverse=True)
        new_scores = torch.full((len(touched), self.k), self.empty, dtype=self.scores.dtype)
        new_scores[slot_of, ranks] = scores[index].to(self.scores.dtype)
        merged_scores = torch.cat([self.scores[touched], new_scores], dim=1)
        best = merged_scores.topk(self.k, dim=1, largest=self.largest, sorted=True).indices  # [t, K]
        self.scores[touched] = merged_scores.gather(1, best)
        new_fields = payload(index)
        rows = torch.arange(len(touched))[:, None]
        for name, table in self.fields.items():
            block = torch.full((len(touched), self.k, *table.shape[2:]), self.fills[name], dtype=table.dtype)
            block[slot_of, ranks] = new_fields[name].to(table.dtype)
            merged = torch.cat([table[touched], block], dim=1)
            table[touched] = merged[rows, best]


class PairTotals:
    """Exact count (and weight sum) per (row, col) pair.

    Dense [rows, cols] tables when rows * cols <= dense_limit. Otherwise a sparse table of sorted
    pair keys row * cols + col, with new pairs buffered and coalesced (torch.unique) once the buffer
    outgrows the table; a table above `max_pairs` is pruned to each row's pairs with the largest
    sums (counts when unweighted), after which `exact` is False.
    """

    def __init__(self, rows: int, cols: int, *, weighted: bool, dense_limit: int, max_pairs: int):
        self.rows, self.cols, self.weighted, self.max_pairs = rows, cols, weighted, max_pairs
        self.exact = True
        self.dense = rows * cols <= dense_limit
        if self.dense:
            self.counts = torch.zeros(rows * cols, dtype=torch.int32)
            self.sums = torch.zeros(rows * cols, dtype=torch.float32) if weighted else None
        else:
            self.keys = torch.zeros(0, dtype=torch.long)
            self.counts = torch.zeros(0, dtype=torch.long)
            self.sums = torch.zeros(0, dtype=torch.float64) if weighted else None
            self._buffer: list[tuple[Tensor, Tensor | None]] = []
            self._buffered = 0

    def add(self, rows: Tensor, cols: Tensor, weights: Tensor | None = None) -> None:
        keys = rows.long() * self.cols + cols.long()
        if self.dense:
            self.counts.index_add_(0, keys, torch.ones_like(keys, dtype=torch.int32))
            if self.sums is not None:
                self.sums.index_add_(0, keys, weights.float())
            return
        self._buffer.append((keys, weights.double() if self.weighted else None))
        self._buffered += keys.numel()
        if self._buffered >= max(self.keys.numel(), 1 << 22):
            self._coalesce()

    def _coalesce(self) -> None:
        if not self._buffer:
            return
        keys = torch.cat([self.keys] + [k for k, _ in self._buffer])
        counts = torch.cat([self.counts] + [torch.ones_like(k) for k, _ in self._buffer])
        unique, inverse = torch.unique(keys, sorted=True, return_inverse=True)
        self.counts = torch.zeros(len(unique), dtype=torch.long).index_add_(0, inverse, counts)
        if self.sums is not None:
            sums = torch.cat([self.sums] + [w for _, w in self._buffer])
            self.sums = torch.zeros(len(unique), dtype=torch.float64).index_add_(0, inverse, sums)
        self.keys = unique
        self._buffer, self._buffered = [], 0
        if len(self.keys) > self.max_pairs:
            per_row = max(1, self.max_pairs // (2 * self.rows))
            rows = self.keys // self.cols
            score = self.sums if self.sums is not None else self.counts.double()
            table, valid = top_per_row(rows, score, per_row, self.rows)
            keep = torch.sort(table[valid]).values
            self.keys, self.counts = self.keys[keep], self.counts[keep]
            if self.sums is not None:
                self.sums = self.sums[keep]
            self.exact = False

    def entries(self) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """(rows, cols, counts int64, sums float64 or None) of every pair seen."""
        if self.dense:
            keys = torch.nonzero(self.counts).squeeze(1)
            counts = self.counts[keys].long()
            sums = self.sums[keys].double() if self.sums is not None else None
        else:
            self._coalesce()
            keys, counts, sums = self.keys, self.counts, self.sums
        return keys // self.cols, keys % self.cols, counts, sums
