"""How much of the model's behaviour survives an SAE spliced in at one hook, and `interp eval`.

Definitions (DESIGN.md, "Metrics"). Over the evaluated predictions (every position but the last of
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

import argparse
import json
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from sae.metrics import ReconstructionMetrics
from torch import Tensor
from tqdm import tqdm

from interp.splice import SplicedRuns, check_hook, sae_hook_name, spliced_runs

DEFAULT_TOKENS = 32768
DEFAULT_BATCH_SIZE = 16  # context windows per forward pass


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


def batched_windows(sequences: Iterable[Tensor], batch_size: int, max_windows: int | None) -> Iterator[Tensor]:
    """Windows [ctx] -> batches [batch_size, ctx] (the last may be smaller), at most max_windows in all."""
    batch: list[Tensor] = []
    taken = 0
    for window in sequences:
        if max_windows is not None and taken >= max_windows:
            break
        batch.append(window)
        taken += 1
        if len(batch) == batch_size:
            yield torch.stack(batch)
            batch = []
    if batch:
        yield torch.stack(batch)


@torch.no_grad()
def evaluate_splice(
    bridge: Any, sae: Any, hook_name: str, batches: Iterable[Tensor], *, progress: bool = True
) -> dict[str, float]:
    """Splice `sae` at `hook_name` over token batches [batch, ctx]; return the SpliceMetrics and the
    ReconstructionMetrics of the hooked activations in one flat dict (`num_tokens`: activation rows)."""
    check_hook(bridge, hook_name)
    splice_metrics = SpliceMetrics()
    reconstruction = ReconstructionMetrics(int(sae.cfg.d_in), int(sae.cfg.d_sae))
    bar = tqdm(desc="interp eval", unit="tok", disable=not progress)
    for tokens in batches:
        runs: SplicedRuns = spliced_runs(bridge, tokens, sae, hook_name)
        splice_metrics.update(tokens, runs.clean, runs.sae, runs.zero_ablation)
        reconstruction.update(runs.record.x, runs.record.x_hat, runs.record.f)
        bar.update(tokens.numel())
    bar.close()
    return {**reconstruction.compute(), **splice_metrics.compute()}


# --- CLI ---------------------------------------------------------------------------------------

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
    width = max(map(len, TABLE_KEYS))
    return "\n".join(
        f"{key:<{width}}  {int(result[key]) if key == 'num_tokens' else format(result[key], '.6g')}"
        for key in TABLE_KEYS
    )


def model_corpus(model_spec: str) -> str:
    """The corpus a model folder records it was trained on (config.json training.corpus), else stdlib."""
    config = Path(model_spec) / "config.json"
    if config.is_file():
        try:
            corpus = json.loads(config.read_text()).get("training", {}).get("corpus")
        except (json.JSONDecodeError, AttributeError):
            corpus = None
        if isinstance(corpus, str) and corpus:
            return corpus
    return "stdlib"


def run_eval(args: argparse.Namespace) -> int:
    from sae.io import load_sae

    from interp.corpus import load_corpus, token_sequences
    from interp.model import load_model

    if args.tokens <= 0 or args.batch_size <= 0:
        raise ValueError(f"--tokens and --batch-size must be positive, got {args.tokens} and {args.batch_size}")
    loaded = load_model(args.model, device=args.device)
    device = next(loaded.bridge.parameters()).device
    sae = load_sae(args.sae, device=device)
    sae.eval()
    hook_name = sae_hook_name(sae, args.hook)
    context_length = (
        args.context_length or (getattr(sae, "metadata", None) or {}).get("context_size") or loaded.context_length
    )
    context_length = min(int(context_length), loaded.context_length)
    corpus_spec = args.corpus or model_corpus(args.model)
    corpus = load_corpus(corpus_spec, args.split)
    windows = math.ceil(args.tokens / context_length)
    sequences = token_sequences(corpus, loaded.tokenizer, context_length, seed=args.seed)
    result: dict[str, Any] = evaluate_splice(
        loaded.bridge, sae, hook_name, batched_windows(sequences, args.batch_size, windows)
    )
    result.update(
        model=str(args.model),
        sae=str(args.sae),
        hook_name=hook_name,
        corpus=corpus_spec,
        split=args.split,
        context_length=context_length,
        seed=args.seed,
    )
    print(format_table(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="CE loss recovered, delta CE, KL score and reconstruction metrics of an SAE spliced into a model",
        description="Run the model on held-out corpus text three ways (clean, with the SAE's reconstruction at its "
        "hook, with the hook zero-ablated) and report CE loss recovered, delta CE, KL score and the "
        "reconstruction metrics of the hooked activations.",
    )
    p.add_argument("--model", required=True, help="model folder or Hugging Face model name")
    p.add_argument("--sae", required=True, help="SAE folder (SAELens or sparsify layout)")
    p.add_argument("--tokens", type=int, default=DEFAULT_TOKENS, help=f"tokens to evaluate (default {DEFAULT_TOKENS})")
    p.add_argument(
        "--corpus", default=None, help="corpus spec (default: the corpus the model folder records, else stdlib)"
    )
    p.add_argument(
        "--split",
        default="heldout",
        choices=("heldout", "train", "all"),
        help="corpus split (default heldout: text the model and SAE were not trained on)",
    )
    p.add_argument("--hook", default=None, help="hook to splice at (default: the SAE's metadata hook_name)")
    p.add_argument(
        "--context-length",
        type=int,
        default=None,
        help="tokens per window (default: the SAE's context_size, else the model's)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help=f"windows per forward pass (default {DEFAULT_BATCH_SIZE})",
    )
    p.add_argument("--seed", type=int, default=0, help="document-order seed of the token windows (default 0)")
    p.add_argument("--device", default=None, help="torch device (default: the model's)")
    p.add_argument("--json", help="write the metrics as flat-key JSON to this file")
    p.set_defaults(run=run_eval)


__all__ = [
    "SpliceMetrics",
    "batched_windows",
    "evaluate_splice",
    "kl_from_clean",
    "next_token_cross_entropy",
    "next_token_log_probs",
    "register_cli",
]
