"""Labelling: for each feature, candidate rules built from build evidence, the best one chosen on
build data and scored on held-out data; and the run over a whole analysis folder."""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from interp.features.analysis.artifact import Analysis
from interp.features.labels.config import LabelConfig
from interp.features.labels.evidence import Evidence, Examples
from interp.features.labels.files import save_labels
from interp.features.labels.rules import Rule, auroc, pearson, show_list, show_token
from sae.progress import progress_bar

# ---- scores --------------------------------------------------------------------------------------


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
        self.data = Evidence(analysis)

    def label(self, i: int) -> Label:
        d, L = self.data, self.data.left
        if d.arrays["fire_count"][i] == 0:
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
                where = (s, p - d.left + int(w))
                if where not in seen:
                    seen.add(where)
                    held_mass[int(ex.tokens[k, w])] += float(ex.acts[k, w])
        ids, mass = d.arrays["token_mass_ids"][i], d.arrays["token_mass"][i]
        build = {int(t): max(float(m) - held_mass.get(int(t), 0.0), 0.0) for t, m in zip(ids, mass) if t >= 0}
        total = max(float(d.arrays["activation_sum"][i]) - sum(held_mass.values()), 0.0)
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
        d, cfg, L, vocab = self.data, self.cfg, self.data.left, self.data.vocab
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
            token_rule = Rule("tokens", f"fires on {show_list(chosen, vocab)}{more}", tokens=weights)
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
                    rules.append(Rule("next", f"before {show_list(named, vocab, 3)}", next_tokens=named))
        # context-wide: active on a large share of its sequences' tokens
        shares_in_seq = d.arrays["top_seq_share"][i][d.arrays["top_seq"][i] >= 0]
        build_top = ~d.top_held[i][d.arrays["top_seq"][i] >= 0]
        if build_top.any():
            wide = float(shares_in_seq[build_top].mean())
            if wide >= cfg.context_wide_share:
                facts["context_wide"] = round(wide, 4)
                named = self._context_tokens(top_ctx)
                if named:
                    rules.append(Rule("context", f"in context with {show_list(named, vocab)}", context_tokens=named))
        return rules

    def _context_tokens(self, top_ctx: np.ndarray) -> list[int]:
        """Tokens in the preceding window of most build top examples, far above their base rate."""
        d, cfg, L = self.data, self.cfg, self.data.left
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
            parts.append("predicts " + show_list(facts["predicts"]["named"], vocab, 3))
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
        for i in progress_bar(
            range(analysis.d_sae), desc="label", unit="feature", disable=not progress, dynamic_ncols=True, leave=False
        )
    ]


def run_labels(
    analysis_dir: str | os.PathLike,
    cfg: LabelConfig | None = None,
    *,
    neurons: bool = True,
    llm: Any = None,
    progress: bool = True,
) -> dict[str, Path]:
    """Label an analysis folder's features (and its neurons, when it has them); write labels.json
    beside each. `llm` an `interp.features.labels.llm.LLMLabeller` to add explanations and their scores."""
    cfg = cfg or LabelConfig()
    analysis = Analysis.load(analysis_dir)
    written = {}
    targets = [("features", analysis)] + (
        [("neurons", analysis.neurons)] if neurons and analysis.neurons is not None else []
    )
    labelled = [(name, target, label_analysis(target, cfg, progress=progress)) for name, target in targets]
    for name, target, labels in labelled:
        written[name] = save_labels([label.to_dict() for label in labels], target.path, dataclasses.asdict(cfg))
    if llm is not None:  # after the rule labels are on disk: an endpoint that fails loses none of them
        for name, target, labels in labelled:
            extra = llm.annotate(target, labels, progress=progress)
            written[name] = save_labels(
                [label.to_dict() for label in labels], target.path, dataclasses.asdict(cfg), extra
            )
    return written
