"""What removing a feature does to the model on its own top examples.

For feature i and each of its first `examples` top examples (window s, peak position p): the window
up to p runs twice, clean and with f_i set to 0 at every position (interp.interventions.intervene: the SAE spliced
in with its error term, so only what f_i writes is removed). The change in log p of the actual next
token window[s, p + 1] at p is the example's effect; its mean over the examples is the feature's, and
the tokens whose log p falls most on average are what the feature was predicting.

Jobs run in blocks of features (so the per-feature sums over the vocabulary stay small), sorted by
peak position within a block so that each batch is cut to its longest prefix.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from interp.activations.hooks import ActivationHooks
from interp.interventions.intervene import ablate_per_row
from interp.interventions.splice import spliced

SUM_CELLS = 1 << 23  # feature-block x vocabulary float32 sums held at once (2 x 32 MiB)


@torch.no_grad()
def ablation_effects(
    bridge: Any,
    sae: Any,
    hook_name: str,
    windows: Tensor,
    top_seq: Tensor,
    top_pos: Tensor,
    *,
    examples: int,
    drops: int,
    batch_size: int,
) -> dict[str, Tensor]:
    """windows [S, T] token ids (window index = top_seq), top_seq / top_pos [F, K] (-1: no example).

    Returns ablation_change [F, K] (Δ log p of each example's next token, nats; NaN where not run),
    ablation_mean [F] (their mean; NaN for a feature with none), ablation_drop_ids /
    ablation_drop_values [F, drops] (tokens whose log p falls most on average, and that mean fall)."""
    F, K = top_seq.shape
    T = windows.shape[1]
    vocab = int(bridge.cfg.d_vocab)
    change = torch.full((F, K), float("nan"))
    drop_ids = torch.full((F, drops), -1, dtype=torch.int32)
    drop_values = torch.zeros(F, drops)
    slot = torch.arange(K)[None, :] < examples
    runnable = (top_seq >= 0) & (top_pos < T - 1) & slot  # the next token is inside the window
    block = max(1, SUM_CELLS // vocab)
    for first in range(0, F, block):
        features, ks = torch.nonzero(runnable[first : first + block], as_tuple=True)
        if not len(features):
            continue
        features = features + first
        seq, pos = top_seq[features, ks], top_pos[features, ks]
        next_ids = windows[seq, pos + 1].long()
        n = min(block, F - first)
        clean_sums, clean_next = _clean_pass(bridge, windows, seq, pos, next_ids, features - first, n, batch_size)
        ablated_sums = torch.zeros(n, vocab)
        order = torch.argsort(pos, stable=True)  # similar lengths share a batch
        for start in range(0, len(order), batch_size):
            jobs = order[start : start + batch_size]
            tokens = windows[seq[jobs], : int(pos[jobs].max()) + 1]
            with spliced(bridge, sae, at=hook_name, edit=ablate_per_row(features[jobs]), with_error=True):
                logp = _logprobs_at(bridge, tokens, pos[jobs])  # [B, V]
            change[features[jobs], ks[jobs]] = logp[torch.arange(len(jobs)), next_ids[jobs]] - clean_next[jobs]
            ablated_sums.index_add_(0, features[jobs] - first, logp)
        counts = torch.bincount(features - first, minlength=n)
        mean = (ablated_sums - clean_sums) / counts.clamp_min(1)[:, None]
        values, ids = torch.topk(mean, min(drops, vocab), dim=1, largest=False)  # most negative first
        has = counts > 0
        rows = torch.arange(first, first + n)[has]
        drop_ids[rows, : ids.shape[1]] = ids[has].to(torch.int32)
        drop_values[rows, : values.shape[1]] = values[has]
    valid = ~torch.isnan(change)
    mean_change = torch.where(
        valid.any(1), torch.nan_to_num(change).sum(1) / valid.sum(1).clamp_min(1), torch.tensor(float("nan"))
    )
    return {
        "ablation_change": change,
        "ablation_mean": mean_change,
        "ablation_drop_ids": drop_ids,
        "ablation_drop_values": drop_values,
    }


def _clean_pass(
    bridge: Any,
    windows: Tensor,
    seq: Tensor,
    pos: Tensor,
    next_ids: Tensor,
    rows: Tensor,
    n: int,
    batch_size: int,
) -> tuple[Tensor, Tensor]:
    """One clean run of each window the jobs (seq, pos) [J] lie in. Returns the sums [n, V] of the clean
    log p at each job's position into row `rows` [J], and each job's clean log p of its next token [J]."""
    sums = torch.zeros(n, int(bridge.cfg.d_vocab))
    clean_next = torch.zeros(len(seq))
    used = torch.unique(seq)
    for start in range(0, len(used), batch_size):
        batch = used[start : start + batch_size]
        in_batch = torch.nonzero(torch.isin(seq, batch)).squeeze(1)  # the jobs in these windows
        where = torch.searchsorted(batch, seq[in_batch])  # their row in the batch
        logp = _logprobs_at(bridge, windows[batch, : int(pos[in_batch].max()) + 1], pos[in_batch], where)
        clean_next[in_batch] = logp[torch.arange(len(in_batch)), next_ids[in_batch]]
        sums.index_add_(0, rows[in_batch], logp)
    return sums, clean_next


def _logprobs_at(model: Any, tokens: Tensor, positions: Tensor, rows: Tensor | None = None) -> Tensor:
    """log softmax of model(tokens [B, L]) at (rows [J] (default 0..B-1), positions [J]): [J, V] float32
    on the CPU. The pass stops at the last block's residual stream, and the final norm and the
    unembedding run on those J positions only (the unembedding of every position is most of a small
    model's forward pass); a model without a final norm runs whole."""
    device = next(model.parameters()).device
    tokens = tokens.to(device, torch.long)
    rows = (torch.arange(len(positions)) if rows is None else rows).to(device)
    positions = positions.to(device)
    if not hasattr(model, "ln_final"):
        logits = model(tokens)[rows, positions]
    else:
        final = f"blocks.{int(model.cfg.n_layers) - 1}.hook_resid_post"
        with ActivationHooks(model, [final], stop_at_layer=None) as hooks:
            resid = hooks.run(tokens)[final]  # [B, L, d_model]
        logits = model.unembed(model.ln_final(resid[rows, positions][:, None]))[:, 0]
    return torch.log_softmax(logits.float(), dim=-1).cpu()
