"""A language model as a compressor: held-out bits per byte, beside gzip and xz on the same bytes.

A model that gives the next token probability p codes it in -log2 p bits (arithmetic coding gets
within a few bits of that over a whole text), so

    bits per byte = sum over predicted tokens of -log2 p(token) / (UTF-8 bytes of those tokens)

over the held-out windows [n, ctx]: the predicted tokens are windows[:, 1:] (the first token of a
window has no context), and BOS tokens count their bits but no bytes. The compressors get exactly
those bytes, concatenated. A model predicting the uniform distribution over V ids scores
log2(V) / (mean bytes per predicted token).
"""

from __future__ import annotations

import gzip
import lzma
import math

from torch import Tensor

COMPRESSORS = ("gzip -9", "xz -9e")


def predicted_bytes(windows: Tensor, token_bytes: list[bytes]) -> bytes:
    """The bytes of windows[:, 1:] in order (windows [n, ctx] int64), BOS and other specials empty."""
    return b"".join(token_bytes[i] for i in windows[:, 1:].flatten().tolist())


def bits_per_byte(mean_loss_nats: float, windows: Tensor, num_bytes: int) -> float:
    """Bits per byte of a model whose mean next-token cross-entropy over windows[:, 1:] is
    mean_loss_nats (nats per predicted token); num_bytes: the bytes of those tokens."""
    if num_bytes <= 0:
        raise ValueError("the held-out tokens hold no bytes; evaluate on more text.")
    predictions = windows.shape[0] * (windows.shape[1] - 1)
    return mean_loss_nats * predictions / math.log(2) / num_bytes


def compressor_bits_per_byte(data: bytes) -> dict[str, float]:
    """Bits per byte of `gzip -9` and `xz -9e` (the same settings as the command-line tools) on data."""
    if not data:
        raise ValueError("cannot compress an empty byte string.")
    sizes = {
        "gzip -9": len(gzip.compress(data, compresslevel=9, mtime=0)),
        "xz -9e": len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)),
    }
    return {name: 8 * size / len(data) for name, size in sizes.items()}
