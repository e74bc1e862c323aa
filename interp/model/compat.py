"""The TransformerLens APIs this toolkit needs that are private (or moved between releases), in one place.

Tested against transformer-lens 4.3.0. When a release renames one of these, this file is the only
one to change.
"""

from __future__ import annotations

from typing import Any

from torch import nn


def gated_hook_setting(bridge: Any, hook_name: str) -> str | None:
    """The bridge setting a hook needs before it fires at all (`use_attn_result` for attn.hook_result,
    `use_hook_mlp_in` for hook_mlp_in, ...), or None for a hook that always fires.
    TransformerBridge._gated_hook_reason (bridge_core.py)."""
    return bridge._gated_hook_reason(hook_name)


def bridge_from_module(model: nn.Module, architecture: str, tl_config: Any, name: str) -> Any:
    """A TransformerBridge around an existing torch module (its submodules become bridge components
    sharing the same parameters). transformer_lens.model_bridge.sources._bridge_builder."""
    from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_from_module

    return build_bridge_from_module(model, architecture, tl_config=tl_config, model_name=name)
