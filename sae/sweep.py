"""Sweeps: one dict of value lists -> one dict per combination, each with a short folder name."""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from typing import Any


def expand_sweep(values: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    """{"k": [16, 32], "d_sae": [4096]} -> [{"k": 16, "d_sae": 4096}, {"k": 32, "d_sae": 4096}].

    The cartesian product, first field varying slowest."""
    names = list(values)
    return [dict(zip(names, combo)) for combo in itertools.product(*(values[n] for n in names))]


def sweep_names(members: list[dict[str, Any]]) -> list[str]:
    """A short folder name per sweep member from the fields that vary: "k16", "d_sae2048-k16".

    A single member gets the name ""."""
    if len(members) <= 1:
        return [""] * len(members)
    varying = [n for n in members[0] if len({json.dumps(m[n]) for m in members}) > 1]
    return ["-".join(f"{n}{_name_part(m[n])}" for n in varying) for m in members]


def _name_part(value: Any) -> str:
    if isinstance(value, list):
        return "_".join(map(str, value))
    return str(value)
