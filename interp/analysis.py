"""Feature analysis: one streaming pass over held-out tokens gives every statistic a feature page,
a label or a search needs, saved as an artifact that never needs the model again.

The pass (`FeatureStatistics.update`, once per batch of token windows [B, T]) sees the batch's
dense feature activations f [B, T, F] and updates all F features at once with vectorised ops;
nothing of size [tokens, F] outlives the batch. A feature *fires* on a token when f > 0 (negative
values, e.g. of raw neurons, count as not firing). Tokens that are ignored (BOS by default, and any
chosen token ids) are zeroed before anything is counted and are not in the token count.

Per feature, accumulated over the pass:
- fire count, density (fire count / analysed tokens), mean activation over firings, max;
- a histogram over log-spaced bins shared by all features: bin 0 holds (0, 2^lo), bin b in
  1..n holds [2^(lo + (b-1)/bpo), 2^(lo + b/bpo)), bin n+1 holds [2^hi, inf);
- top examples: the K sequences with the largest per-sequence maximum (one example per sequence),
  each with a token window [max position - left, max position + right] and the feature's
  activation on every token of it; merged per batch by torch.topk over [kept ∪ new];
- interval samples: intervals are octaves [2^c, 2^(c+1)) at and below the octave of the feature's
  running max (interval i is octave top - i). Each keeps the S firings with the smallest hash key
  of (token index, feature): an exact uniform-by-hash sample of all firings in that octave (an
  octave becomes tracked before or at its first firing and is dropped only when the max has
  moved I octaves above it). Each interval's firing count gives its share of all firings;
- activation mass and firing count by token id (`PairSums`, exact while the table fits);
- co-firing counts of feature pairs active on the same token (among each token's strongest
  `cofire_max_active` features), kept as the top features per feature by Jaccard index;
- the number of sequences it fired in, and the share of each top example's sequence it fired on.

From the decoder alone (`decoder_statistics`): nearest features by decoder cosine; logit effects,
the decoder direction taken to the residual stream (through W_out for `mlp.hook_post`), through the
final norm's weight (centred first for LayerNorm) and W_U, with top promoted/suppressed tokens and
a histogram; for SAEs on MLP neurons, the neurons each feature writes to (largest |W_dec|).

Artifact folder (`Analysis.save` / `Analysis.load`):
  analysis.json           format, version, model, hook, SAE, corpus, options, counts, flags
  features.safetensors    every per-feature tensor (see `Analysis.feature` for their meaning)
  vocab.json              {"token_strings": [...]} one readable string per token id
  training.json, training_tensors.safetensors   the model's training record, when it has one
  neurons/                for SAEs on MLP neurons: the same statistics of the raw neurons (interp.neurons)
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

ANALYSIS_FORMAT = "monosemantic-analysis"
ANALYSIS_FORMAT_VERSION = 1
META_FILE = "analysis.json"
TENSORS_FILE = "features.safetensors"
VOCAB_FILE = "vocab.json"
TRAINING_FILES = ("training.json", "training_tensors.safetensors")
NEURONS_DIR = "neurons"  # sub-folder: the MLP neurons analysed as features (same layout), see interp.neurons
NO_CELL = -(2**62)  # top octave of a feature that never fired
KEY_EMPTY = 2**62  # hash key of an empty interval slot (larger than any real key)
HASH_PRIME = 2**31 - 1


@dataclass
class AnalysisConfig:
    """What the pass collects; every field is an `interp analyze` option of the same name."""

    tokens: int = field(default=262_144, metadata={"help": "tokens to analyse (whole context windows, rounded up)"})
    batch_size: int | None = field(
        default=None,
        metadata={"help": "context windows per forward pass (default: about 2^25 feature activations per batch)"},
    )
    top_k: int = field(default=16, metadata={"help": "top-activating examples kept per feature (one per sequence)"})
    window_left: int = field(default=16, metadata={"help": "tokens of context before an example's peak"})
    window_right: int = field(default=4, metadata={"help": "tokens of context after an example's peak"})
    intervals: int = field(default=6, metadata={"help": "activation octaves sampled below each feature's max"})
    interval_samples: int = field(default=4, metadata={"help": "examples kept per octave"})
    bins_per_octave: int = field(default=4, metadata={"help": "activation histogram bins per factor of 2"})
    histogram_low_exp: int = field(default=-20, metadata={"help": "histogram's lowest bin edge, as a power of 2"})
    histogram_high_exp: int = field(default=12, metadata={"help": "histogram's highest bin edge, as a power of 2"})
    top_tokens: int = field(default=32, metadata={"help": "tokens with the most activation mass kept per feature"})
    neighbours: int = field(
        default=16,
        metadata={"help": "nearest / co-firing features, promoted / suppressed tokens and neurons kept per feature"},
    )
    logit_bins: int = field(default=40, metadata={"help": "bins of each feature's logit-effect histogram"})
    cofire_max_active: int = field(
        default=64,
        metadata={
            "help": "co-firing counts use at most this many strongest features per token (0: no co-firing counts)"
        },
    )
    random_sequences: int = field(
        default=64,
        metadata={
            "help": "context windows kept whole with all their feature activations (a random sample for scoring labels)"
        },
    )
    ignore_bos: bool = field(default=True, metadata={"help": "leave BOS tokens out of every statistic"})
    ignore_tokens: list[str] = field(
        default_factory=list, metadata={"help": "token strings (or ids) to leave out, comma separated"}
    )
    dense_pair_limit: int = field(
        default=2**24,
        metadata={"help": "token-mass and co-firing tables are dense up to this many cells, sparse above"},
    )
    max_pairs: int = field(
        default=2**24,
        metadata={
            "help": "a sparse pair table holding more pairs than this is pruned to each feature's strongest (then approximate)"
        },
    )
    seed: int = field(default=0, metadata={"help": "seed of the corpus's document order"})

    def validate(self) -> None:
        for name in (
            "tokens",
            "top_k",
            "intervals",
            "interval_samples",
            "bins_per_octave",
            "top_tokens",
            "neighbours",
            "logit_bins",
            "dense_pair_limit",
            "max_pairs",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"analysis option {name} must be positive, got {getattr(self, name)}.")
        for name in ("window_left", "window_right", "random_sequences", "cofire_max_active"):
            if getattr(self, name) < 0:
                raise ValueError(f"analysis option {name} must be >= 0, got {getattr(self, name)}.")
        if self.batch_size is not None and self.batch_size <= 0:
            raise ValueError(f"analysis option batch_size must be positive, got {self.batch_size}.")
        if self.histogram_high_exp <= self.histogram_low_exp:
            raise ValueError(
                f"histogram_high_exp ({self.histogram_high_exp}) must exceed histogram_low_exp ({self.histogram_low_exp})."
            )

    @property
    def window(self) -> int:
        return self.window_left + 1 + self.window_right

    @property
    def histogram_bins(self) -> int:
        """Bins in all: underflow, the log-spaced ones, overflow."""
        return (self.histogram_high_exp - self.histogram_low_exp) * self.bins_per_octave + 2


def histogram_edges(cfg: AnalysisConfig) -> Tensor:
    """Edges [n_log_bins + 1] of the log-spaced bins 1..n (bin 0 is below edges[0], bin n+1 above edges[-1])."""
    steps = (cfg.histogram_high_exp - cfg.histogram_low_exp) * cfg.bins_per_octave
    exps = cfg.histogram_low_exp + torch.arange(steps + 1, dtype=torch.float64) / cfg.bins_per_octave
    return torch.pow(2.0, exps)


def activation_levels(values: Tensor, bins_per_octave: int) -> Tensor:
    """q = floor(log2(v) * bpo) in float64, int64 [n]: the level that fixes both histogram bin and octave."""
    return torch.floor(values.double().log2() * bins_per_octave).long()


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


class SlotTable:
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


class PairSums:
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


class FeatureStatistics:
    """The streaming accumulator of the pass. `update` once per batch, `result` at the end.

    d_sae: F; vocab_size: V (token ids are < V); context_length: T;
    expected_sequences: how many windows the pass will see (spreads the random-sequence sample);
    ignored_ids: token ids left out (BOS included by the caller when wanted).
    """

    def __init__(
        self,
        d_sae: int,
        vocab_size: int,
        context_length: int,
        cfg: AnalysisConfig,
        *,
        ignored_ids: Iterable[int] = (),
        expected_sequences: int = 1,
    ):
        cfg.validate()
        self.cfg, self.F, self.V, self.T = cfg, d_sae, vocab_size, context_length
        self.ignored = torch.tensor(sorted(set(int(i) for i in ignored_ids)), dtype=torch.long)
        F, W = d_sae, cfg.window
        self.tokens_seen = 0  # analysed (not ignored) tokens
        self.sequences_seen = 0
        self.token_counts = torch.zeros(vocab_size, dtype=torch.long)
        self.fire_count = torch.zeros(F, dtype=torch.long)
        self.act_sum = torch.zeros(F, dtype=torch.float64)
        self.act_max = torch.zeros(F, dtype=torch.float32)
        self.sequences_fired = torch.zeros(F, dtype=torch.long)
        self.histogram = torch.zeros(F * cfg.histogram_bins, dtype=torch.long)
        window = lambda: {
            "seq": ((), torch.long, -1),
            "pos": ((), torch.long, -1),
            "tokens": ((W,), torch.int32, -1),
            "acts": ((W,), torch.float32, 0.0),
        }
        self.top = SlotTable(
            F, cfg.top_k, torch.float32, -math.inf, True, {**window(), "seq_share": ((), torch.float32, 0.0)}
        )
        self.interval = SlotTable(
            F * cfg.intervals,
            cfg.interval_samples,
            torch.long,
            KEY_EMPTY,
            False,
            {**window(), "value": ((), torch.float32, 0.0)},
        )
        self.interval_count = torch.zeros(F * cfg.intervals, dtype=torch.long)
        self.top_octave = torch.full((F,), NO_CELL, dtype=torch.long)
        limits = dict(dense_limit=cfg.dense_pair_limit, max_pairs=cfg.max_pairs)
        self.token_mass = PairSums(F, vocab_size, weighted=True, **limits)
        self.cofire = PairSums(F, F, weighted=False, **limits)
        self.random_stride = max(1, expected_sequences // max(cfg.random_sequences, 1))
        self.random_tokens: list[Tensor] = []
        self.random_seqs: list[int] = []  # sequence index of each kept window
        self.random_entries: list[tuple[Tensor, Tensor, Tensor]] = []  # (token row, feature, value)

    # ---- the pass -------------------------------------------------------------------------
    @torch.no_grad()
    def update(self, f: Tensor, tokens: Tensor) -> None:
        """f [B, T, F] feature activations (any float dtype) of token windows `tokens` [B, T]."""
        B, T, F = f.shape
        if F != self.F or T != self.T or tuple(tokens.shape) != (B, T):
            raise ValueError(
                f"update expects f [B, {self.T}, {self.F}] and tokens [B, {self.T}], "
                f"got f {list(f.shape)} and tokens {list(tokens.shape)}."
            )
        tokens = tokens.long().cpu()
        analysed = ~torch.isin(tokens, self.ignored)  # [B, T]
        f = f.detach().to("cpu", torch.float32).clamp_min(0)
        f.masked_fill_(~analysed[..., None], 0.0)
        flat = f.view(B * T, F)
        rows, feats = torch.nonzero(flat, as_tuple=True)  # row-major: sorted by row
        vals = flat[rows, feats]
        first_seq = self.sequences_seen
        self.tokens_seen += int(analysed.sum())
        self.token_counts += torch.bincount(tokens[analysed], minlength=self.V)
        self.fire_count += torch.bincount(feats, minlength=F)
        self.act_sum += torch.bincount(feats, weights=vals.double(), minlength=F)
        self.act_max.scatter_reduce_(0, feats, vals, reduce="amax")
        levels = activation_levels(vals, self.cfg.bins_per_octave)
        low = self.cfg.histogram_low_exp * self.cfg.bins_per_octave
        bins = (levels - low + 1).clamp(0, self.cfg.histogram_bins - 1)
        self.histogram.index_add_(0, feats * self.cfg.histogram_bins + bins, torch.ones_like(bins))
        self._update_top(f, tokens, analysed, first_seq)
        self._update_intervals(f, tokens, rows, feats, vals, levels, first_seq)
        self.token_mass.add(feats, tokens.view(-1)[rows], vals)
        self._update_cofire(rows, feats, vals, B * T)
        self._keep_random(tokens, rows, feats, vals, first_seq)
        self.sequences_seen += B

    def _windows(self, f: Tensor, tokens: Tensor, b: Tensor, pos: Tensor, j: Tensor) -> dict[str, Tensor]:
        """Token ids and feature-j activations [n, W] around (sequence b, position pos); -1 / 0 outside."""
        offsets = torch.arange(-self.cfg.window_left, self.cfg.window_right + 1)
        where = pos[:, None] + offsets[None, :]
        inside = (where >= 0) & (where < self.T)
        where = where.clamp(0, self.T - 1)
        window_tokens = torch.where(inside, tokens[b[:, None], where], -1)
        window_acts = torch.where(inside, f[b[:, None], where, j[:, None]], 0.0)
        return {"tokens": window_tokens, "acts": window_acts}

    def _update_top(self, f: Tensor, tokens: Tensor, analysed: Tensor, first_seq: int) -> None:
        seq_max, seq_argmax = f.max(dim=1)  # [B, F]
        active_per_seq = (f > 0).sum(dim=1)  # [B, F]
        self.sequences_fired += (active_per_seq > 0).sum(dim=0)
        b, j = torch.nonzero(seq_max > 0, as_tuple=True)
        values, pos = seq_max[b, j], seq_argmax[b, j]
        analysed_per_seq = analysed.sum(dim=1).clamp_min(1)

        def payload(i: Tensor) -> dict[str, Tensor]:
            return {
                "seq": b[i] + first_seq,
                "pos": pos[i],
                "seq_share": active_per_seq[b[i], j[i]] / analysed_per_seq[b[i]],
                **self._windows(f, tokens, b[i], pos[i], j[i]),
            }

        self.top.offer(j, values, payload)

    def _update_intervals(
        self, f: Tensor, tokens: Tensor, rows: Tensor, feats: Tensor, vals: Tensor, levels: Tensor, first_seq: int
    ) -> None:
        I = self.cfg.intervals
        octave = torch.div(levels, self.cfg.bins_per_octave, rounding_mode="floor")
        fired = self.act_max > 0
        new_top = torch.full_like(self.top_octave, NO_CELL)
        new_top[fired] = activation_levels(self.act_max[fired], 1)
        moved = torch.nonzero((new_top != self.top_octave) & (self.top_octave != NO_CELL)).squeeze(1)
        if moved.numel():
            self._shift_intervals(moved, new_top[moved] - self.top_octave[moved])
        self.top_octave = new_top
        interval = self.top_octave[feats] - octave
        tracked = torch.nonzero(interval < I).squeeze(1)  # interval >= 0 always: max >= every value
        rows, feats, vals, interval = rows[tracked], feats[tracked], vals[tracked], interval[tracked]
        groups = feats * I + interval
        self.interval_count.index_add_(0, groups, torch.ones_like(groups))
        b, pos = rows // self.T, rows % self.T
        keys = hash_keys((b + first_seq) * self.T * self.F + pos * self.F + feats)

        def payload(i: Tensor) -> dict[str, Tensor]:
            return {
                "seq": b[i] + first_seq,
                "pos": pos[i],
                "value": vals[i],
                **self._windows(f, tokens, b[i], pos[i], feats[i]),
            }

        self.interval.offer(groups, keys, payload)

    def _shift_intervals(self, features: Tensor, shift: Tensor) -> None:
        """Features whose top octave rose by `shift` [n]: interval i now holds old interval i - shift."""
        I = self.cfg.intervals
        source = torch.arange(I)[None, :] - shift[:, None]  # [n, I]
        valid = source >= 0
        source = source.clamp_min(0)
        rows = features[:, None] * I + source  # flat group ids of the sources
        targets = features[:, None] * I + torch.arange(I)[None, :]
        count = torch.where(valid, self.interval_count[rows], 0)
        self.interval_count[targets] = count
        table = self.interval
        scores = table.scores[rows]
        scores[~valid] = table.empty
        table.scores[targets] = scores
        for name, values in table.fields.items():
            moved = values[rows]
            moved[~valid] = table.fills[name]
            values[targets] = moved

    def _update_cofire(self, rows: Tensor, feats: Tensor, vals: Tensor, n_rows: int) -> None:
        if rows.numel() == 0 or self.cfg.cofire_max_active == 0:
            return
        per_row = torch.bincount(rows, minlength=n_rows)
        M = self.cfg.cofire_max_active
        if int(per_row.max()) > M:
            rank = rank_in_group(rows, vals, largest=True)
            keep = rank < M
            rows, feats, rank = rows[keep], feats[keep], rank[keep]
        else:
            starts = torch.cumsum(per_row, 0) - per_row
            rank = torch.arange(rows.numel()) - starts[rows]
        L = int(rank.max()) + 1
        if L < 2:
            return
        padded = torch.full((n_rows, L), -1, dtype=torch.long)
        padded[rows, rank] = feats
        first, second = torch.triu_indices(L, L, offset=1)
        a, c = padded[:, first].reshape(-1), padded[:, second].reshape(-1)
        both = (a >= 0) & (c >= 0)
        a, c = a[both], c[both]
        self.cofire.add(torch.minimum(a, c), torch.maximum(a, c))

    def _keep_random(self, tokens: Tensor, rows: Tensor, feats: Tensor, vals: Tensor, first_seq: int) -> None:
        wanted = self.cfg.random_sequences - len(self.random_tokens)
        if wanted <= 0:
            return
        seqs = first_seq + torch.arange(tokens.shape[0])
        chosen = torch.nonzero(seqs % self.random_stride == 0).squeeze(1)[:wanted]
        bounds = torch.searchsorted(
            rows, torch.stack([chosen * self.T, (chosen + 1) * self.T], 1)
        ).tolist()  # rows are sorted
        for b, (start, stop) in zip(chosen.tolist(), bounds):
            in_seq = slice(start, stop)
            row_in_sample = len(self.random_tokens) * self.T + (rows[in_seq] - b * self.T)
            # copies (int32 where ids fit): a slice would keep the batch's whole firing arrays alive
            self.random_entries.append((row_in_sample.int(), feats[in_seq].int(), vals[in_seq].clone()))
            self.random_tokens.append(tokens[b].to(torch.int32))
            self.random_seqs.append(first_seq + b)

    # ---- results --------------------------------------------------------------------------
    def result(self) -> dict[str, Tensor]:
        """Every per-feature statistic as named tensors (the artifact's `features.safetensors`)."""
        cfg, F = self.cfg, self.F
        out: dict[str, Tensor] = {
            "fire_count": self.fire_count,
            "density": self.fire_count.double() / max(self.tokens_seen, 1),
            "mean_activation": (self.act_sum / self.fire_count.clamp_min(1)).float(),
            "max_activation": self.act_max,
            "activation_sum": self.act_sum,
            "sequences_fired": self.sequences_fired,
            "histogram": self.histogram.view(F, cfg.histogram_bins),
            "histogram_edges": histogram_edges(cfg),
            "token_counts": self.token_counts,
        }
        out.update({"top_value": self.top.scores, **{f"top_{n}": t for n, t in self.top.fields.items()}})
        I, S = cfg.intervals, cfg.interval_samples
        out["interval_octave"] = self.top_octave[:, None] - torch.arange(I)[None, :]  # interval i is [2^o, 2^(o+1))
        out["interval_count"] = self.interval_count.view(F, I)
        out["interval_key"] = self.interval.scores.view(F, I, S)
        for name, t in self.interval.fields.items():
            out[f"interval_{name}"] = t.view(F, I, S, *t.shape[2:])
        out.update(self._token_lists())
        out.update(self._cofire_lists())
        out.update(self._random_sample())
        return out

    def _token_lists(self) -> dict[str, Tensor]:
        rows, cols, counts, sums = self.token_mass.entries()
        table, valid = top_per_row(rows, sums, self.cfg.top_tokens, self.F)
        pick = table.clamp_min(0)
        if len(cols) == 0:  # nothing fired: every slot is empty, but the gathers below need an entry
            cols, sums, counts = cols.new_zeros(1), sums.new_zeros(1), counts.new_zeros(1)
        return {
            "token_mass_ids": torch.where(valid, cols[pick], -1).to(torch.int32),
            "token_mass": torch.where(valid, sums[pick], 0.0).float(),
            "token_mass_count": torch.where(valid, counts[pick], 0),
        }

    def _cofire_lists(self) -> dict[str, Tensor]:
        a, c, counts, _ = self.cofire.entries()
        rows, cols, counts = torch.cat([a, c]), torch.cat([c, a]), torch.cat([counts, counts])
        union = self.fire_count[rows] + self.fire_count[cols] - counts
        jaccard = counts.double() / union.clamp_min(1)
        table, valid = top_per_row(rows, jaccard, self.cfg.neighbours, self.F)
        pick = table.clamp_min(0)
        if len(cols) == 0:  # no two features fired together: every slot is empty
            cols, counts, jaccard = cols.new_zeros(1), counts.new_zeros(1), jaccard.new_zeros(1)
        return {
            "cofire_ids": torch.where(valid, cols[pick], -1).to(torch.int32),
            "cofire_count": torch.where(valid, counts[pick], 0),
            "cofire_jaccard": torch.where(valid, jaccard[pick], 0.0).float(),
        }

    def _random_sample(self) -> dict[str, Tensor]:
        """Whole windows with all their firings, as CSR: row r's entries are ptr[r]:ptr[r+1];
        `random_seq` [n] the sequence index of each window (as in top_seq / interval_seq)."""
        n = len(self.random_tokens)
        tokens = torch.stack(self.random_tokens) if n else torch.zeros(0, self.T, dtype=torch.int32)
        if self.random_entries:
            rows = torch.cat([r for r, _, _ in self.random_entries]).long()
            feats = torch.cat([f for _, f, _ in self.random_entries]).long()
            vals = torch.cat([v for _, _, v in self.random_entries])
        else:
            rows, feats, vals = (torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), torch.zeros(0))
        ptr = torch.zeros(n * self.T + 1, dtype=torch.long)
        ptr[1:] = torch.cumsum(torch.bincount(rows, minlength=n * self.T), 0)
        order = torch.argsort(rows * self.F + feats)
        return {
            "random_tokens": tokens,
            "random_ptr": ptr,
            "random_features": feats[order].to(torch.int32),
            "random_values": vals[order].float(),
            "random_seq": torch.tensor(self.random_seqs, dtype=torch.long),
        }

    def flags(self) -> dict[str, Any]:
        return {
            "token_mass_exact": self.token_mass.exact,
            "cofire_exact": self.cofire.exact,
            "tokens_analysed": self.tokens_seen,
            "sequences": self.sequences_seen,
        }


# ---- decoder-only statistics -------------------------------------------------------------------

RESIDUAL_HOOK = re.compile(
    r"^(blocks\.\d+\.(hook_resid_(pre|mid|post)|hook_mlp_out|hook_attn_out|hook_in|hook_out|mlp\.hook_out|attn\.hook_out)"
    r"|ln_final\.hook_in|hook_embed|hook_pos_embed)$"
)
MLP_POST_HOOK = re.compile(r"^blocks\.(\d+)\.mlp\.hook_post$")


@dataclass
class LogitMap:
    """Decoder directions [n, d_in] -> direct logit effects [n, d_vocab]: (D @ to_residual),
    centred when the final norm is a LayerNorm, times the final norm's weight, then @ W_U."""

    to_residual: Tensor | None  # [d_in, d_model] (W_out of the layer for mlp.hook_post) or None
    centre: bool
    norm_weight: Tensor | None  # [d_model]
    W_U: Tensor  # [d_model, d_vocab]
    basis: str  # how the effects were computed, in words

    def __call__(self, directions: Tensor) -> Tensor:
        return self.residual(directions) @ self.W_U

    def residual(self, directions: Tensor) -> Tensor:
        """[n, d_model]: the directions as the unembedding reads them (effects = residual @ W_U)."""
        r = directions if self.to_residual is None else directions @ self.to_residual
        if self.centre:
            r = r - r.mean(dim=-1, keepdim=True)
        if self.norm_weight is not None:
            r = r * self.norm_weight
        return r


def logit_map(bridge: Any, hook_name: str, d_in: int) -> tuple[LogitMap | None, str]:
    """The map from this hook's space to logits, or (None, why not) for hooks with no direct path."""
    cfg = bridge.cfg
    W_U = bridge.W_U.detach().float().cpu()
    norm = str(getattr(cfg, "normalization_type", None) or "")
    ln_final = getattr(bridge, "ln_final", None)
    weight = getattr(ln_final, "weight", None) if ln_final is not None else None
    weight = weight.detach().float().cpu() if isinstance(weight, Tensor) else None
    centre = norm.startswith("LN")
    match = MLP_POST_HOOK.match(hook_name)
    if match and d_in == cfg.d_mlp:
        to_residual = bridge.W_out[int(match.group(1))].detach().float().cpu()
        where = f"W_out of layer {match.group(1)}, "
    elif RESIDUAL_HOOK.match(hook_name) and d_in == cfg.d_model:
        to_residual, where = None, ""
    else:
        return None, (
            f"hook {hook_name!r} (d_in {d_in}) does not write to the residual stream directly; "
            "logit effects are computed for residual-stream, attention/MLP-output and mlp.hook_post SAEs"
        )
    basis = f"decoder direction through {where}the final norm's weight ({norm or 'none'}{', centred' if centre else ''}) and W_U"
    return LogitMap(to_residual, centre, weight, W_U, basis), basis


@torch.no_grad()
def decoder_statistics(
    W_dec: Tensor,
    logits: LogitMap | None,
    cfg: AnalysisConfig,
    *,
    neurons: bool,
    chunk: int = 512,
    progress: bool = False,
) -> dict[str, Tensor]:
    """Nearest features by decoder cosine, logit effects (top / bottom tokens, histogram) and, when
    `neurons`, the neurons each feature writes to. W_dec [F, d_in]; processed in chunks of features."""
    W = W_dec.detach().float().cpu()
    F = W.shape[0]
    n = min(cfg.neighbours, max(F - 1, 1))
    unit = W / W.norm(dim=1, keepdim=True).clamp_min(1e-12)
    out: dict[str, list[Tensor]] = {}
    for start in tqdm(range(0, F, chunk), desc="decoder", disable=not progress, leave=False):
        stop = min(start + chunk, F)
        cos = unit[start:stop] @ unit.T
        cos[torch.arange(stop - start), torch.arange(start, stop)] = -math.inf
        if F > 1:
            near = cos.topk(n, dim=1)
            out.setdefault("nearest_ids", []).append(near.indices.to(torch.int32))
            out.setdefault("nearest_cosine", []).append(near.values)
        if logits is not None:
            effect = logits(W[start:stop])  # [c, V]
            m = min(cfg.neighbours, effect.shape[1])
            top, bottom = effect.topk(m, dim=1), effect.topk(m, dim=1, largest=False)
            lo, hi = effect.min(dim=1).values, effect.max(dim=1).values
            width = (hi - lo).clamp_min(1e-12)
            bins = ((effect - lo[:, None]) / width[:, None] * cfg.logit_bins).long().clamp(0, cfg.logit_bins - 1)
            flat = torch.arange(stop - start)[:, None] * cfg.logit_bins + bins
            counts = torch.bincount(flat.reshape(-1), minlength=(stop - start) * cfg.logit_bins)
            for key, value in (
                ("logit_top_ids", top.indices.to(torch.int32)),
                ("logit_top_values", top.values),
                ("logit_bottom_ids", bottom.indices.to(torch.int32)),
                ("logit_bottom_values", bottom.values),
                ("logit_histogram", counts.view(stop - start, cfg.logit_bins)),
                ("logit_range", torch.stack([lo, hi], dim=1)),
            ):
                out.setdefault(key, []).append(value)
        if neurons:
            m = min(cfg.neighbours, W.shape[1])
            idx = W[start:stop].abs().topk(m, dim=1).indices
            out.setdefault("neuron_ids", []).append(idx.to(torch.int32))
            out.setdefault("neuron_weights", []).append(W[start:stop].gather(1, idx))
    result = {key: torch.cat(parts) for key, parts in out.items()}
    result["decoder"] = W
    result["decoder_norm"] = W.norm(dim=1)
    return result


# ---- the artifact -------------------------------------------------------------------------------


@dataclass
class Analysis:
    """An analysis artifact in memory: `meta` (analysis.json), `tensors` (features.safetensors; names
    in `Analysis.feature`), `token_strings` (one per token id)."""

    meta: dict[str, Any]
    tensors: dict[str, Tensor]
    token_strings: list[str]
    path: Path | None = None
    neurons: Analysis | None = None  # for SAEs on MLP neurons: the neurons analysed as features (NEURONS_DIR)

    @property
    def d_sae(self) -> int:
        return int(self.meta["sae"]["d_sae"])

    def save(self, out: str | os.PathLike, training_from: Path | None = None) -> Path:
        """Write the folder (files replaced atomically); copy a model's training record beside it."""
        from safetensors.torch import save_file

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.tensors.items()}
        _atomic(out / TENSORS_FILE, lambda tmp: save_file(tensors, str(tmp), metadata={"format": ANALYSIS_FORMAT}))
        _atomic(
            out / VOCAB_FILE,
            lambda tmp: tmp.write_text(json.dumps({"token_strings": self.token_strings}, ensure_ascii=False)),
        )
        if training_from is not None and all((training_from / name).is_file() for name in TRAINING_FILES):
            for name in TRAINING_FILES:
                _atomic(out / name, lambda tmp, name=name: shutil.copyfile(training_from / name, tmp))
        _atomic(out / META_FILE, lambda tmp: tmp.write_text(json.dumps(self.meta, indent=2) + "\n"))
        if self.neurons is not None:
            self.neurons.save(out / NEURONS_DIR)
        self.path = out
        return out

    @classmethod
    def load(cls, path: str | os.PathLike) -> Analysis:
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"analysis folder {path} does not exist; create it with `interp analyze`.")
        for name in (META_FILE, TENSORS_FILE, VOCAB_FILE):
            if not (path / name).is_file():
                raise FileNotFoundError(f"analysis folder {path} has no {name}; re-run `interp analyze --out {path}`.")
        meta = _read_json(path / META_FILE)
        if meta.get("format") != ANALYSIS_FORMAT:
            raise ValueError(
                f"{path / META_FILE}: field 'format' is {meta.get('format')!r}, not {ANALYSIS_FORMAT!r}; "
                "this folder was not written by `interp analyze`."
            )
        if meta.get("format_version") != ANALYSIS_FORMAT_VERSION:
            raise ValueError(
                f"{path / META_FILE}: field 'format_version' is {meta.get('format_version')!r}; this toolkit "
                f"reads version {ANALYSIS_FORMAT_VERSION}. Re-run `interp analyze` to rebuild it."
            )
        vocab = _read_json(path / VOCAB_FILE).get("token_strings")
        if not isinstance(vocab, list):
            raise ValueError(
                f"{path / VOCAB_FILE}: field 'token_strings' must be a list of strings; re-run `interp analyze`."
            )
        try:
            tensors = load_file(str(path / TENSORS_FILE))
        except Exception as err:  # safetensors raises its own error types for corrupt files
            raise ValueError(
                f"{path / TENSORS_FILE} is not a readable safetensors file ({err}); re-run `interp analyze`."
            ) from err
        neurons = cls.load(path / NEURONS_DIR) if (path / NEURONS_DIR / META_FILE).is_file() else None
        return cls(meta=meta, tensors=tensors, token_strings=vocab, path=path, neurons=neurons)

    def feature(self, i: int) -> dict[str, Any]:
        """Everything about feature i as plain Python values (lists cut to their filled entries)."""
        if not 0 <= i < self.d_sae:
            raise ValueError(f"feature {i} is out of range; this analysis has features 0..{self.d_sae - 1}.")
        t = self.tensors
        top_valid = t["top_seq"][i] >= 0
        record: dict[str, Any] = {
            "id": i,
            "fire_count": int(t["fire_count"][i]),
            "density": float(t["density"][i]),
            "mean_activation": float(t["mean_activation"][i]),
            "max_activation": float(t["max_activation"][i]),
            "sequences_fired": int(t["sequences_fired"][i]),
            "histogram": t["histogram"][i].tolist(),
            "top_examples": [
                {
                    "value": float(t["top_value"][i, k]),
                    "sequence": int(t["top_seq"][i, k]),
                    "position": int(t["top_pos"][i, k]),
                    "seq_share": float(t["top_seq_share"][i, k]),
                    "tokens": t["top_tokens"][i, k].tolist(),
                    "acts": t["top_acts"][i, k].tolist(),
                }
                for k in torch.nonzero(top_valid).squeeze(1).tolist()
            ],
            "intervals": [],
            "token_mass": _pairs(t["token_mass_ids"][i], t["token_mass"][i], t["token_mass_count"][i]),
            "cofire": _pairs(t["cofire_ids"][i], t["cofire_jaccard"][i], t["cofire_count"][i]),
        }
        fired = max(record["fire_count"], 1)
        for k in range(t["interval_count"].shape[1]):
            octave, count = int(t["interval_octave"][i, k]), int(t["interval_count"][i, k])
            if count == 0:
                continue
            filled = torch.nonzero(t["interval_seq"][i, k] >= 0).squeeze(1).tolist()
            record["intervals"].append(
                {
                    "low": 2.0**octave,
                    "high": 2.0 ** (octave + 1),
                    "count": count,
                    "share": count / fired,
                    "examples": [
                        {
                            "value": float(t["interval_value"][i, k, s]),
                            "sequence": int(t["interval_seq"][i, k, s]),
                            "position": int(t["interval_pos"][i, k, s]),
                            "tokens": t["interval_tokens"][i, k, s].tolist(),
                            "acts": t["interval_acts"][i, k, s].tolist(),
                        }
                        for s in filled
                    ],
                }
            )
        if "nearest_ids" in t:
            record["nearest"] = _pairs(t["nearest_ids"][i], t["nearest_cosine"][i])
        if "logit_top_ids" in t:
            record["logit_top"] = _pairs(t["logit_top_ids"][i], t["logit_top_values"][i])
            record["logit_bottom"] = _pairs(t["logit_bottom_ids"][i], t["logit_bottom_values"][i])
            record["logit_histogram"] = t["logit_histogram"][i].tolist()
            record["logit_range"] = t["logit_range"][i].tolist()
        if "neuron_ids" in t:
            record["neurons"] = _pairs(t["neuron_ids"][i], t["neuron_weights"][i])
        return record


def _pairs(ids: Tensor, values: Tensor, counts: Tensor | None = None) -> list[dict[str, Any]]:
    keep = ids >= 0
    out = [{"id": int(a), "value": float(v)} for a, v in zip(ids[keep].tolist(), values[keep].tolist())]
    if counts is not None:
        for item, c in zip(out, counts[keep].tolist()):
            item["count"] = int(c)
    return out


# ---- running it on a model ----------------------------------------------------------------------


def resolve_ignored_tokens(names: Iterable[str], token_strings: list[str], bos_id: int | None) -> list[int]:
    """Token ids to leave out: BOS (when given) plus each name, a token string or a decimal id."""
    lookup = {s: i for i, s in enumerate(token_strings)}
    ids = [] if bos_id is None else [bos_id]
    for name in names:
        if name in lookup:
            ids.append(lookup[name])
        elif name.strip().isdigit() and int(name) < len(token_strings):
            ids.append(int(name))
        else:
            raise ValueError(
                f"--ignore-tokens: {name!r} is neither a token string of this tokenizer nor a token id "
                f"below {len(token_strings)}; give the exact token text (e.g. ' the') or its id."
            )
    return sorted(set(ids))


def use_mmap_for_large_buffers(threshold: int = 1 << 20) -> bool:
    """On glibc, serve every allocation of `threshold` bytes or more by mmap (mallopt M_MMAP_THRESHOLD,
    which also stops glibc raising that threshold as big blocks are freed). The pass allocates and
    frees buffers of a few hundred MiB per batch; from the heap they fragment it and the process
    grows with the token count, by mmap they return to the system when freed. Process-wide; returns
    whether it took effect (False off glibc)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-3, threshold))  # -3: M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def default_batch_size(d_sae: int, context_length: int) -> int:
    """Windows per batch so that a batch's dense activations hold about 2^25 values (128 MiB float32)."""
    return max(1, (1 << 25) // (d_sae * context_length))


def analyze(
    model: Any,
    sae: Any,
    hook_name: str,
    sequences: Iterable[Tensor],
    cfg: AnalysisConfig,
    *,
    meta: dict[str, Any] | None = None,
    progress: bool = True,
) -> Analysis:
    """Run the pass: `model` a LoadedModel, `sae` anything with `encode(x [n, d_in]) -> [n, F]`
    and `W_dec` [F, d_in], `sequences` token windows [T] (BOS first). `meta` is merged into
    analysis.json (model spec, SAE path, corpus...)."""
    from interp.capture import ActivationHooks, batched, plan_capture

    cfg.validate()
    use_mmap_for_large_buffers()  # memory stays flat as the token count grows
    bridge, T = model.bridge, model.context_length
    plan = plan_capture(bridge, [hook_name], T)
    d_in = plan.hooks[0].d_in
    W_dec = sae.W_dec.detach()
    F = W_dec.shape[0]
    if W_dec.shape[1] != d_in:
        raise ValueError(
            f"the SAE reads d_in={W_dec.shape[1]} but hook {hook_name!r} gives {d_in} values per token; "
            "pass the hook the SAE was trained on (--hook)."
        )
    token_strings = model.tokenizer.token_strings()
    vocab = max(len(token_strings), int(bridge.cfg.d_vocab))
    token_strings = token_strings + [f"<unused {i}>" for i in range(len(token_strings), vocab)]
    ignored = resolve_ignored_tokens(cfg.ignore_tokens, token_strings, model.bos_id if cfg.ignore_bos else None)
    n_seq = -(-cfg.tokens // T)
    stats = FeatureStatistics(F, vocab, T, cfg, ignored_ids=ignored, expected_sequences=n_seq)
    writes_neurons = MLP_POST_HOOK.match(hook_name) is not None and d_in == int(bridge.cfg.d_mlp)
    neuron_pass = None
    if writes_neurons:  # the raw neurons, analysed as a second dictionary in the same pass
        from interp.neurons import NeuronPass

        neuron_pass = NeuronPass(W_dec, vocab, T, cfg, ignored_ids=ignored, expected_sequences=n_seq)
    batch_size = cfg.batch_size or default_batch_size(F, T)
    device = next(bridge.parameters()).device
    windows = _take(sequences, n_seq)
    bar = tqdm(total=n_seq * T, unit="tok", unit_scale=True, desc="analyse", disable=not progress, dynamic_ncols=True)
    with ActivationHooks(bridge, [hook_name], plan.stop_at_layer) as hooks, torch.inference_mode():
        for batch in batched(windows, batch_size):
            acts = hooks.run(batch.to(device))[hook_name]
            x = plan.hooks[0].rows(acts).to(W_dec.device, W_dec.dtype)
            f = sae.encode(x).view(batch.shape[0], T, F)
            stats.update(f, batch)
            if neuron_pass is not None:
                neuron_pass.update(x.view(batch.shape[0], T, d_in), f, batch)
            bar.update(batch.numel())
    bar.close()
    if stats.sequences_seen == 0:
        raise ValueError("the corpus gave no token window to analyse; point --corpus at more text.")
    tensors = stats.result()
    logits, basis = logit_map(bridge, hook_name, d_in)
    tensors.update(decoder_statistics(W_dec, logits, cfg, neurons=writes_neurons, progress=progress))
    if logits is not None:  # for exact logit-effect queries on any token (interp.search)
        tensors["logit_directions"] = logits.residual(W_dec.float().cpu())  # [F, d_model]
        tensors["unembed"] = logits.W_U  # [d_model, V]
    sae_cfg = getattr(sae, "cfg", None)
    record = {
        "format": ANALYSIS_FORMAT,
        "format_version": ANALYSIS_FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "hook_name": hook_name,
        "context_length": T,
        "vocab_size": vocab,
        "ignored_token_ids": ignored,
        "model": {
            "name": model.name,
            "d_model": int(bridge.cfg.d_model),
            "n_layers": int(bridge.cfg.n_layers),
            "d_mlp": int(bridge.cfg.d_mlp) if getattr(bridge.cfg, "d_mlp", None) else None,
        },
        "sae": {
            "d_in": d_in,
            "d_sae": F,
            "architecture": getattr(sae, "arch", type(sae).__name__),
            "config": sae_cfg.to_dict() if hasattr(sae_cfg, "to_dict") else None,
        },
        "config": dataclasses.asdict(cfg),
        "logit_effects": basis if logits is not None else None,
        "logit_effects_missing": None if logits is not None else basis,
        "neurons_written": writes_neurons,
        **stats.flags(),
    }
    for key, value in (meta or {}).items():
        record[key] = (
            {**record[key], **value} if isinstance(record.get(key), dict) and isinstance(value, dict) else value
        )
    analysis = Analysis(meta=record, tensors=tensors, token_strings=token_strings)
    if neuron_pass is not None:
        analysis.neurons = neuron_pass.analysis(record, token_strings, logits)
    return analysis


def _take(sequences: Iterable[Tensor], n: int) -> Iterator[Tensor]:
    for i, seq in enumerate(sequences):
        if i >= n:
            return
        yield seq


def run_analysis(
    model_spec: str,
    sae_path: str,
    corpus_spec: str,
    out: str | os.PathLike,
    cfg: AnalysisConfig,
    *,
    hook_name: str | None = None,
    split: str = "heldout",
    device: str | None = None,
    progress: bool = True,
) -> Analysis:
    """Load model, SAE and corpus by spec, analyse, save to `out` (with the model's training record)."""
    from sae.io import load_sae

    from interp.corpus import load_corpus, token_sequences
    from interp.model import load_model

    sae = load_sae(sae_path, device=device)
    hook = hook_name or (getattr(sae, "metadata", None) or {}).get("hook_name")
    if not hook:
        raise ValueError(f"the SAE in {sae_path} names no hook (cfg.json metadata.hook_name); pass --hook.")
    model = load_model(model_spec, device=device)
    corpus = load_corpus(corpus_spec, split)
    sequences = token_sequences(corpus, model.tokenizer, model.context_length, seed=cfg.seed)
    model_path = Path(model_spec)
    meta = {
        "model": {"spec": str(model_path.resolve()) if model_path.is_dir() else model_spec},
        "sae": {"path": str(Path(sae_path).resolve())},
        "corpus": corpus.describe(),
    }
    analysis = analyze(model, sae, hook, sequences, cfg, meta=meta, progress=progress)
    if analysis.meta["sequences"] * analysis.meta["context_length"] < cfg.tokens:
        print(
            f"note: the corpus held only {analysis.meta['sequences']} windows of {analysis.meta['context_length']} tokens; "
            "analysed all of them."
        )
    analysis.save(out, training_from=model_path if model_path.is_dir() else None)
    return analysis


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not readable JSON ({err}); re-run the step that wrote it.") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, found {type(data).__name__}.")
    return data


def _atomic(path: Path, write: Callable[[Path], Any]) -> None:
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# ---- command line ------------------------------------------------------------------------------


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    from sae.options import DataclassOptions

    parser = subparsers.add_parser(
        "analyze", help="one pass over held-out tokens: every feature's statistics, saved for reports"
    )
    parser.add_argument("--model", required=True, help="model folder or Hugging Face model name")
    parser.add_argument("--sae", required=True, help="SAE folder (SAELens or sparsify layout)")
    parser.add_argument("--corpus", required=True, help="corpus spec: stdlib, a path/glob, or hf:NAME[:CONFIG[:SPLIT]]")
    parser.add_argument("--out", required=True, help="analysis folder to write")
    parser.add_argument("--hook", default=None, help="hook name (default: the one in the SAE's cfg.json)")
    parser.add_argument(
        "--split", default="heldout", choices=["heldout", "train", "all"], help="corpus split (default heldout)"
    )
    parser.add_argument("--device", default=None, help="torch device (default cpu)")
    options = DataclassOptions(parser.add_argument_group("analysis"), AnalysisConfig)
    parser.set_defaults(run=lambda args: _run_cli(args, options))


def _run_cli(args: argparse.Namespace, options: Any) -> int:
    cfg = AnalysisConfig(**options.values(args))
    analysis = run_analysis(
        args.model, args.sae, args.corpus, args.out, cfg, hook_name=args.hook, split=args.split, device=args.device
    )
    dead = int((analysis.tensors["fire_count"] == 0).sum())
    print(
        f"analysed {analysis.meta['tokens_analysed']} tokens x {analysis.d_sae} features "
        f"({dead} never fired) -> {args.out}"
    )
    return 0
