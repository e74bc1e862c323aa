"""Feature absorption (Chanin et al. 2024) on a hierarchy of concepts: a parent (any Python keyword) whose
children partition it (each keyword).

With each concept's k=1 unit (chosen without the token's document, `crossfit`), a child positive is
*absorbed* when the parent's unit stays silent on it while the child's own unit fires: the general
unit has a hole exactly where a specific one took over. The rate is absorbed / child positives, over
the children scored; its interval resamples documents like every other figure.
"""

from __future__ import annotations

import torch
from torch import Tensor

from interp.features.scorecard.intervals import Resampler, interval

HIERARCHIES = {"python.keyword": "python.keyword "}  # parent -> the name prefix of its children


def absorption(
    fired: Tensor, truth: Tensor, document: Tensor, names: list[str], scored: Tensor, resampler: Resampler
) -> dict | None:
    """The absorption record of one side: fired [N, C] its k=1 predictions, truth [N, C] visible positives,
    document [N], scored [C] bool. None when the suite has no hierarchy."""
    for parent, prefix in HIERARCHIES.items():
        if parent not in names or not bool(scored[names.index(parent)]):
            continue
        p = names.index(parent)
        children = [c for c, name in enumerate(names) if name.startswith(prefix) and bool(scored[c])]
        if not children:
            continue
        D = int(document.max()) + 1
        counts = torch.zeros(D, 3, dtype=torch.float64)
        for c in children:
            on = truth[:, c]
            silent = ~fired[:, p] & on
            stats = torch.stack([on, silent, silent & fired[:, c]], dim=1).double()
            counts.index_add_(0, document, stats)
        summed = resampler.weights @ counts  # [1 + B, 3]
        return {
            "parent": parent,
            "children": [names[c] for c in children],
            "child_positives": int(counts[:, 0].sum()),
            "parent_miss_rate": interval(summed[:, 1] / summed[:, 0].clamp(min=1)),
            "absorption_rate": interval(summed[:, 2] / summed[:, 0].clamp(min=1)),
        }
    return None
