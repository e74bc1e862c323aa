"""The built-in mixed corpus `mix`: documents that switch between four sources, so that the source of each
character is a concept with exact ground truth, as the Arabic, DNA and base64 proxies of "Towards
Monosemanticity" were.

Sources, all offline and deterministic on a given interpreter:
- `python`: pieces of the standard library's `.py` files (every SOURCE_EVERY-th file);
- `english`: pieces of the packaged tinyshakespeare;
- `base64`: base64 of zlib-compressed standard-library bytes, in lines of 76 characters;
- `hex`: hex of the same kind of bytes, in lines of 64 characters.

Each document joins SEGMENTS pieces of about SEGMENT_CHARS characters (cut at line breaks), their sources
in a seeded order, each piece ending in a newline. `mix_documents()` gives (text, spans) pairs, spans
[(start, end, source)] covering the text; `source_marks(text)` finds a document's spans again by its
text, so labels come from how the corpus was built, never from a model.
"""

from __future__ import annotations

import base64
import functools
import random
import zlib
from collections.abc import Iterator

import numpy as np

from interp.model.builtin import read_text_file, shakespeare_file, stdlib_files

MIX_SOURCES = ("python", "english", "base64", "hex")
SEGMENTS = 8
SEGMENT_CHARS = 600
SOURCE_EVERY = 3  # the share of standard-library files each source reads
SEED = 0


def _pieces(text: str, size: int) -> Iterator[str]:
    """Consecutive pieces of about `size` characters, cut after a newline, each ending in one."""
    start = 0
    while start < len(text):
        end = text.find("\n", start + size)
        end = len(text) if end < 0 else end + 1
        piece = text[start:end]
        yield piece if piece.endswith("\n") else piece + "\n"
        start = end


def _encoded_lines(data: bytes, kind: str) -> str:
    if kind == "base64":
        return base64.encodebytes(data).decode("ascii")  # lines of 76 characters
    digits = data.hex()
    return "".join(digits[i : i + 64] + "\n" for i in range(0, len(digits), 64))


def _source_pieces() -> dict[str, list[str]]:
    files = stdlib_files()
    python = "".join(read_text_file(f) for f in files[::SOURCE_EVERY])
    english = read_text_file(shakespeare_file())
    compressed = [zlib.compress(f.read_bytes()) for f in files[1::SOURCE_EVERY]]
    half = len(compressed) // 2
    return {
        "python": list(_pieces(python, SEGMENT_CHARS)),
        "english": list(_pieces(english, SEGMENT_CHARS)),
        "base64": list(_pieces(_encoded_lines(b"".join(compressed[:half]), "base64"), SEGMENT_CHARS)),
        "hex": list(_pieces(_encoded_lines(b"".join(compressed[half:]), "hex"), SEGMENT_CHARS)),
    }


@functools.lru_cache(maxsize=1)
def mix_documents() -> tuple[tuple[str, tuple[tuple[int, int, str], ...]], ...]:
    """Every document of the mix, with its source spans: ((text, ((start, end, source), ...)), ...).
    The documents end when the scarcest source runs out."""
    pieces = {name: iter(found) for name, found in _source_pieces().items()}
    rng = random.Random(SEED)
    documents = []
    while True:
        order = [rng.choice(MIX_SOURCES) for _ in range(SEGMENTS)]
        chosen = [(source, next(pieces[source], None)) for source in order]
        if any(piece is None for _, piece in chosen):
            break
        spans, start = [], 0
        for source, piece in chosen:
            spans.append((start, start + len(piece), source))
            start += len(piece)
        documents.append(("".join(piece for _, piece in chosen), tuple(spans)))
    return tuple(documents)


@functools.lru_cache(maxsize=1)
def _spans_by_text() -> dict[str, tuple[tuple[int, int, str], ...]]:
    return dict(mix_documents())


def source_marks(text: str) -> dict[str, np.ndarray]:
    """`mix.SOURCE` -> [len(text)] bool: the characters of a mix document from each source (none for a
    text that is not a mix document)."""
    marks = {f"mix.{name}": np.zeros(len(text), dtype=bool) for name in MIX_SOURCES}
    for start, end, source in _spans_by_text().get(text, ()):
        marks[f"mix.{source}"][start:end] = True
    return marks
