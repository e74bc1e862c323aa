"""Corpora: where text comes from, split into a training part and a held-out part.

A corpus is an ordered stream of documents (str). Specs `load_corpus` understands:

- `stdlib` — the running interpreter's standard-library `.py` files (no site-packages, no test
  folders), one document per file, in sorted path order. Every machine has it; nothing downloads.
- `shakespeare` — tinyshakespeare (about 1.1 MB of Shakespeare's plays, public domain), shipped
  inside the package (`interp/model/corpora/`), read as a plain text file (below).
- `mix` — documents that switch between standard-library Python, Shakespeare's English, and base64
  and hex of compressed standard-library bytes (interp.model.mix); each character's source is known.
- a path: a text file, a `.jsonl` file (one JSON object per line with a string `text` field), a
  folder (every file below it), or a glob (`data/**/*.txt`). A plain text file is a stream with no
  document structure of its own, so it is read as documents of at most `TEXT_PIECE_CHARS`
  characters cut at line breaks.
- `hf:NAME[:CONFIG[:SPLIT]]` — a Hugging Face dataset, streamed (`datasets.load_dataset(...,
  streaming=True)`, SPLIT defaults to `train`), each record's `text` field one document.

The split is fixed by position: document i (0-based, in the order above) is held out when
i % heldout_every == heldout_every - 1, so evaluation never sees training text.

`token_sequences` turns a corpus into packed token windows of one context length, each starting
with BOS, documents separated by BOS, document order shuffled by seed; `labelled_token_sequences`
gives the same windows with per-token labels computed from each document's text.
"""

from __future__ import annotations

import glob
import itertools
import json
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from interp.model.builtin import read_text_file, shakespeare_file, stdlib_files
from interp.model.config import BUILTIN_CORPORA, SPLITS
from interp.model.mix import mix_documents

HELDOUT_EVERY = 20
TEXT_PIECE_CHARS = 8192


@dataclass(frozen=True)
class Corpus:
    """One split of one source: iterating yields its documents (non-empty str) in a fixed order.

    Iterating a corpus that turns out to hold no document raises ValueError naming the spec.
    """

    spec: str
    split: str
    documents_of_source: Callable[[], Iterator[str]]  # every document of the source, both splits
    heldout_every: int = HELDOUT_EVERY

    def __iter__(self) -> Iterator[str]:
        count = 0
        index = 0
        for document in self.documents_of_source():
            if not document:
                continue
            heldout = index % self.heldout_every == self.heldout_every - 1
            index += 1
            if self.split == "all" or heldout == (self.split == "heldout"):
                count += 1
                yield document
        if count == 0:
            raise ValueError(
                f"corpus {self.spec!r} (split {self.split!r}) has no documents: its source gave "
                f"{index} non-empty document(s) and every {self.heldout_every}th is held out; "
                "point it at more text."
            )

    def describe(self) -> dict:
        """JSON-serialisable identity of this corpus, for manifests and model folders."""
        return {"spec": self.spec, "split": self.split, "heldout_every": self.heldout_every}


def load_corpus(
    spec: str | Path, split: str = "train", *, text_field: str = "text", heldout_every: int = HELDOUT_EVERY
) -> Corpus:
    """Open a corpus by spec (see module docstring). Missing paths fail here, not on first read."""
    if split not in SPLITS:
        raise ValueError(f"unknown corpus split {split!r}; choose one of {list(SPLITS)}.")
    if heldout_every < 2:
        raise ValueError(f"heldout_every must be at least 2, got {heldout_every}.")
    spec = str(spec)
    if spec == "stdlib":
        files = stdlib_files()

        def source() -> Iterator[str]:
            return (read_text_file(f) for f in files)

    elif spec == "mix":

        def source() -> Iterator[str]:
            return (text for text, _ in mix_documents())

    elif spec.startswith("hf:"):
        source = _hf_source(spec, text_field)
    else:
        paths = [shakespeare_file()] if spec == "shakespeare" else _files_of_path_spec(spec)

        def source() -> Iterator[str]:
            return _documents_of_files(paths, text_field)

    return Corpus(spec=spec, split=split, documents_of_source=source, heldout_every=heldout_every)


def cut_at_line_breaks(text: str, max_chars: int = TEXT_PIECE_CHARS) -> Iterator[str]:
    """Consecutive pieces of `text` of at most `max_chars` characters, cut after a newline where
    one exists in the window (a single longer line is cut mid-line). Joined, they give `text` back."""
    start = 0
    while start < len(text):
        end = min(start + max_chars, len(text))
        if end < len(text):
            newline = text.rfind("\n", start, end)
            if newline >= start:
                end = newline + 1
        yield text[start:end]
        start = end


def _files_of_path_spec(spec: str) -> list[Path]:
    if any(ch in spec for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        if not files:
            raise FileNotFoundError(f"corpus glob {spec!r} matches no files; check the pattern.")
        return files
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(
            f"corpus {spec!r} is neither a built-in corpus ({', '.join(BUILTIN_CORPORA)}), 'hf:NAME', "
            "nor an existing file, folder or glob."
        )
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not files:
            raise FileNotFoundError(f"corpus folder {path} holds no files.")
        return files
    return [path]


def _documents_of_files(files: list[Path], text_field: str) -> Iterator[str]:
    for path in files:
        if path.suffix == ".jsonl":
            yield from _jsonl_documents(path, text_field)
        else:
            yield from cut_at_line_breaks(read_text_file(path))


def _jsonl_documents(path: Path, text_field: str) -> Iterator[str]:
    for line_number, line in enumerate(read_text_file(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{path}:{line_number}: not valid JSON ({err.msg}); each line must be one JSON object."
            ) from err
        text = record.get(text_field) if isinstance(record, dict) else None
        if not isinstance(text, str):
            found = sorted(record) if isinstance(record, dict) else type(record).__name__
            raise ValueError(
                f"{path}:{line_number}: record has no string field {text_field!r} (found {found}); "
                f"each JSONL line must be an object with a {text_field!r} string."
            )
        yield text


def _hf_source(spec: str, text_field: str) -> Callable[[], Iterator[str]]:
    """Open `hf:NAME[:CONFIG[:SPLIT]]` now (so a bad name fails at load time), stream it lazily."""
    parts = spec[len("hf:") :].split(":")
    if not parts[0] or len(parts) > 3:
        raise ValueError(f"Hugging Face corpus spec {spec!r} must look like hf:NAME[:CONFIG[:SPLIT]].")
    name, config, hf_split = (
        parts[0],
        (parts[1] if len(parts) > 1 and parts[1] else None),
        (parts[2] if len(parts) > 2 else "train"),
    )
    import datasets  # optional dependency, only for hf: corpora

    try:
        dataset = datasets.load_dataset(name, config, split=hf_split, streaming=True)
    except Exception as err:  # datasets raises many types (connection, not found, offline)
        raise ValueError(
            f"cannot open Hugging Face dataset {name!r} (config {config!r}, split {hf_split!r}): {err}. "
            "A dataset name needs network access; offline, pass a local folder or file instead."
        ) from err

    def documents() -> Iterator[str]:
        for index, record in enumerate(dataset):
            text = record.get(text_field)
            if not isinstance(text, str):
                raise ValueError(
                    f"Hugging Face dataset {name!r} record {index} has no string field {text_field!r} "
                    f"(fields: {sorted(record)}); pass text_field= the column that holds the text."
                )
            yield text

    return documents


class TextEncoder(Protocol):
    """What packing needs from a tokenizer (interp.model.tokenizer.Tokenizer is one)."""

    bos_id: int

    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...


class OffsetEncoder(TextEncoder, Protocol):
    """What labelled packing needs: the ids of each text with each token's (start, end) characters."""

    def encode_batch_offsets(self, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]: ...


# (document, its tokens' character offsets [(start, end)]) -> per-token labels [n_tokens, C] bool
TokenLabeller = Callable[[str, list[tuple[int, int]]], np.ndarray]


def shuffled(items: Iterable[str], seed: int, buffer_size: int) -> Iterator[str]:
    """Items in a seeded random order, holding at most `buffer_size` of them in memory.

    A corpus no larger than the buffer comes out as a uniform permutation."""
    rng = random.Random(seed)
    buffer: list[str] = []
    for item in items:
        if len(buffer) < buffer_size:
            buffer.append(item)
            continue
        i = rng.randrange(buffer_size)
        yield buffer[i]
        buffer[i] = item
    rng.shuffle(buffer)
    yield from buffer


def token_sequences(
    corpus: Iterable[str],
    tokenizer: TextEncoder,
    context_length: int,
    seed: int = 0,
    *,
    epochs: int | None = 1,
    shuffle_buffer: int = 4096,
    encode_batch_size: int = 16,
) -> Iterator[Tensor]:
    """Packed token windows: each a LongTensor [context_length] whose first token is BOS.

    The documents, in an order shuffled by `seed` (reshuffled each epoch), are tokenized and
    concatenated as BOS doc1 BOS doc2 ...; the stream is cut into consecutive windows of
    context_length tokens, and a window that does not begin at a document start gets BOS
    prepended to its context_length - 1 stream tokens. The final partial window is dropped.
    `epochs=None` repeats forever.
    """

    def encode(batch: list[str]) -> list[tuple[list[int], None]]:
        return [(ids, None) for ids in tokenizer.encode_batch(batch)]

    for window, _ in _packed(
        corpus, encode, tokenizer.bos_id, context_length, seed, epochs, shuffle_buffer, encode_batch_size
    ):
        yield window


def labelled_token_sequences(
    corpus: Iterable[str],
    tokenizer: OffsetEncoder,
    context_length: int,
    labeller: TokenLabeller,
    seed: int = 0,
    *,
    epochs: int | None = 1,
    shuffle_buffer: int = 4096,
    encode_batch_size: int = 16,
) -> Iterator[tuple[Tensor, np.ndarray]]:
    """The windows of `token_sequences` (the same ids for the same arguments), each with the labels
    of its tokens: ([context_length] ids, [context_length, C] bool), where a token's labels are
    `labeller(document, offsets)`'s row for it and a BOS token's labels are all False."""

    def encode(batch: list[str]) -> list[tuple[list[int], np.ndarray]]:
        return [
            (ids, np.asarray(labeller(text, offsets), dtype=bool))
            for text, (ids, offsets) in zip(batch, tokenizer.encode_batch_offsets(batch), strict=True)
        ]

    yield from _packed(
        corpus, encode, tokenizer.bos_id, context_length, seed, epochs, shuffle_buffer, encode_batch_size
    )


def _packed(
    corpus: Iterable[str],
    encode: Callable[[list[str]], list[tuple[list[int], np.ndarray | None]]],
    bos: int,
    context_length: int,
    seed: int,
    epochs: int | None,
    shuffle_buffer: int,
    encode_batch_size: int,
) -> Iterator[tuple[Tensor, np.ndarray | None]]:
    """The packing of `token_sequences`, carrying per-token label rows beside the ids when `encode`
    gives them (None otherwise)."""
    if context_length < 2:
        raise ValueError(f"context_length must be at least 2, got {context_length}.")
    stream: list[int] = []
    rows: list[np.ndarray] = []  # stream[i]'s labels, when labelled
    labelled, no_labels = False, None
    cursor = 0  # stream[cursor:] is not yet emitted
    epoch = 0
    while epochs is None or epoch < epochs:
        documents = shuffled(corpus, seed=seed * 1_000_003 + epoch, buffer_size=shuffle_buffer)
        for batch in _batched(documents, encode_batch_size):
            for ids, labels in encode(batch):
                stream.append(bos)
                stream.extend(ids)
                if labels is not None:
                    labelled, no_labels = True, np.zeros(labels.shape[1], dtype=bool)
                    rows.append(no_labels)
                    rows.extend(labels)
            while len(stream) - cursor >= context_length:
                if stream[cursor] == bos:
                    span, head = slice(cursor, cursor + context_length), []
                    cursor += context_length
                else:
                    span, head = slice(cursor, cursor + context_length - 1), [bos]
                    cursor += context_length - 1
                window = torch.tensor(head + stream[span], dtype=torch.long)
                yield window, np.stack([no_labels] * len(head) + rows[span]) if labelled else None
            if cursor > 1 << 16:
                del stream[:cursor]
                del rows[:cursor]
                cursor = 0
        epoch += 1


def batched_windows(windows: Iterable[Tensor], batch_size: int, max_windows: int | None = None) -> Iterator[Tensor]:
    """Token windows [ctx] -> batches [batch_size, ctx] (the last may be smaller), at most
    `max_windows` windows in all."""
    windows = iter(windows) if max_windows is None else itertools.islice(windows, max_windows)
    while chunk := list(itertools.islice(windows, batch_size)):
        yield torch.stack(chunk)


def _batched(items: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
