"""SAE architectures, one file each: sae/architectures/<name>.py holds the module whose `arch` is <name>.
The registry is sae.config.SAE_CONFIGS (name -> config class, torch-free so that the command line lists
and documents the architectures without torch); adding an architecture is its file here plus its config
and registry line there."""

from __future__ import annotations

import importlib
from typing import Any

from sae.architectures.base import SAE, TrainState, TrainStep
from sae.config import SAE_CONFIGS


def _load(name: str) -> type[SAE]:
    """The SAE subclass of sae/architectures/<name>.py whose `arch` is `name`."""
    module = importlib.import_module(f"sae.architectures.{name}")
    found = [
        v
        for v in vars(module).values()
        if isinstance(v, type) and issubclass(v, SAE) and getattr(v, "arch", None) == name
    ]
    if len(found) != 1 or found[0].config_class is not SAE_CONFIGS[name]:
        raise TypeError(
            f"sae/architectures/{name}.py must define one SAE with arch {name!r} and config_class "
            f"{SAE_CONFIGS[name].__name__}"
        )
    return found[0]


ARCHITECTURES: dict[str, type[SAE]] = {name: _load(name) for name in SAE_CONFIGS}


def get_architecture(name: str) -> type[SAE]:
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; registered: {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[name]


def build_sae(arch: str, **fields: Any) -> SAE:
    """build_sae("topk", d_in=256, d_sae=4096, k=32)."""
    cls = get_architecture(arch)
    return cls(cls.config_class.from_dict(fields))


__all__ = ["ARCHITECTURES", "SAE", "TrainState", "TrainStep", "build_sae", "get_architecture"]
