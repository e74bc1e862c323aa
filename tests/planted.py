"""Planted analyses: analysis artifacts of hand-made feature activations whose answers are known by
construction, built by the same streaming pass as `interp analyze` but with no model. Tests use them
for known-answer checks of labels, neurons and search; `scripts/bench_search.py` builds a 16k-feature
one of realistic shape.

    batches = token_detector_batches(tokens, feature_tokens, seed=0)
    analysis = planted_analysis(batches, vocab, AnalysisConfig(...), W_dec=W_dec)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

import torch
from torch import Tensor

from interp.features.analysis.artifact import ANALYSIS_FORMAT, ANALYSIS_FORMAT_VERSION, Analysis
from interp.features.analysis.config import AnalysisConfig
from interp.features.analysis.decoder import LogitMap, decoder_statistics
from interp.features.analysis.neuron_pass import NeuronPass
from interp.features.analysis.statistics import FeatureStatistics

BOS = 0


def zipf_tokens(n_seq: int, T: int, V: int, *, seed: int, exponent: float = 1.1) -> Tensor:
    """Token windows [n_seq, T] (int64) drawn from a Zipf-like distribution over ids 1..V-1, BOS (0) first."""
    g = torch.Generator().manual_seed(seed)
    ranks = torch.arange(1, V, dtype=torch.float64)
    tokens = torch.multinomial(ranks.pow(-exponent), n_seq * T, replacement=True, generator=g).view(n_seq, T) + 1
    tokens[:, 0] = BOS
    return tokens


def token_detector_batches(
    tokens: Tensor,
    feature_tokens: list[list[int]],
    *,
    seed: int,
    batch: int = 8,
    fire_probability: float = 1.0,
    noise_density: float = 0.0,
) -> Iterator[tuple[Tensor, Tensor]]:
    """(f [B, T, F], tokens [B, T]) batches: feature i fires on every occurrence of its tokens
    `feature_tokens[i]` (with `fire_probability`), value log-normal around 1 + i % 5; a feature with
    no tokens fires at random on a `noise_density` share of tokens."""
    g = torch.Generator().manual_seed(seed)
    F = len(feature_tokens)
    V = int(tokens.max()) + 1
    owner = torch.zeros(V, F, dtype=torch.bool)  # which features each token triggers
    for i, ids in enumerate(feature_tokens):
        owner[[t for t in ids if t < V], i] = True
    noisy = torch.tensor([not ids for ids in feature_tokens])
    scale = 1.0 + torch.arange(F) % 5
    for start in range(0, len(tokens), batch):
        window = tokens[start : start + batch]
        fires = owner[window] & (torch.rand(*window.shape, F, generator=g) < fire_probability)
        fires |= noisy & (torch.rand(*window.shape, F, generator=g) < noise_density)
        values = scale * torch.exp(0.3 * torch.randn(*window.shape, F, generator=g))
        yield torch.where(fires, values, 0.0), window


def planted_analysis(
    batches: Iterable[tuple[Tensor, Tensor]],
    token_strings: list[str],
    cfg: AnalysisConfig,
    *,
    W_dec: Tensor,
    unembed: Tensor | None = None,
    neurons: bool = False,
    expected_sequences: int = 1,
    meta: dict | None = None,
) -> Analysis:
    """Run the analysis pass on given activations. W_dec [F, d_in]; `unembed` [d_in, V] gives logit
    effects through the identity (the decoder direction read directly by the unembedding);
    `neurons=True` treats d_in as MLP neurons whose activations are x = f @ W_dec, analysed as in
    `interp analyze` (the `neurons` sub-artifact)."""
    F, d_in = W_dec.shape
    V = len(token_strings)
    ignored = [BOS] if cfg.ignore_bos else []
    stats: FeatureStatistics | None = None
    neuron_pass = None
    for f, tokens in batches:
        if stats is None:
            T = tokens.shape[1]
            stats = FeatureStatistics(F, V, T, cfg, ignored_ids=ignored, expected_sequences=expected_sequences)
            if neurons:
                neuron_pass = NeuronPass(W_dec, V, T, cfg, ignored_ids=ignored, expected_sequences=expected_sequences)
        stats.update(f, tokens)
        if neuron_pass is not None:
            neuron_pass.update(f @ W_dec, f, tokens)
    if stats is None:
        raise ValueError("planted_analysis got no batches.")
    tensors = stats.result()
    logits = (
        LogitMap(None, False, None, unembed.float(), "planted: decoder direction @ unembed")
        if unembed is not None
        else None
    )
    tensors.update(decoder_statistics(W_dec, logits, cfg, neurons=neurons))
    if logits is not None:
        tensors["logit_directions"], tensors["unembed"] = W_dec.float().clone(), unembed.float()
    record = {
        "format": ANALYSIS_FORMAT,
        "format_version": ANALYSIS_FORMAT_VERSION,
        "hook_name": "planted",
        "context_length": stats.T,
        "vocab_size": V,
        "ignored_token_ids": ignored,
        "model": {"name": "planted"},
        "sae": {"d_in": d_in, "d_sae": F, "architecture": "planted"},
        "config": dataclasses.asdict(cfg),
        "logit_effects": logits.basis if logits else None,
        "logit_effects_missing": None if logits else "planted analysis without an unembedding",
        "neurons_written": neurons,
        **stats.flags(),
        **(meta or {}),
    }
    analysis = Analysis(meta=record, tensors=tensors, token_strings=token_strings)
    if neuron_pass is not None:
        analysis.neurons = neuron_pass.analysis(record, token_strings, logits)
    return analysis
