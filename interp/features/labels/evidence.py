"""The evidence labels are built and scored from: an analysis as numpy arrays, split by sequence
into build and held-out parts (a sequence is held out when the hash of its index is odd)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from interp.features.analysis.artifact import Analysis
from interp.features.analysis.tables import hash_keys
from interp.features.labels.rules import token_classes


def held_out_sequences(seq: np.ndarray) -> np.ndarray:
    """bool, same shape: which sequence indices are held out (hash of the index is odd; -1 never)."""
    seq = np.asarray(seq, dtype=np.int64)
    return (hash_keys(torch.as_tensor(np.maximum(seq, 0))) % 2 == 1).numpy() & (seq >= 0)


@dataclass
class Examples:
    """One feature's top and interval examples: seq, pos, value [n]; ctx [n, L + 2]; tokens, acts [n, W]."""

    seq: np.ndarray
    pos: np.ndarray
    value: np.ndarray
    is_top: np.ndarray
    tokens: np.ndarray
    acts: np.ndarray
    held_out: np.ndarray


class Evidence:
    """An analysis as numpy arrays, plus what every feature's labelling shares: the random sample's
    contexts and its build / held-out split, character classes, base rates."""

    def __init__(self, analysis: Analysis):
        t, meta = analysis.tensors, analysis.meta
        where = analysis.path or "the analysis"
        for name in ("random_seq", "random_tokens", "top_seq", "interval_seq", "token_mass_ids"):
            if name not in t:
                raise ValueError(
                    f"{where}: features.safetensors has no '{name}'; it was written by an older "
                    "`interp analyze`. Re-run `interp analyze` to label its features."
                )
        self.analysis, self.vocab = analysis, analysis.token_strings
        self.d_sae = analysis.d_sae
        cfg = meta.get("config", {})
        self.left, self.right = int(cfg.get("window_left", 16)), int(cfg.get("window_right", 4))
        self.arrays = {
            name: t[name].numpy()
            for name in (
                "top_seq",
                "top_pos",
                "top_value",
                "top_tokens",
                "top_acts",
                "top_seq_share",
                "interval_seq",
                "interval_pos",
                "interval_value",
                "interval_tokens",
                "interval_acts",
                "token_mass_ids",
                "token_mass",
                "token_mass_count",
                "activation_sum",
                "fire_count",
            )
        }
        self.top_held = held_out_sequences(self.arrays["top_seq"])
        self.interval_held = held_out_sequences(self.arrays["interval_seq"])
        self.logit_top = t["logit_top_ids"].numpy() if "logit_top_ids" in t else None
        self.ignored = np.array(meta.get("ignored_token_ids", []), dtype=np.int64)
        counts = t["token_counts"].double().numpy()
        self.token_counts = counts
        self.classes = token_classes(self.vocab)
        total = max(counts.sum(), 1.0)
        self.class_rate = {
            name: float(counts[table[: len(counts)]].sum() / total) for name, table in self.classes.items()
        }
        self.token_rate = counts / total

        tokens = t["random_tokens"].long().numpy()  # [n, T]
        n, T = tokens.shape
        self.context_length = T
        self.random_seq = t["random_seq"].numpy()
        self.random_flat = tokens.reshape(-1)
        self.random_ctx = _contexts(tokens, self.left)  # [n * T, L + 2]
        analysed = ~np.isin(self.random_flat, self.ignored)
        held = np.repeat(held_out_sequences(self.random_seq), T)
        self.random_rows = {True: np.nonzero(analysed & held)[0], False: np.nonzero(analysed & ~held)[0]}
        self.random_row_held = held
        ptr = t["random_ptr"].numpy()
        rows = np.repeat(np.arange(n * T), np.diff(ptr))
        feats = t["random_features"].long().numpy()
        order = np.argsort(feats, kind="stable")
        self.fire_rows, self.fire_values = rows[order], t["random_values"].double().numpy()[order]
        self.fire_ptr = np.searchsorted(feats[order], np.arange(self.d_sae + 1))
        self.random_seq_set = set(self.random_seq.tolist())

    def random_activations(self, i: int) -> np.ndarray:
        """Feature i's activation on every random-sample token [n * T] (0 where it does not fire)."""
        a, b = self.fire_ptr[i], self.fire_ptr[i + 1]
        dense = np.zeros(len(self.random_flat))
        dense[self.fire_rows[a:b]] = self.fire_values[a:b]
        return dense

    def examples(self, i: int) -> Examples:
        a = self.arrays
        seq = np.concatenate([a["top_seq"][i], a["interval_seq"][i].reshape(-1)])
        keep = seq >= 0
        W = a["top_tokens"].shape[-1]
        tokens = np.concatenate([a["top_tokens"][i], a["interval_tokens"][i].reshape(-1, W)]).astype(np.int64)[keep]
        return Examples(
            seq=seq[keep],
            pos=np.concatenate([a["top_pos"][i], a["interval_pos"][i].reshape(-1)])[keep],
            value=np.concatenate([a["top_value"][i], a["interval_value"][i].reshape(-1)]).astype(np.float64)[keep],
            is_top=np.concatenate([np.ones(len(a["top_seq"][i]), bool), np.zeros(a["interval_seq"][i].size, bool)])[
                keep
            ],
            tokens=tokens,
            acts=np.concatenate([a["top_acts"][i], a["interval_acts"][i].reshape(-1, W)]).astype(np.float64)[keep],
            held_out=np.concatenate([self.top_held[i], self.interval_held[i].reshape(-1)])[keep],
        )

    def example_contexts(self, tokens: np.ndarray) -> np.ndarray:
        """Windows [n, W] -> contexts [n, L + 2] (their peak is column L)."""
        ctx = np.full((len(tokens), self.left + 2), -1, dtype=np.int64)
        width = min(tokens.shape[1], self.left + 2)
        ctx[:, :width] = tokens[:, :width]
        return ctx


def _contexts(tokens: np.ndarray, L: int) -> np.ndarray:
    """Sequences [n, T] -> contexts [n * T, L + 2]: ids at offsets -L..+1 of every position, -1 outside."""
    n, T = tokens.shape
    padded = np.full((n, L + T + 1), -1, dtype=np.int64)
    padded[:, L : L + T] = tokens
    columns = [padded[:, k : k + T] for k in range(L + 2)]
    return np.stack(columns, axis=2).reshape(n * T, L + 2)
