"""Bits per byte: known answers for the model-as-compressor figure and the compressors beside it."""

from __future__ import annotations

import gzip
import lzma
import math
import random

import pytest
import torch

from interp.model.compression import bits_per_byte, compressor_bits_per_byte, predicted_bytes
from interp.model.config import ModelConfig
from interp.model.corpus import load_corpus
from interp.model.tokenizer import train_tokenizer
from interp.model.training import _first_windows, evaluate
from interp.model.transformer import build_native_model


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(list(load_corpus("shakespeare", "train"))[:20], vocab_size=400, show_progress=False)


def random_text(seed: int, n: int = 3000) -> str:
    rng = random.Random(seed)
    words = ["the", "king", "é", "naïve", "—", "\n", "    ", "def", "λx", "0x7f", "'", "🙂"]
    return " ".join(rng.choice(words) for _ in range(n))


def test_token_bytes_concatenate_to_the_text(tokenizer):
    text = random_text(1)
    table = tokenizer.token_bytes()
    assert len(table) == tokenizer.vocab_size and table[tokenizer.bos_id] == b""
    assert b"".join(table[i] for i in tokenizer.encode(text)) == text.encode("utf-8")


def test_predicted_bytes_are_the_text_after_each_window_start(tokenizer):
    ids = tokenizer.encode(random_text(2))
    windows = torch.tensor([[tokenizer.bos_id, *ids[:40]], [tokenizer.bos_id, *ids[40:80]]])
    expected = (tokenizer.decode(ids[:40]) + tokenizer.decode(ids[40:80])).encode("utf-8")
    assert predicted_bytes(windows, tokenizer.token_bytes()) == expected


def test_uniform_model_scores_log2_vocab_over_bytes_per_token(tokenizer):
    """A model whose unembedding is zero predicts the uniform distribution: ln V nats per token,
    so log2(V) / (bytes per predicted token) bits per byte."""
    cfg = ModelConfig(d_model=32, n_heads=2, d_mlp=64, context_length=32, d_vocab=tokenizer.vocab_size)
    model = build_native_model(cfg).eval()
    with torch.no_grad():
        model.head.weight.zero_()  # logits all 0 (the head has no bias)
    windows = _first_windows(load_corpus("shakespeare", "heldout"), tokenizer, 32, 12)
    loss = evaluate(model, windows)
    assert loss == pytest.approx(math.log(tokenizer.vocab_size), rel=1e-6)
    num_bytes = len(predicted_bytes(windows, tokenizer.token_bytes()))
    predictions = windows.shape[0] * (windows.shape[1] - 1)
    expected = math.log2(tokenizer.vocab_size) / (num_bytes / predictions)
    assert bits_per_byte(loss, windows, num_bytes) == pytest.approx(expected, rel=1e-6)


def test_compressors_are_gzip_9_and_xz_9e_in_bits_per_byte():
    data = random_text(3).encode("utf-8")
    figures = compressor_bits_per_byte(data)
    assert figures["gzip -9"] == 8 * len(gzip.compress(data, compresslevel=9, mtime=0)) / len(data)
    assert figures["xz -9e"] == 8 * len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)) / len(data)
    assert compressor_bits_per_byte(b"ab" * 50_000)["xz -9e"] < 0.05  # repetition compresses to almost nothing
    noise = random.Random(0).randbytes(100_000)
    assert all(bpb > 7.9 for bpb in compressor_bits_per_byte(noise).values())  # noise does not compress
    with pytest.raises(ValueError, match="empty"):
        compressor_bits_per_byte(b"")
