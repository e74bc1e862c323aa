"""The streaming accumulator of the analysis pass: every per-feature statistic, updated once per batch."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from interp.features.analysis.config import AnalysisConfig
from interp.features.analysis.tables import BestPerGroup, PairTotals, hash_keys, rank_in_group, top_per_row

NO_CELL = -(2**62)  # top octave of a feature that never fired
KEY_EMPTY = 2**62  # hash key of an empty interval slot (larger than any real key)


def histogram_edges(cfg: AnalysisConfig) -> Tensor:
    """Edges [n_log_bins + 1] of the log-spaced bins 1..n (bin 0 is below edges[0], bin n+1 above edges[-1])."""
    steps = (cfg.histogram_high_exp - cfg.histogram_low_exp) * cfg.bins_per_octave
    exps = cfg.histogram_low_exp + torch.arange(steps + 1, dtype=torch.float64) / cfg.bins_per_octave
    return torch.pow(2.0, exps)


def activation_levels(values: Tensor, bins_per_octave: int) -> Tensor:
    """q = floor(log2(v) * bpo) in float64, int64 [n]: the level that fixes both histogram bin and octave."""
    return torch.floor(values.double().log2() * bins_per_octave).long()


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

        def window() -> dict[str, tuple[tuple[int, ...], torch.dtype, float | int]]:
            return {
                "seq": ((), torch.long, -1),
                "pos": ((), torch.long, -1),
                "tokens": ((W,), torch.int32, -1),
                "acts": ((W,), torch.float32, 0.0),
            }

        self.top = BestPerGroup(
            F, cfg.top_k, torch.float32, -math.inf, True, {**window(), "seq_share": ((), torch.float32, 0.0)}
        )
        self.interval = BestPerGroup(
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
        self.token_mass = PairTotals(F, vocab_size, weighted=True, **limits)
        self.cofire = PairTotals(F, F, weighted=False, **limits)
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
        n_int = self.cfg.intervals
        octave = torch.div(levels, self.cfg.bins_per_octave, rounding_mode="floor")
        fired = self.act_max > 0
        new_top = torch.full_like(self.top_octave, NO_CELL)
        new_top[fired] = activation_levels(self.act_max[fired], 1)
        moved = torch.nonzero((new_top != self.top_octave) & (self.top_octave != NO_CELL)).squeeze(1)
        if moved.numel():
            self._shift_intervals(moved, new_top[moved] - self.top_octave[moved])
        self.top_octave = new_top
        interval = self.top_octave[feats] - octave
        tracked = torch.nonzero(interval < n_int).squeeze(1)  # interval >= 0 always: max >= every value
        rows, feats, vals, interval = rows[tracked], feats[tracked], vals[tracked], interval[tracked]
        groups = feats * n_int + interval
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
        n_int = self.cfg.intervals
        source = torch.arange(n_int)[None, :] - shift[:, None]  # [n, n_int]
        valid = source >= 0
        source = source.clamp_min(0)
        rows = features[:, None] * n_int + source  # flat group ids of the sources
        targets = features[:, None] * n_int + torch.arange(n_int)[None, :]
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
        n_int, S = cfg.intervals, cfg.interval_samples
        out["interval_octave"] = self.top_octave[:, None] - torch.arange(n_int)[None, :]  # interval i is [2^o, 2^(o+1))
        out["interval_count"] = self.interval_count.view(F, n_int)
        out["interval_key"] = self.interval.scores.view(F, n_int, S)
        for name, t in self.interval.fields.items():
            out[f"interval_{name}"] = t.view(F, n_int, S, *t.shape[2:])
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
