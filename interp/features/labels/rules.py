"""What a label is made of: detection scores (AUROC, Pearson r), rules that predict a token's
activation from its context, character classes of tokens, and how tokens are shown in a label."""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def auroc(positive: np.ndarray, negative: np.ndarray) -> float | None:
    """P(score of a random positive > score of a random negative) + P(tie) / 2, i.e. the Mann–Whitney
    U statistic over n_pos · n_neg; None when either set is empty. Each positive is counted against
    the sorted negatives (binary search): below it, plus half of those tied with it."""
    positive, negative = np.asarray(positive, dtype=np.float64), np.sort(np.asarray(negative, dtype=np.float64))
    n_pos, n_neg = len(positive), len(negative)
    if n_pos == 0 or n_neg == 0:
        return None
    below = np.searchsorted(negative, positive, side="left")
    tied = np.searchsorted(negative, positive, side="right") - below
    return float((below.sum() + 0.5 * tied.sum()) / (n_pos * n_neg))


def pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson's r in float64; None when either side is constant or there are fewer than 2 points."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2:
        return None
    dx, dy = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float((dx * dx).sum()) * float((dy * dy).sum()))
    return float((dx * dy).sum() / denominator) if denominator > 0 else None


# ---- rules ---------------------------------------------------------------------------------------
# A context array ctx [n, L + 2] holds the token ids at offsets -L..+1 of each scored token (column L is
# the token itself, L + 1 the next one); -1 where the window or sequence ends.


def show_token(s: str) -> str:
    """A token string in a one-line label: backticks, newline and tab as \\n and \\t."""
    return (
        "`"
        + s.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r").replace("`", "\\`")
        + "`"
    )


def show_list(ids: list[int], vocab: list[str], limit: int = 6) -> str:
    shown = ", ".join(show_token(vocab[t]) for t in ids[:limit])
    return shown + (f" (+{len(ids) - limit})" if len(ids) > limit else "")


@dataclass
class Rule:
    """A predictor of a feature's activation from a token's context."""

    kind: str  # tokens | ngram | class | next | context
    text: str
    tokens: dict[int, float] = field(default_factory=dict)  # current token -> predicted activation
    preceding: dict[int, int] = field(default_factory=dict)  # offset back (1, 2) -> required token
    token_class: str | None = None
    next_tokens: list[int] = field(default_factory=list)
    context_tokens: list[int] = field(default_factory=list)

    def predict(self, ctx: np.ndarray, L: int, classes: dict[str, np.ndarray]) -> np.ndarray:
        """Predicted activation [n] of the tokens whose contexts are ctx [n, L + 2]."""
        token = ctx[:, L]
        if self.kind == "class":
            table = classes[self.token_class]
            return np.where(token >= 0, table[np.clip(token, 0, len(table) - 1)], False).astype(np.float64)
        if self.kind == "next":
            return np.isin(ctx[:, L + 1], self.next_tokens).astype(np.float64)
        if self.kind == "context":
            return np.isin(ctx[:, :L], self.context_tokens).sum(1).astype(np.float64)
        score = np.ones(len(ctx)) if not self.tokens else _lookup(self.tokens, token, len(classes[TOKEN_CLASSES[0]]))
        for back, required in self.preceding.items():
            score = score * (ctx[:, L - back] == required) if back <= L else score * 0.0
        return score

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.tokens:
            out["tokens"] = [int(t) for t in self.tokens]
            out["weights"] = [float(f"{w:.4g}") for w in self.tokens.values()]
        if self.preceding:
            out["preceding"] = [{"offset": -back, "token": int(t)} for back, t in sorted(self.preceding.items())]
        if self.token_class:
            out["class"] = self.token_class
        if self.next_tokens:
            out["next_tokens"] = [int(t) for t in self.next_tokens]
        if self.context_tokens:
            out["context_tokens"] = [int(t) for t in self.context_tokens]
        return out


def _lookup(table: dict[int, float], token: np.ndarray, vocab_size: int) -> np.ndarray:
    """table[token] for token ids [n] (0 for ids not in the table and for -1)."""
    dense = np.zeros(vocab_size + 1)  # the last entry answers for -1
    dense[list(table)] = list(table.values())
    return dense[token]


TOKEN_CLASSES = ("digits", "whitespace", "punctuation", "non-ASCII", "capitalised")


def token_classes(token_strings: list[str]) -> dict[str, np.ndarray]:
    """Class name -> bool [V]: which token strings fall in each character class."""

    def classify(s: str) -> dict[str, bool]:
        core = s.strip()
        return {
            "digits": bool(core) and all(c.isdigit() for c in core),
            "whitespace": bool(s) and not core,
            "punctuation": bool(core) and all(unicodedata.category(c).startswith(("P", "S")) for c in core),
            "non-ASCII": any(ord(c) > 127 for c in s) or "\\x" in s,
            "capitalised": bool(core) and core[0].isupper(),
        }

    flags = [classify(s) for s in token_strings]
    return {name: np.array([f[name] for f in flags], dtype=bool) for name in TOKEN_CLASSES}


# ---- the data a labeller reads -------------------------------------------------------------------
