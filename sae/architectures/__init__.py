"""SAE architectures, one file each, registered by name (see `base.register`); their configs are in sae.config."""

from sae.architectures.base import (
    ARCHITECTURES,
    SAE,
    TrainState,
    TrainStep,
    build_sae,
    get_architecture,
    register,
)

# Importing each architecture module registers it; list every architecture file here.
ARCHITECTURE_MODULES: list[str] = ["relu", "topk", "batchtopk", "jumprelu", "gated", "matryoshka"]
for _name in ARCHITECTURE_MODULES:
    __import__(f"sae.architectures.{_name}")

__all__ = ["ARCHITECTURES", "SAE", "TrainState", "TrainStep", "build_sae", "get_architecture", "register"]
