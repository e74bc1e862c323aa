"""How much of the model's behaviour survives an SAE spliced in at one hook (`interp eval`).

Definitions (the README's "Metrics"). Over the evaluated predictions (every position but the last of
each window predicts the next token), with CE the mean next-token cross-entropy in nats and KL the
mean over predictions of KL(P_clean || P_run) = sum_v P_clean(v) (log P_clean(v) - log P_run(v)):

- CE loss recovered = (CE_zero_abl - CE_sae) / (CE_zero_abl - CE_clean): 1 when the SAE's
  reconstruction is as good as the real activation, 0 when it is as bad as zeroing it.
- delta_ce = CE_sae - CE_clean.
- KL score = (KL_abl - KL_sae) / KL_abl, KL_abl and KL_sae the KL of the zero-ablated and
  SAE-spliced runs from the clean run.
- The reconstruction metrics of `sae.metrics.ReconstructionMetrics` (FVU, explained variance, L0,
  ...) on the activations the SAE saw at the hook, one row per token (every position).

Everything is streamed: sums in float64 over batches, ratios formed at the end (a ratio of means
over the whole set, never a mean of per-batch ratios).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from interp.activations.sources import corpus_windows, model_corpus, open_model_and_sae
from interp.interventions.config import EvalConfig
from interp.interventions.splice import SpliceRecord, spliced
from interp.model.corpus import batched_windows, load_corpus
from interp.model.transformer import model_device
from sae.metrics import ReconstructionMetrics
from sae.metrics import format_table as format_reconstruction_table
from sae.progress import progress_bar


def next_token_log_probs(logits: Tensor) -> Tensor:
    """logits [batch, pos, d_vocab] -> float64 log-probabilities [batch, pos - 1, d_vocab] of the
    positions that have a next token."""
    return torch.log_softmax(logits[:, :-1].to(torch.float64), dim=-1)


def next_token_cross_entropy(log_probs: Tensor, tokens: Tensor) -> Tensor:
    """-log P(next token): log_probs [batch, pos - 1, d_vocab] (from `next_token_log_probs`),
    tokens [batch, pos] -> [batch, pos - 1] float64, in nats."""
    targets = tokens[:, 1:].to(log_probs.device, torch.long)
    return -log_probs.gather(-1, targets[..., None]).squeeze(-1)


def kl_from_clean(clean_log_probs: Tensor, log_probs: Tensor) -> Tensor:
    """KL(P_clean || P) per prediction: sum_v P_clean(v) (log P_clean(v) - log P(v)).
    Both [batch, pos - 1, d_vocab] float64 log-probabilities -> [batch, pos - 1]."""
    return (clean_log_probs.exp() * (clean_log_probs - log_probs)).sum(-1)


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator != 0 else math.nan


class SpliceMetrics:
    """Streaming sums of CE and KL for the clean, SAE and zero-ablated runs; `compute` forms the
    module docstring's ratios."""

    def __init__(self) -> None:
        self.num_predictions = 0
        self.sum_ce = {"clean": 0.0, "sae": 0.0, "zero_ablation": 0.0}
        self.sum_kl = {"sae": 0.0, "zero_ablation": 0.0}

    @torch.no_grad()
    def update(self, tokens: Tensor, clean: Tensor, sae: Tensor, zero_ablation: Tensor) -> None:
        """tokens [batch, pos]; logits [batch, pos, d_vocab] of the three runs."""
        clean_lp = next_token_log_probs(clean)
        for name, logits in (("clean", clean), ("sae", sae), ("zero_ablation", zero_ablation)):
            log_probs = clean_lp if name == "clean" else next_token_log_probs(logits)
            self.sum_ce[name] += float(next_token_cross_entropy(log_probs, tokens).sum())
            if name != "clean":
                self.sum_kl[name] += float(kl_from_clean(clean_lp, log_probs).sum())
        self.num_predictions += clean_lp.shape[0] * clean_lp.shape[1]

    def compute(self) -> dict[str, float]:
        if self.num_predictions == 0:
            raise ValueError("no predictions were evaluated: every window was shorter than 2 tokens or there was none")
        n = self.num_predictions
        ce = {name: total / n for name, total in self.sum_ce.items()}
        kl = {name: total / n for name, total in self.sum_kl.items()}
        return {
            "num_predictions": float(n),
            "ce_clean": ce["clean"],
            "ce_sae": ce["sae"],
            "ce_zero_ablation": ce["zero_ablation"],
            "ce_loss_recovered": _ratio(ce["zero_ablation"] - ce["sae"], ce["zero_ablation"] - ce["clean"]),
            "delta_ce": ce["sae"] - ce["clean"],
            "kl_sae": kl["sae"],
            "kl_zero_ablation": kl["zero_ablation"],
            "kl_score": _ratio(kl["zero_ablation"] - kl["sae"], kl["zero_ablation"]),
        }


@dataclass
class SplicedRuns:
    """Logits [batch, pos, d_vocab] of the three runs of one batch, and the SAE's record of its pass."""

    clean: Tensor
    sae: Tensor
    zero_ablation: Tensor
    record: SpliceRecord


@torch.no_grad()
def spliced_runs(bridge: Any, tokens: Tensor, sae: Any, hook_name: str) -> SplicedRuns:
    """Clean, SAE-spliced and zero-ablated runs of tokens [batch, pos] (three forward passes)."""
    tokens = tokens.to(model_device(bridge))
    clean = bridge(tokens)
    with spliced(bridge, sae, at=hook_name, record=True) as splice:
        with_sae = bridge(tokens)
    if splice.last is None:
        raise ValueError(f"hook {hook_name!r} never fired in the forward pass; this model's backend does not run it.")
    with spliced(bridge, None, at=hook_name):
        ablated = bridge(tokens)
    return SplicedRuns(clean=clean, sae=with_sae, zero_ablation=ablated, record=splice.last)


@torch.no_grad()
def evaluate_splice(
    bridge: Any, sae: Any, hook_name: str, batches: Iterable[Tensor], *, progress: bool = True
) -> dict[str, float]:
    """Splice `sae` at `hook_name` over token batches [batch, ctx]; return the SpliceMetrics and the
    ReconstructionMetrics of the hooked activations in one flat dict (`num_tokens`: activation rows)."""
    splice_metrics = SpliceMetrics()
    reconstruction = ReconstructionMetrics(int(sae.cfg.d_in), int(sae.cfg.d_sae))
    bar = progress_bar(desc="interp eval", unit="tok", disable=not progress)
    for tokens in batches:
        runs = spliced_runs(bridge, tokens, sae, hook_name)
        splice_metrics.update(tokens, runs.clean, runs.sae, runs.zero_ablation)
        reconstruction.update(runs.record.x, runs.record.x_hat, runs.record.f)
        bar.update(tokens.numel())
    bar.close()
    return {**reconstruction.compute(), **splice_metrics.compute()}


TABLE_KEYS = (
    "num_tokens",
    "ce_clean",
    "ce_sae",
    "ce_zero_ablation",
    "ce_loss_recovered",
    "delta_ce",
    "kl_sae",
    "kl_zero_ablation",
    "kl_score",
    "explained_variance",
    "fvu",
    "l0",
    "cosine",
    "dead_fraction",
)


def format_table(result: dict[str, Any]) -> str:
    return format_reconstruction_table(result, TABLE_KEYS)


def run_eval(cfg: EvalConfig, *, progress: bool = True) -> dict[str, Any]:
    """`interp eval`: open model, SAE and corpus by spec; `evaluate_splice` on `cfg.tokens` tokens of
    the corpus split (default corpus: the one the model folder records); the metrics with the
    settings they were measured with."""
    cfg.validate()
    opened = open_model_and_sae(cfg.model, cfg.sae, hook=cfg.hook, device=cfg.device)
    loaded = opened.model
    context_length = cfg.context_length or (getattr(opened.sae, "metadata", None) or {}).get("context_size")
    context_length = min(int(context_length or loaded.context_length), loaded.context_length)
    corpus_spec = cfg.corpus or model_corpus(cfg.model)
    windows = corpus_windows(
        load_corpus(corpus_spec, cfg.split), loaded, seed=cfg.corpus_seed, context_length=context_length
    )
    batches = batched_windows(windows, cfg.batch_size, max_windows=math.ceil(cfg.tokens / context_length))
    result: dict[str, Any] = evaluate_splice(loaded.bridge, opened.sae, opened.hook, batches, progress=progress)
    result.update(
        model=str(cfg.model),
        sae=str(cfg.sae),
        hook_name=opened.hook,
        corpus=corpus_spec,
        split=cfg.split,
        context_length=context_length,
        seed=cfg.corpus_seed,
    )
    return result
