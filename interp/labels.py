"""Feature labels that need no language model, each scored on held-out examples it was not built from.

Everything comes from an analysis artifact (`interp analyze`); the model is never run.

The split. A sequence (context window) is *held out* when `hash_keys(sequence index)` is odd. Held-out
data: the top and interval examples from held-out sequences and the held-out windows of the random
sample. A label is built from everything else: the build examples, the build random windows, and the
token-mass table with every held-out token position we can see subtracted (those positions are
exactly the ones scored; token frequencies stay corpus-wide, as they say nothing about a feature).

A label is a *rule*: a function of a token's context (the L = window_left tokens before it, the token,
the next token) giving a predicted activation. Candidate rules, each built from build data:
- tokens:  the smallest set of tokens holding `coverage` of the build activation mass, each weighted
           by its mean activation per occurrence ("fires on ` def`, ` class`");
- n-gram:  the tokens above, or any token, preceded at the peak by a fixed token at offset -1 or -2
           in most build top examples ("` import` after `from` …");
- class:   a character class of the token: digits, whitespace, punctuation, non-ASCII, capitalised;
- next:    the actual next token is one the feature's logit effects promote most ("before ` (`");
- context: for context-wide features (active on a large share of the tokens of their sequences),
           tokens enriched in the preceding window ("in context with `class`").
The rule with the best detection AUROC on build data is the label. Descriptive facts ride along:
what it predicts (agreement of actual next tokens with the logit effects, against the base rate),
the character class, the context-wide share.

The score: the chosen rule as a predictor, on held-out data only. Detection AUROC: positives are the
held-out example peaks and the held-out random tokens where the feature fires, negatives the held-out
random tokens where it does not; ties count one half. Correlation: Pearson's r between the rule's
prediction and the activation over the held-out peaks and random tokens.

`labels.json` beside the analysis (the neurons' labels in `neurons/labels.json`):
  {"format": "monosemantic-labels", "format_version": 1, "config": {...},
   "features": [{"id", "label", "score", "correlation", "rule": {...}, "build_auroc", "facts": {...},
                 "held_out": {"positives", "negatives"}}, ...]}
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from interp.analysis import NEURONS_DIR, Analysis, hash_keys

LABELS_FILE = "labels.json"
LABELS_FORMAT = "monosemantic-labels"
LABELS_FORMAT_VERSION = 1


@dataclass
class LabelConfig:
    """How rules are built; every field is an `interp label` option of the same name."""

    coverage: float = field(default=0.8, metadata={"help": "share of the activation mass the token set must hold"})
    max_tokens: int = field(default=6, metadata={"help": "largest token set a label names"})
    context_offsets: int = field(
        default=2, metadata={"help": "preceding positions searched for a fixed token at the peak"}
    )
    context_min_share: float = field(
        default=0.6, metadata={"help": "share of build top examples a preceding token must appear in"}
    )
    min_lift: float = field(default=2.0, metadata={"help": "a fact must be this many times its base rate"})
    predicts_tokens: int = field(
        default=10, metadata={"help": "promoted tokens an actual next token is checked against"}
    )
    predicts_min_agreement: float = field(
        default=0.3, metadata={"help": "share of firings followed by a promoted token to say 'predicts'"}
    )
    class_min_share: float = field(default=0.8, metadata={"help": "share of peaks in a character class to name it"})
    context_wide_share: float = field(
        default=0.3, metadata={"help": "mean share of its sequences' tokens a context-wide feature is active on"}
    )
    context_tokens: int = field(default=3, metadata={"help": "tokens named by a context rule"})

    def validate(self) -> None:
        for name in (
            "coverage",
            "context_min_share",
            "predicts_min_agreement",
            "class_min_share",
            "context_wide_share",
        ):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"label option {name} must be in (0, 1], got {getattr(self, name)}.")
        for name in ("max_tokens", "predicts_tokens", "context_tokens", "min_lift"):
            if getattr(self, name) <= 0:
                raise ValueError(f"label option {name} must be positive, got {getattr(self, name)}.")
        if self.context_offsets < 0:
            raise ValueError(f"label option context_offsets must be >= 0, got {self.context_offsets}.")


# ---- scores --------------------------------------------------------------------------------------


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


def _show_list(ids: list[int], vocab: list[str], limit: int = 6) -> str:
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


class LabelData:
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
        self.F = analysis.d_sae
        cfg = meta.get("config", {})
        self.L, self.R = int(cfg.get("window_left", 16)), int(cfg.get("window_right", 4))
        self.np = {
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
        self.top_held = held_out_sequences(self.np["top_seq"])
        self.interval_held = held_out_sequences(self.np["interval_seq"])
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
        self.T = T
        self.random_seq = t["random_seq"].numpy()
        self.random_flat = tokens.reshape(-1)
        self.random_ctx = _contexts(tokens, self.L)  # [n * T, L + 2]
        analysed = ~np.isin(self.random_flat, self.ignored)
        held = np.repeat(held_out_sequences(self.random_seq), T)
        self.random_rows = {True: np.nonzero(analysed & held)[0], False: np.nonzero(analysed & ~held)[0]}
        self.random_row_held = held
        ptr = t["random_ptr"].numpy()
        rows = np.repeat(np.arange(n * T), np.diff(ptr))
        feats = t["random_features"].long().numpy()
        order = np.argsort(feats, kind="stable")
        self.fire_rows, self.fire_values = rows[order], t["random_values"].double().numpy()[order]
        self.fire_ptr = np.searchsorted(feats[order], np.arange(self.F + 1))
        self.random_seq_set = set(self.random_seq.tolist())

    def random_activations(self, i: int) -> np.ndarray:
        """Feature i's activation on every random-sample token [n * T] (0 where it does not fire)."""
        a, b = self.fire_ptr[i], self.fire_ptr[i + 1]
        dense = np.zeros(len(self.random_flat))
        dense[self.fire_rows[a:b]] = self.fire_values[a:b]
        return dense

    def examples(self, i: int) -> Examples:
        a = self.np
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
        ctx = np.full((len(tokens), self.L + 2), -1, dtype=np.int64)
        width = min(tokens.shape[1], self.L + 2)
        ctx[:, :width] = tokens[:, :width]
        return ctx


def _contexts(tokens: np.ndarray, L: int) -> np.ndarray:
    """Sequences [n, T] -> contexts [n * T, L + 2]: ids at offsets -L..+1 of every position, -1 outside."""
    n, T = tokens.shape
    padded = np.full((n, L + T + 1), -1, dtype=np.int64)
    padded[:, L : L + T] = tokens
    columns = [padded[:, k : k + T] for k in range(L + 2)]
    return np.stack(columns, axis=2).reshape(n * T, L + 2)


# ---- labelling one feature ------------------------------------------------------------------------


@dataclass
class Label:
    """A feature's label: the chosen rule, its held-out scores, and the facts beside it."""

    id: int
    label: str
    score: float | None  # held-out detection AUROC
    correlation: float | None  # held-out Pearson r of prediction and activation
    build_auroc: float | None
    rule: dict[str, Any] | None
    facts: dict[str, Any]
    held_out: dict[str, int]
    candidates: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("score", "correlation", "build_auroc"):
            if out[key] is not None:
                out[key] = float(f"{out[key]:.4g}")
        return out


class Labeller:
    """Labels the features of one analysis: `label(i) -> Label`."""

    def __init__(self, analysis: Analysis, cfg: LabelConfig | None = None):
        self.cfg = cfg or LabelConfig()
        self.cfg.validate()
        self.data = LabelData(analysis)

    def label(self, i: int) -> Label:
        d, cfg, L = self.data, self.cfg, self.data.L
        if d.np["fire_count"][i] == 0:
            return Label(i, "dead (never fired)", None, None, None, None, {}, {"positives": 0, "negatives": 0})
        ex = d.examples(i)
        ctx = d.example_contexts(ex.tokens)
        random_acts = d.random_activations(i)
        build_mass, build_total = self.build_token_mass(i, ex, random_acts)
        facts: dict[str, Any] = {}
        candidates = self._candidates(i, ex, ctx, ~ex.held_out, build_mass, build_total, facts)
        # scored tokens: example peaks and random tokens; positives fire, negatives are random tokens that do not
        fires = random_acts > 0
        sets = {
            held: (
                ex.held_out == held,
                d.random_rows[held][fires[d.random_rows[held]]],
                d.random_rows[held][~fires[d.random_rows[held]]],
            )
            for held in (False, True)
        }

        def split(rule: Rule, held: bool) -> tuple[np.ndarray, np.ndarray]:
            on_examples, on_random = rule.predict(ctx, L, d.classes), rule.predict(d.random_ctx, L, d.classes)
            examples, firing, quiet = sets[held]
            return np.concatenate([on_examples[examples], on_random[firing]]), on_random[quiet]

        scored = [(rule, auroc(*split(rule, False))) for rule in candidates]
        examples, firing, quiet = sets[True]
        counts = {"positives": int(examples.sum()) + len(firing), "negatives": len(quiet)}
        if not scored:
            return Label(i, "no rule (too few build examples)", None, None, None, None, facts, counts)
        best, build_score = max(scored, key=lambda rs: -1.0 if rs[1] is None else rs[1])  # first of equals: simplest
        pos_pred, neg_pred = split(best, True)
        score = auroc(pos_pred, neg_pred)
        pos_act = np.concatenate([ex.value[examples], random_acts[firing]])
        correlation = pearson(np.concatenate([pos_pred, neg_pred]), np.concatenate([pos_act, np.zeros(len(neg_pred))]))
        return Label(
            i,
            self._text(best, facts),
            score,
            correlation,
            build_score,
            best.to_dict(),
            facts,
            counts,
            [
                {"kind": r.kind, "text": r.text, "build_auroc": None if s is None else float(f"{s:.4g}")}
                for r, s in scored
            ],
        )

    # ---- building -----------------------------------------------------------------------------
    def build_token_mass(self, i: int, ex: Examples, random_acts: np.ndarray) -> tuple[dict[int, float], float]:
        """The feature's token-mass list with every held-out position it could be scored on taken out:
        ({token: build mass}, build total mass)."""
        d = self.data
        held_mass: Counter[int] = Counter()
        rows = np.nonzero(d.random_row_held & (random_acts > 0))[0]
        for token, value in zip(d.random_flat[rows].tolist(), random_acts[rows].tolist()):
            held_mass[token] += value
        seen: set[tuple[int, int]] = set()
        for k in np.nonzero(ex.held_out)[0]:
            s, p = int(ex.seq[k]), int(ex.pos[k])
            if s in d.random_seq_set:  # the whole sequence is in the random sample, counted above
                continue
            for w in np.nonzero((ex.acts[k] > 0) & (ex.tokens[k] >= 0))[0]:
                where = (s, p - d.L + int(w))
                if where not in seen:
                    seen.add(where)
                    held_mass[int(ex.tokens[k, w])] += float(ex.acts[k, w])
        ids, mass = d.np["token_mass_ids"][i], d.np["token_mass"][i]
        build = {int(t): max(float(m) - held_mass.get(int(t), 0.0), 0.0) for t, m in zip(ids, mass) if t >= 0}
        total = max(float(d.np["activation_sum"][i]) - sum(held_mass.values()), 0.0)
        return build, total

    def _candidates(
        self,
        i: int,
        ex: Examples,
        ctx: np.ndarray,
        build: np.ndarray,
        build_mass: dict[int, float],
        build_total: float,
        facts: dict[str, Any],
    ) -> list[Rule]:
        d, cfg, L, vocab = self.data, self.cfg, self.data.L, self.data.vocab
        rules: list[Rule] = []
        # tokens: the smallest set holding `coverage` of the build mass
        ranked = sorted(((m, t) for t, m in build_mass.items() if m > 0), reverse=True)
        chosen, held = [], 0.0
        for m, t in ranked[: cfg.max_tokens]:
            chosen.append(t)
            held += m
            if build_total > 0 and held >= cfg.coverage * build_total:
                break
        coverage = held / build_total if build_total > 0 else 0.0
        token_rule = None
        if chosen:
            weights = {t: build_mass[t] / max(d.token_counts[t], 1.0) for t in chosen}
            more = "" if coverage >= cfg.coverage else " and others"
            token_rule = Rule("tokens", f"fires on {_show_list(chosen, vocab)}{more}", tokens=weights)
            rules.append(token_rule)
            facts["token_coverage"] = round(coverage, 4)
        # n-gram: a fixed preceding token at the peak of most build top examples
        top_ctx = ctx[build & ex.is_top]
        preceding = {}
        for back in range(1, min(cfg.context_offsets, L) + 1):
            column = top_ctx[:, L - back]
            column = column[column >= 0]
            if len(column) < 2:
                continue
            token, count = Counter(column.tolist()).most_common(1)[0]
            share = count / len(top_ctx)
            if share >= cfg.context_min_share and share >= cfg.min_lift * d.token_rate[token]:
                preceding[back] = token
        if preceding:
            after = _show_preceding(preceding, vocab)
            facts["preceded_by"] = [{"offset": -b, "token": int(t)} for b, t in sorted(preceding.items())]
            if token_rule is not None:
                rules.append(
                    Rule(
                        "ngram",
                        f"{token_rule.text.removeprefix('fires on ')} {after}",
                        tokens=token_rule.tokens,
                        preceding=preceding,
                    )
                )
            rules.append(Rule("ngram", f"any token {after}", preceding=preceding))
        # character class of the peak tokens
        peaks = ctx[build, L]
        peaks = peaks[peaks >= 0]
        if len(peaks):
            shares = {name: float(table[peaks].mean()) for name, table in d.classes.items()}
            name = max(shares, key=shares.get)
            if shares[name] >= cfg.class_min_share and shares[name] >= cfg.min_lift * d.class_rate[name]:
                facts["class"] = {
                    "name": name,
                    "share": round(shares[name], 4),
                    "base_rate": round(d.class_rate[name], 4),
                }
                rules.append(Rule("class", f"{name} tokens", token_class=name))
        # what it predicts: actual next tokens against the most promoted ones
        if d.logit_top is not None:
            promoted = [int(t) for t in d.logit_top[i][: cfg.predicts_tokens]]
            nxt = ctx[build, L + 1]
            nxt = nxt[nxt >= 0]
            if len(nxt):
                agreement = float(np.isin(nxt, promoted).mean())
                base_next = d.random_ctx[d.random_rows[False], L + 1]
                base = float(np.isin(base_next[base_next >= 0], promoted).mean()) if len(base_next) else 0.0
                facts["predicts"] = {"tokens": promoted, "agreement": round(agreement, 4), "base_rate": round(base, 4)}
                if agreement >= cfg.predicts_min_agreement and agreement >= cfg.min_lift * base:
                    hits = Counter(t for t in nxt.tolist() if t in promoted)  # promoted tokens that did follow
                    named = [t for t, _ in hits.most_common()]
                    facts["predicts"]["named"] = named
                    rules.append(Rule("next", f"before {_show_list(named, vocab, 3)}", next_tokens=named))
        # context-wide: active on a large share of its sequences' tokens
        shares_in_seq = d.np["top_seq_share"][i][d.np["top_seq"][i] >= 0]
        build_top = ~d.top_held[i][d.np["top_seq"][i] >= 0]
        if build_top.any():
            wide = float(shares_in_seq[build_top].mean())
            if wide >= cfg.context_wide_share:
                facts["context_wide"] = round(wide, 4)
                named = self._context_tokens(top_ctx)
                if named:
                    rules.append(Rule("context", f"in context with {_show_list(named, vocab)}", context_tokens=named))
        return rules

    def _context_tokens(self, top_ctx: np.ndarray) -> list[int]:
        """Tokens in the preceding window of most build top examples, far above their base rate."""
        d, cfg, L = self.data, self.cfg, self.data.L
        if len(top_ctx) < 2 or L == 0:
            return []
        present = Counter(t for row in top_ctx[:, :L] for t in set(row.tolist()) if t >= 0 and t not in d.ignored)
        scored = []
        for t, count in present.items():
            share, expected = count / len(top_ctx), 1.0 - (1.0 - d.token_rate[t]) ** L
            if share >= 0.5 and share >= cfg.min_lift * expected:
                scored.append((share / max(expected, 1e-12), t))
        return [t for _, t in sorted(scored, reverse=True)[: cfg.context_tokens]]

    def _text(self, rule: Rule, facts: dict[str, Any]) -> str:
        parts = [rule.text]
        vocab = self.data.vocab
        if "named" in facts.get("predicts", {}) and rule.kind != "next":
            parts.append("predicts " + _show_list(facts["predicts"]["named"], vocab, 3))
        if "class" in facts and rule.kind != "class":
            parts.append(f"{facts['class']['name']}")
        if "context_wide" in facts:
            parts.append(f"context-wide ({facts['context_wide']:.0%} of its sequences)")
        return " · ".join(parts)


def _show_preceding(preceding: dict[int, int], vocab: list[str]) -> str:
    """'after `from` …' : the fixed tokens at their offsets, … for a free position in between."""
    deepest = max(preceding)
    pieces = [show_token(vocab[preceding[b]]) if b in preceding else "…" for b in range(deepest, 0, -1)]
    return "after " + " ".join(pieces)


# ---- a whole analysis ------------------------------------------------------------------------------


def label_analysis(analysis: Analysis, cfg: LabelConfig | None = None, *, progress: bool = True) -> list[Label]:
    """Labels of every feature of `analysis` (its own features; neurons are labelled from analysis.neurons)."""
    labeller = Labeller(analysis, cfg)
    return [
        labeller.label(i)
        for i in tqdm(
            range(analysis.d_sae), desc="label", unit="feature", disable=not progress, dynamic_ncols=True, leave=False
        )
    ]


def save_labels(
    labels: list[Label], folder: str | os.PathLike, cfg: LabelConfig, extra: dict[str, Any] | None = None
) -> Path:
    """Write `labels.json` into the analysis folder (atomically)."""
    path = Path(folder) / LABELS_FILE
    record = {
        "format": LABELS_FORMAT,
        "format_version": LABELS_FORMAT_VERSION,
        "labeller": "rules",
        "config": dataclasses.asdict(cfg),
        "split": "held out: sequences whose hash_keys(index) is odd",
        **(extra or {}),
        "features": [label.to_dict() for label in labels],
    }
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path


def read_labels(folder: str | os.PathLike) -> dict[int, dict[str, Any]]:
    """Feature id -> its label record, from `labels.json` in `folder`; {} when there is none."""
    path = Path(folder) / LABELS_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(
            f"{path} is not readable JSON ({err}); re-run `interp label --analysis {Path(folder)}`."
        ) from err
    features = data.get("features") if isinstance(data, dict) else None
    if not isinstance(features, list) or not all(
        isinstance(f, dict) and isinstance(f.get("id"), int) for f in features
    ):
        raise ValueError(
            f"{path}: field 'features' must be a list of records with an integer 'id'; "
            f"re-run `interp label --analysis {Path(folder)}`."
        )
    return {f["id"]: f for f in features}


def run_labels(
    analysis_dir: str | os.PathLike,
    cfg: LabelConfig | None = None,
    *,
    neurons: bool = True,
    llm: Any = None,
    progress: bool = True,
) -> dict[str, Path]:
    """Label an analysis folder's features (and its neurons, when it has them); write labels.json
    beside each. `llm` an `interp.llm_labels.LLMLabeller` to add explanations and their scores."""
    cfg = cfg or LabelConfig()
    analysis = Analysis.load(analysis_dir)
    written = {}
    targets = [("features", analysis)] + (
        [("neurons", analysis.neurons)] if neurons and analysis.neurons is not None else []
    )
    for name, target in targets:
        labels = label_analysis(target, cfg, progress=progress)
        extra = llm.annotate(target, labels, progress=progress) if llm is not None else None
        written[name] = save_labels(labels, target.path, cfg, extra)
    return written


# ---- command line ------------------------------------------------------------------------------


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    from sae.options import DataclassOptions

    from interp.llm_labels import add_llm_options, llm_from_args

    parser = subparsers.add_parser(
        "label",
        help="label every feature (and MLP neuron) of an analysis, scored on held-out examples",
        description="Writes labels.json beside the analysis (and neurons/labels.json): "
        "for each feature a rule built from the analysis and its held-out "
        "detection AUROC and correlation.",
    )
    parser.add_argument("--analysis", required=True, help="analysis folder written by `interp analyze`")
    parser.add_argument("--no-neurons", action="store_true", help=f"do not label the neurons in {NEURONS_DIR}/")
    options = DataclassOptions(parser.add_argument_group("labels"), LabelConfig)
    add_llm_options(parser)

    def run(args: argparse.Namespace) -> int:
        cfg = LabelConfig(**options.values(args))
        written = run_labels(args.analysis, cfg, neurons=not args.no_neurons, llm=llm_from_args(args))
        for name, path in written.items():
            labels = read_labels(path.parent)
            scores = [v["score"] for v in labels.values() if v.get("score") is not None]
            median = f", median held-out AUROC {float(np.median(scores)):.3f}" if scores else ""
            print(f"{name}: {len(labels)} labels{median} -> {path}")
        return 0

    parser.set_defaults(run=run)
