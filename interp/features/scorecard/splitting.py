"""Feature splitting: SAEs of several widths on the same activations, each feature of a wider SAE
matched to its parent in the next narrower one by decoder cosine, with their co-activation. A feature
is a child only when that cosine is at least PARENT_COSINE; below it, it has no parent in the family
trees (its best match is still reported)."""

from __future__ import annotations

import torch
from torch import Tensor

from interp.features.scorecard.measures import median

PARENT_COSINE = 0.7


@torch.no_grad()
def parents(W_small: Tensor, W_large: Tensor, small: Tensor, large: Tensor) -> dict[str, Tensor]:
    """For each feature of the wider SAE: its parent (largest decoder cosine) in the narrower one, the
    cosine, and the co-activation P(parent fires | child fires) over the tokens (NaN for a child
    that never fires). W_* [F, d_in] decoders, small/large [N, F] activations."""
    a = torch.nn.functional.normalize(W_large.float().cpu(), dim=1)
    b = torch.nn.functional.normalize(W_small.float().cpu(), dim=1)
    cosine, parent = (a @ b.T).max(dim=1)
    child_fires = large > 0
    both = (child_fires & (small[:, parent] > 0)).sum(0).double()
    fired = child_fires.sum(0).double()
    return {"parent": parent, "cosine": cosine, "coactivation": both / fired}


def top_tokens(acts: Tensor, ids: Tensor, strings: list[str], *, count: int = 5, examples: int = 32) -> list[list[str]]:
    """Per feature: the first `count` distinct token strings among its `examples` highest activations."""
    top = acts.T.contiguous().topk(min(examples, len(acts)), dim=1)  # [F, e]
    out = []
    for f in range(acts.shape[1]):
        seen: list[str] = []
        for value, token in zip(top.values[f].tolist(), ids[top.indices[f]].tolist(), strict=True):
            if value <= 0 or len(seen) == count:
                break
            if strings[token] not in seen:
                seen.append(strings[token])
        out.append(seen)
    return out


def feature_splitting(
    decoders: list[Tensor], acts: list[Tensor], ids: Tensor, strings: list[str], paths: list[str]
) -> dict:
    """The splitting record of SAEs sorted by width: per adjacent pair the medians of the match, per
    width each feature's density and top tokens, and each narrowest feature's family tree."""
    order = sorted(range(len(decoders)), key=lambda i: decoders[i].shape[0])
    decoders, acts, paths = [decoders[i] for i in order], [acts[i] for i in order], [paths[i] for i in order]
    widths = [int(W.shape[0]) for W in decoders]
    links = [parents(decoders[i], decoders[i + 1], acts[i], acts[i + 1]) for i in range(len(widths) - 1)]
    pairs = [
        {
            "from": widths[i],
            "to": widths[i + 1],
            "median_cosine": median(link["cosine"]),
            "median_coactivation": median(link["coactivation"]),
            "share_with_parent": round(float((link["cosine"] >= PARENT_COSINE).double().mean()), 6),
        }
        for i, link in enumerate(links)
    ]

    def children(level: int, feature: int) -> list[dict]:
        if level >= len(links):
            return []
        link = links[level]
        kids = ((link["parent"] == feature) & (link["cosine"] >= PARENT_COSINE)).nonzero().flatten().tolist()
        kids.sort(key=lambda j: -float(link["cosine"][j]))
        return [
            {
                "id": j,
                "cosine": round(float(link["cosine"][j]), 4),
                "coactivation": None if link["coactivation"][j].isnan() else round(float(link["coactivation"][j]), 4),
                "children": children(level + 1, j),
            }
            for j in kids
        ]

    return {
        "parent_cosine": PARENT_COSINE,
        "widths": widths,
        "saes": paths,
        "pairs": pairs,
        "features": [
            {
                "density": [round(float(d), 6) for d in (a > 0).double().mean(0)],
                "top_tokens": top_tokens(a, ids, strings),
            }
            for a in acts
        ],
        "families": [{"id": f, "children": children(0, f)} for f in range(widths[0])],
    }
