"""Tokenizers: a byte-level BPE trained here, or a Hugging Face checkpoint's own.

Both are a `tokenizers.Tokenizer` underneath (a Hugging Face checkpoint's fast tokenizer exposes
its backend), wrapped in one class with the few operations the toolkit needs. Encoding never adds
special tokens; callers place BOS themselves (see `interp.model.corpus.token_sequences`).

Our tokenizer has one special token, `<|endoftext|>` (id 0), which is both BOS and the document
separator, as in GPT-2.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from pathlib import Path

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

BOS_TOKEN = "<|endoftext|>"
DEFAULT_VOCAB_SIZE = 4096
TOKENIZER_FILE = "tokenizer.json"


class Tokenizer:
    """Text <-> token ids. `bos_id` starts every sequence and separates documents."""

    def __init__(self, backend: tokenizers.Tokenizer, bos_id: int):
        self.backend = backend
        self.bos_id = bos_id

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included (the model's d_vocab must be at least this)."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=False)]

    def encode_batch_offsets(self, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        """Each text's ids with each token's (start, end) character offsets into the text (the
        tokens of one multi-byte character share its offsets)."""
        return [(e.ids, e.offsets) for e in self.backend.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=False)

    def token_strings(self) -> list[str]:
        """A readable string for every id, for dashboards: the exact text of the token, with a
        byte that is only part of a UTF-8 character shown as a `\\xNN` escape."""
        special = {i: t.content for i, t in self.backend.get_added_tokens_decoder().items()}
        byte_level = isinstance(self.backend.decoder, decoders.ByteLevel)
        strings = []
        for i in range(self.vocab_size):
            piece = self.backend.id_to_token(i)
            if i in special:
                strings.append(special[i])
            elif piece is None:
                strings.append("")
            elif byte_level and all(ch in _byte_of_char() for ch in piece):
                strings.append(bytes(_byte_of_char()[ch] for ch in piece).decode("utf-8", errors="backslashreplace"))
            elif not byte_level and (byte := _fallback_byte(piece)) is not None:
                strings.append(bytes([byte]).decode("utf-8", errors="backslashreplace"))
            else:
                strings.append(self.backend.decode([i], skip_special_tokens=False))
        return strings

    def token_bytes(self) -> list[bytes]:
        """The UTF-8 bytes every id stands for in decoded text (b"" for special tokens): exact for a
        byte-level BPE and for byte-fallback pieces (`<0xNN>`), the decoded text of the id alone otherwise."""
        special = set(self.backend.get_added_tokens_decoder())
        byte_level = isinstance(self.backend.decoder, decoders.ByteLevel)
        table = _byte_of_char()
        out = []
        for i in range(self.vocab_size):
            piece = self.backend.id_to_token(i)
            if i in special or piece is None:
                out.append(b"")
            elif byte_level and all(ch in table for ch in piece):
                out.append(bytes(table[ch] for ch in piece))
            elif not byte_level and (byte := _fallback_byte(piece)) is not None:
                out.append(bytes([byte]))
            else:
                out.append(self.backend.decode([i], skip_special_tokens=False).encode("utf-8"))
        return out

    def fragment_ids(self) -> list[int]:
        """Ids whose bytes are not whole UTF-8 characters (a lone byte of a multi-byte character, from
        byte-level BPE or byte fallback). Their strings show `\\xNN` escapes, which literal text can
        also hold, so pages mark them by id."""
        out = []
        for i, data in enumerate(self.token_bytes()):
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                out.append(i)
        return out

    def save(self, folder: str | Path) -> Path:
        """Write `tokenizer.json` into `folder` (created if missing); returns the file path."""
        path = Path(folder) / TOKENIZER_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(path))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Load our `tokenizer.json` (the file or the folder holding it)."""
        path = Path(path)
        if path.is_dir():
            path = path / TOKENIZER_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"tokenizer file {path} does not exist; train one with interp.model.tokenizer.train_tokenizer."
            )
        try:
            backend = tokenizers.Tokenizer.from_file(str(path))
        except Exception as err:  # the Rust side raises its own Exception type
            raise ValueError(f"{path} is not a readable tokenizers JSON file: {err}") from err
        bos_id = backend.token_to_id(BOS_TOKEN)
        if bos_id is None:
            raise ValueError(
                f"tokenizer {path} has no {BOS_TOKEN!r} token to use as BOS; retrain it with train_tokenizer."
            )
        return cls(backend, bos_id)

    @classmethod
    def from_pretrained(cls, folder_or_name: str | Path) -> Tokenizer:
        """A Hugging Face checkpoint's tokenizer (transformers' AutoTokenizer; must be a fast one).
        BOS is the checkpoint's bos token, else its eos token (GPT-2's <|endoftext|>)."""
        from transformers import AutoTokenizer  # optional dependency, only for HF checkpoints

        hf = AutoTokenizer.from_pretrained(str(folder_or_name))
        if not getattr(hf, "is_fast", False):
            raise ValueError(
                f"the tokenizer of {folder_or_name} has no fast (Rust) version; only fast tokenizers are supported."
            )
        bos_id = hf.bos_token_id if hf.bos_token_id is not None else hf.eos_token_id
        if bos_id is None:
            raise ValueError(
                f"the tokenizer of {folder_or_name} has neither a bos nor an eos token to start sequences with."
            )
        return cls(hf.backend_tokenizer, bos_id)


def train_tokenizer(
    texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE, *, min_frequency: int = 2, show_progress: bool = True
) -> Tokenizer:
    """Train a byte-level BPE on `texts` (e.g. a Corpus). Id 0 is `<|endoftext|>` (BOS);
    the 256 byte symbols come next, so any text encodes and decodes back exactly."""
    if vocab_size < 257 + 1:
        raise ValueError(f"vocab_size must exceed 257 (one special token and 256 bytes), got {vocab_size}.")
    backend = tokenizers.Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[BOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return Tokenizer(backend, backend.token_to_id(BOS_TOKEN))


def _fallback_byte(piece: str) -> int | None:
    """The byte of a byte-fallback piece such as `<0xD7>` (sentencepiece-style vocabularies); None otherwise."""
    if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        try:
            return int(piece[3:5], 16)
        except ValueError:
            return None
    return None


@cache
def _byte_of_char() -> dict[str, int]:
    """The inverse of byte-level BPE's byte -> printable character table (GPT-2's bytes_to_unicode)."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return {c: b for b, c in chars.items()}
