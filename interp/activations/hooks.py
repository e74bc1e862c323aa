"""Hook names and hook capture: which hooks a forward pass must reach, the per-token shape each
one carries, the bridge settings some hooks need (turned on for a block, restored after), the one
flattener of activations into per-token rows, and forward hooks that keep their activations and end
the pass after the last one. (Hooks that change an activation are interp.interventions.splice's.)

Names follow TransformerLens (`blocks.3.mlp.hook_post`, `blocks.0.hook_resid_post`, `ln_final.hook_in`).
Everything that reads a hook name's structure (its block, whether it is an MLP-neuron or a
residual-stream hook, the hook an SAE was trained on) lives here.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from interp.model.compat import gated_hook_setting
from interp.model.transformer import LoadedModel, model_device

BLOCK_HOOK = re.compile(r"^blocks\.(\d+)\.")
MLP_POST_HOOK = re.compile(r"^blocks\.(\d+)\.mlp\.hook_post$")
RESIDUAL_HOOK = re.compile(
    r"^(blocks\.\d+\.(hook_resid_(pre|mid|post)|hook_mlp_out|hook_attn_out|hook_in|hook_out|mlp\.hook_out|attn\.hook_out)"
    r"|ln_final\.hook_in|hook_embed|hook_pos_embed)$"
)
EMBEDDING_STAGE = ("hook_embed", "hook_pos_embed", "hook_tokens", "embed.", "pos_embed.")


def hook_layer(hook_name: str) -> int | None:
    """Block index of a hook (`blocks.3.mlp.hook_post` -> 3); None for hooks outside the blocks."""
    match = BLOCK_HOOK.match(hook_name)
    return int(match.group(1)) if match else None


def mlp_neuron_layer(hook_name: str) -> int | None:
    """The block whose MLP neurons `hook_name` carries (`blocks.N.mlp.hook_post`), else None."""
    match = MLP_POST_HOOK.match(hook_name)
    return int(match.group(1)) if match else None


def writes_residual(hook_name: str) -> bool:
    """Whether the hook's activation lives in the residual stream (added to it, or read from it)."""
    return RESIDUAL_HOOK.match(hook_name) is not None


def sae_hook_name(sae: Any, hook_name: str | None = None) -> str:
    """The hook an SAE reads: `hook_name` if given, else the one it was trained on (its cfg.json
    metadata `hook_name`); ValueError when neither names one."""
    if hook_name:
        return hook_name
    trained_on = (getattr(sae, "metadata", None) or {}).get("hook_name")
    if not trained_on:
        raise ValueError(
            "the SAE's cfg.json names no hook (metadata.hook_name); pass --hook NAME "
            "(list them with `interp hooks --model SPEC`)."
        )
    return trained_on


def stop_layer(hook_names: Iterable[str], n_layers: int) -> int | None:
    """`stop_at_layer` for a forward pass that must reach every hook in `hook_names`.

    Deepest hooked block + 1 for block hooks (`blocks.3.mlp.hook_post` -> 4), 0 when every hook is
    in the embedding stage, None (a full pass) when a hook lies after the last block (ln_final, unembed).
    """
    deepest = -1
    for name in hook_names:
        layer = hook_layer(name)
        if layer is not None:
            deepest = max(deepest, layer)
        elif not name.startswith(EMBEDDING_STAGE):
            return None
    return min(deepest + 1, n_layers)


def compact_hook_list(names: Iterable[str]) -> str:
    """Hook names with block indices folded: `blocks.{0..11}.mlp.hook_post` once, not twelve times."""
    grouped: dict[str, list[int]] = {}
    for name in names:
        match = BLOCK_HOOK.match(name)
        key = "blocks.{i}." + name[match.end() :] if match else name
        grouped.setdefault(key, []).append(int(match.group(1)) if match else -1)
    shown = []
    for key, layers in grouped.items():
        if key.startswith("blocks.{i}."):
            lo, hi = min(layers), max(layers)
            key = key.replace("{i}", str(lo) if lo == hi else f"{{{lo}..{hi}}}")
        shown.append(key)
    return ", ".join(shown)


def check_hook_names(hook_point_names: Sequence[str], hook_names: Sequence[str]) -> None:
    """Raise ValueError for an empty, repeated or unknown hook name, listing the valid names and the closest one."""
    if not hook_names:
        raise ValueError("no hook given: pass at least one --hook NAME (list them with `interp hooks --model SPEC`).")
    repeated = sorted({n for n in hook_names if hook_names.count(n) > 1})
    if repeated:
        raise ValueError(f"hook(s) {repeated} given more than once; each hook is captured once per pass.")
    valid = set(hook_point_names)
    for name in hook_names:
        if name not in valid:
            closest = difflib.get_close_matches(name, hook_point_names, n=1, cutoff=0.0)
            raise ValueError(
                f"unknown hook name {name!r}; did you mean {closest[0]!r}? "
                f"Valid hook names of this model: {compact_hook_list(hook_point_names)}."
            )


@dataclass(frozen=True)
class HookSpec:
    """One hook to capture: its per-token activation shape and where the position axis sits."""

    name: str
    shape: tuple[int, ...]  # per token, e.g. (512,) for mlp.hook_post, (n_heads, d_head) for attn.hook_z
    position_dim: int  # axis of the position in the batched activation: 1, or 2 for attention patterns

    @property
    def d_in(self) -> int:
        return math.prod(self.shape)

    def rows(self, activation: Tensor) -> Tensor:
        """[batch, ..., pos, ...] activation -> [batch * pos, d_in] rows, in (batch, pos) order."""
        return token_rows(activation, self.position_dim)


def position_axis(hook_name: str, ndim: int) -> int:
    """The axis of the position in a hook's batched activation of `ndim` dimensions: the query axis (-2)
    of attention patterns and scores, else 1."""
    return ndim - 2 if hook_name.endswith(("hook_pattern", "hook_attn_scores")) else 1


def token_rows(activation: Tensor, position_dim: int = 1) -> Tensor:
    """The one flattener of activations into per-token rows: [batch, ..., pos, ...] (the position at
    `position_dim`) -> [batch * pos, prod(rest)], in (batch, pos) order."""
    moved = activation.movedim(position_dim, 1)
    return moved.reshape(moved.shape[0] * moved.shape[1], -1)


@dataclass(frozen=True)
class CapturePlan:
    """What one forward pass captures, and where it stops."""

    hooks: tuple[HookSpec, ...]
    stop_at_layer: int | None
    context_length: int

    @property
    def hook_names(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.hooks)


class _PassComplete(Exception):
    """Raised by the last hook of a pass to end the forward pass early."""


class ActivationHooks:
    """Forward hooks that keep the requested activations of one pass and end the pass right after
    the last of them fires. A context manager: the hooks stay attached across many `run` calls."""

    def __init__(self, bridge, hook_names: Sequence[str], stop_at_layer: int | None):
        self.bridge, self.hook_names, self.stop_at_layer = bridge, tuple(hook_names), stop_at_layer
        self._acts: dict[str, Tensor] = {}
        self._attached: ExitStack | None = None

    def _keeper(self, name: str):
        def keep(activation: Tensor, hook) -> None:
            self._acts[name] = activation.detach()
            if len(self._acts) == len(self.hook_names):
                raise _PassComplete  # nothing after this point runs; `run` catches it

        return keep

    def __enter__(self) -> ActivationHooks:
        self._attached = ExitStack()
        self._attached.enter_context(hook_settings(self.bridge, self.hook_names))
        self._attached.enter_context(self.bridge.hooks(fwd_hooks=[(n, self._keeper(n)) for n in self.hook_names]))
        return self

    def __exit__(self, *exc) -> None:
        self._attached.close()

    def run(self, tokens: Tensor) -> dict[str, Tensor]:
        """tokens [batch, pos] -> {hook name: activation as the hook saw it}."""
        self._acts = {}
        try:
            with torch.inference_mode():
                self.bridge(tokens, stop_at_layer=self.stop_at_layer)
        except _PassComplete:
            pass
        missing = [n for n in self.hook_names if n not in self._acts]
        if missing:
            raise ValueError(
                f"hook(s) {missing} never fired in the forward pass; this model's backend does not run them."
            )
        return self._acts


@contextmanager
def hook_settings(bridge, hook_names: Sequence[str]) -> Iterator[None]:
    """Check `hook_names` against the model (ValueError listing the valid names) and, inside the block,
    turn on the bridge settings some hooks need to fire at all (use_hook_mlp_in for blocks.N.hook_mlp_in,
    use_attn_result for attn.hook_result, ...); each setting turned on here is turned off again on exit,
    so the model is left as it was found."""
    check_hook_names(list(bridge.hook_dict), hook_names)
    turned_on = []
    try:
        for name in hook_names:
            setting = gated_hook_setting(bridge, name)
            if setting is None:
                continue
            try:
                getattr(bridge, f"set_{setting}")(True)
            except NotImplementedError as err:
                raise ValueError(
                    f"hook {name!r} needs the model setting {setting}, which this model does not support "
                    f"({err}); choose another hook."
                ) from err
            turned_on.append(setting)
        yield
    finally:
        for setting in reversed(turned_on):
            getattr(bridge, f"set_{setting}")(False)


def plan_capture(bridge, hook_names: Sequence[str], context_length: int) -> CapturePlan:
    """Validate `hook_names` against the model and learn each hook's per-token shape from one probe
    pass over a [1, context_length] sequence."""
    hook_names = list(hook_names)
    stop = stop_layer(hook_names, len(bridge.blocks))
    device = model_device(bridge)
    probe = torch.zeros(1, context_length, dtype=torch.long, device=device)
    with ActivationHooks(bridge, hook_names, stop) as hooks:
        acts = hooks.run(probe)
    specs = []
    for name in hook_names:
        act = acts[name]
        position_dim = position_axis(name, act.ndim)
        if not act.is_floating_point():
            raise ValueError(
                f"hook {name!r} carries {act.dtype} values (token ids), not activations; choose another hook."
            )
        if act.ndim < 2 or act.shape[0] != 1 or act.shape[position_dim] != context_length:
            raise ValueError(
                f"hook {name!r} fires with shape {list(act.shape)}, not [batch, position, ...] for a "
                f"[1, {context_length}] input; it cannot be captured per token."
            )
        shape = tuple(s for i, s in enumerate(act.shape) if i not in (0, position_dim))
        specs.append(HookSpec(name, shape or (1,), position_dim))
    return CapturePlan(tuple(specs), stop, context_length)


def hook_shapes(loaded: LoadedModel) -> dict[str, tuple[int, ...] | None]:
    """Every hook name with the shape of its activation for one [1, context_length] input of random
    tokens (BOS first); None for hooks that do not fire on a plain forward pass (they need a bridge
    setting such as use_attn_result or use_split_qkv_input)."""
    shape = (1, loaded.context_length)
    tokens = torch.randint(0, loaded.tokenizer.vocab_size, shape, generator=torch.Generator().manual_seed(0))
    tokens[0, 0] = loaded.bos_id
    with torch.no_grad():
        _, cache = loaded.bridge.run_with_cache(tokens.to(model_device(loaded.bridge)))
    return {name: tuple(cache[name].shape) if name in cache else None for name in loaded.bridge.hook_dict}
