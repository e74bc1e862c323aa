"""The tokens a scorecard reads: windows spread over every document of a split, their concept labels,
which labels the model can see, and the documents that make the folds.

Windows are those `interp capture` makes for the corpus, split and seed (documents packed BOS doc1
BOS doc2 ...). When the split holds more than the token budget, the windows read are evenly spaced
over all of them, so every document contributes in proportion to its length (a prefix would hold a
few documents only, and concept frequencies differ wildly between documents).

A window that continues a document starts with an inserted BOS: the model cannot see what came
before. A positive label there is masked (not scored, for that concept) while it lies in a run of
positives that began at the window's first token, since the span it belongs to opened before the
window (a docstring whose opening quotes the model never saw).

Folds are made of whole documents, balanced by token count: units, thresholds and probes are
chosen on the other folds' documents and scored on the fold's own, rotating, so every document is
scored once, by choices made without it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from interp.model.corpus import labelled_token_sequences


@dataclass
class ScoredTokens:
    """The non-BOS positions of W windows, in window order. N scored tokens, C concepts, D documents."""

    ids: Tensor  # [N] token ids
    prev_ids: Tensor  # [N] the previous position's id in the window (BOS for the first)
    next_ids: Tensor  # [N] the next token's id, -1 at a window's last position
    labels: Tensor  # [N, C] bool
    visible: Tensor  # [N, C] bool: False where a positive's span opened before its window
    document: Tensor  # [N] long: the document (0..D-1) each token comes from
    fold: Tensor  # [N] long: the fold of its document
    windows: Tensor  # [W, T] every window read, BOS included
    kept: Tensor  # [W*T] bool: which positions of the flattened windows are scored (not BOS)
    documents: int  # D
    folds: int  # K

    def fold_masks(self) -> list[tuple[Tensor, Tensor]]:
        """Per fold: ([N] selection mask, [N] test mask)."""
        return [(self.fold != f, self.fold == f) for f in range(self.folds)]


def carried_runs(labels: np.ndarray, continues: np.ndarray) -> np.ndarray:
    """[W, T, C] bool: the positives of windows that continue a document (continues [W] bool) that lie in
    a run of positives starting at position 1 (position 0 is the inserted BOS). labels [W, T, C] bool."""
    run = np.logical_and.accumulate(labels[:, 1:, :], axis=1)
    out = np.zeros_like(labels)
    out[:, 1:, :] = run & continues[:, None, None]
    return out


def fold_of_documents(sizes: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """[D] fold of each document: largest first, each to the fold with the fewest tokens so far (sizes [D]
    token counts), so folds hold whole documents and similar token counts. The seed orders documents of
    equal size only: on documents of distinct sizes the folds are the same for every seed."""
    order = np.random.default_rng(seed).permutation(len(sizes))
    order = order[np.argsort(-sizes[order], kind="stable")]  # largest first, ties in the seeded order
    totals = np.zeros(folds, dtype=np.int64)
    fold = np.zeros(len(sizes), dtype=np.int64)
    for d in order:
        fold[d] = int(np.argmin(totals))
        totals[fold[d]] += sizes[d]
    return fold


def read_windows(
    corpus, tokenizer, context_length: int, labeller: Callable, seed: int
) -> tuple[Tensor, np.ndarray, np.ndarray]:
    """Every window of the corpus: ids [W, T], labels [W, T, C] bool and document-start marks [W, T]
    bool (True on each document's first token)."""

    def with_starts(text: str, offsets: list[tuple[int, int]]) -> np.ndarray:
        labels = np.asarray(labeller(text, offsets), dtype=bool)
        first = np.zeros((len(offsets), 1), dtype=bool)
        first[:1] = True
        return np.concatenate([labels, first], axis=1)

    pairs = list(labelled_token_sequences(corpus, tokenizer, context_length, with_starts, seed=seed))
    if len(pairs) < 2:
        raise ValueError(
            f"corpus {corpus.spec!r} ({corpus.split}) gave {len(pairs)} window(s); a scorecard needs two or more."
        )
    windows = torch.stack([w for w, _ in pairs])
    marks = np.stack([m for _, m in pairs])
    return windows, marks[..., :-1], marks[..., -1]


def scored_tokens(
    windows: Tensor, labels: np.ndarray, starts: np.ndarray, bos_id: int, *, tokens: int, folds: int, fold_seed: int
) -> ScoredTokens:
    """The scored tokens of at most `tokens` positions (whole windows evenly spaced over all of them).

    windows [W, T] ids, labels [W, T, C] bool, starts [W, T] bool document starts."""
    W, T = windows.shape
    document_of = np.cumsum(starts.reshape(-1)).reshape(W, T) - 1  # BOS positions join the previous document
    continues = ~starts[:, 1]
    keep_windows = max(2, min(W, -(-tokens // T)))
    chosen = np.unique(np.linspace(0, W - 1, keep_windows).round().astype(np.int64))
    windows, labels = windows[chosen], labels[chosen]
    visible = ~carried_runs(labels, continues[chosen])
    document_of = document_of[chosen]
    kept = (windows != bos_id).flatten()
    flat_docs = torch.from_numpy(document_of.reshape(-1))[kept]
    _, document = torch.unique(flat_docs, return_inverse=True)  # documents renumbered 0..D-1
    D = int(document.max()) + 1
    sizes = torch.bincount(document, minlength=D).numpy()
    if folds > D:
        raise ValueError(
            f"the scored windows hold {D} document(s), fewer than the {folds} folds; read more tokens "
            "(--tokens) or use fewer folds (--folds)."
        )
    fold_of = torch.from_numpy(fold_of_documents(sizes, folds, fold_seed))
    previous = torch.full_like(windows, bos_id)
    previous[:, 1:] = windows[:, :-1]
    following = torch.full_like(windows, -1)
    following[:, :-1] = windows[:, 1:]
    C = labels.shape[-1]
    return ScoredTokens(
        ids=windows.flatten()[kept],
        prev_ids=previous.flatten()[kept],
        next_ids=following.flatten()[kept],
        labels=torch.from_numpy(labels.reshape(-1, C))[kept],
        visible=torch.from_numpy(visible.reshape(-1, C))[kept],
        document=document,
        fold=fold_of[document],
        windows=windows,
        kept=kept,
        documents=D,
        folds=folds,
    )
