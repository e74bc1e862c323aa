"""Interventions on SAE features: the SAE spliced in at its hook with its error term, features
ablated, clamped or scaled, and what the model then does.

    opened = open_model_and_sae("artifacts/demo/model", "artifacts/demo/sae")
    steer = [clamp(1689, 8.0)]                      # f_1689 := 8 at every position
    text = steered_text(opened, "def ", steer, new_tokens=40)
    delta = logprob_changes(opened, tokens, [ablate(1689)])  # [batch, pos - 1], nats

With the error term e = x - decode(f), the activation becomes decode(edit(f)) + e: exactly x (bit for
bit) where the edit changes nothing, and x + decode(edit(f)) - decode(f) where it does, so an
intervention moves only what the edited features write, not the SAE's reconstruction error.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from interp.activations.sources import ModelAndSAE
from interp.interventions.splice import FeatureEdit, spliced
from interp.model.transformer import model_device, sample_text

EditOp = Literal["ablate", "clamp", "scale"]


@dataclass(frozen=True)
class Edit:
    """One change to the feature activations f: set to 0 (ablate), set to `value` (clamp) or multiply
    by `value` (scale), for `features` at `positions` of the window (None: every position; positions
    the window does not reach yet are left alone)."""

    features: tuple[int, ...]
    op: EditOp
    value: float = 0.0
    positions: tuple[int, ...] | None = None


def _ids(values: int | Sequence[int]) -> tuple[int, ...]:
    return (int(values),) if isinstance(values, int) else tuple(int(v) for v in values)


def ablate(features: int | Sequence[int], positions: Sequence[int] | None = None) -> Edit:
    """Features set to 0."""
    return Edit(_ids(features), "ablate", 0.0, None if positions is None else _ids(positions))


def clamp(features: int | Sequence[int], value: float, positions: Sequence[int] | None = None) -> Edit:
    """Features set to `value` (activation units of the SAE), whether they fired or not."""
    return Edit(_ids(features), "clamp", float(value), None if positions is None else _ids(positions))


def scale(features: int | Sequence[int], factor: float, positions: Sequence[int] | None = None) -> Edit:
    """Features multiplied by `factor` where they fire."""
    return Edit(_ids(features), "scale", float(factor), None if positions is None else _ids(positions))


def check_edits(edits: Sequence[Edit], d_sae: int) -> None:
    """ValueError naming the edit whose feature ids, value or positions are out of range."""
    for edit in edits:
        if edit.op not in ("ablate", "clamp", "scale"):
            raise ValueError(f"edit {edit}: op must be ablate, clamp or scale, got {edit.op!r}.")
        if not edit.features:
            raise ValueError(f"edit {edit}: names no feature.")
        bad = [i for i in edit.features if not 0 <= i < d_sae]
        if bad:
            raise ValueError(f"feature id(s) {bad} out of range: this SAE has features 0..{d_sae - 1}.")
        if not math.isfinite(edit.value):
            raise ValueError(f"edit of feature(s) {list(edit.features)}: value {edit.value} is not finite.")
        if edit.positions is not None and any(p < 0 for p in edit.positions):
            raise ValueError(f"edit of feature(s) {list(edit.features)}: positions must be >= 0, got {edit.positions}.")


def edit_function(edits: Sequence[Edit]) -> FeatureEdit:
    """The edits as one function f [batch, pos, d_sae] -> edited f, applied in order."""
    edits = tuple(edits)

    def apply(f: Tensor) -> Tensor:
        for edit in edits:
            ids = torch.tensor(edit.features, device=f.device)
            if edit.positions is None:
                pos = torch.arange(f.shape[1], device=f.device)
            else:
                pos = torch.tensor([p for p in edit.positions if p < f.shape[1]], dtype=torch.long, device=f.device)
            index = (slice(None), pos[:, None], ids[None, :])  # [batch, positions, features]
            if edit.op == "scale":
                f[index] = f[index] * edit.value
            else:
                f[index] = edit.value
        return f

    return apply


def ablate_per_row(features: Tensor) -> FeatureEdit:
    """Row b of the batch loses feature features[b] [batch] at every position (one ablation per row,
    many in one forward pass)."""

    def apply(f: Tensor) -> Tensor:
        rows = torch.arange(f.shape[0], device=f.device)
        f[rows, :, features.to(f.device)] = 0
        return f

    return apply


@contextmanager
def steering(opened: ModelAndSAE, edits: Sequence[Edit]) -> Iterator[Any]:
    """`with steering(opened, [clamp(7, 5.0)]) as model:` model(tokens) gives the steered logits."""
    check_edits(edits, int(opened.sae.cfg.d_sae))
    bridge, edit = opened.model.bridge, edit_function(edits) if edits else None
    with spliced(bridge, opened.sae, at=opened.hook, edit=edit, with_error=True):
        yield bridge


def next_token_logprobs(logits: Tensor, tokens: Tensor) -> Tensor:
    """logits [batch, pos, V], tokens [batch, pos] -> log p(tokens[:, t + 1]) [batch, pos - 1], float32."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return logp.gather(-1, tokens[:, 1:, None].to(logp.device, torch.long)).squeeze(-1)


@torch.no_grad()
def logprob_changes(opened: ModelAndSAE, tokens: Tensor, edits: Sequence[Edit]) -> Tensor:
    """tokens [batch, pos] -> the change in log p(actual next token) at each position that the edits
    cause, edited minus clean: [batch, pos - 1] nats (negative: the edit made the token less likely)."""
    tokens = tokens.to(model_device(opened.model.bridge))
    clean = next_token_logprobs(opened.model.bridge(tokens), tokens)
    with steering(opened, edits) as model:
        edited = next_token_logprobs(model(tokens), tokens)
    return edited - clean


def steered_text(
    opened: ModelAndSAE,
    prompt: str,
    edits: Sequence[Edit],
    new_tokens: int,
    *,
    temperature: float = 0.0,
    seed: int = 0,
) -> str:
    """The continuation of BOS + prompt with the edits in force at every step (no edits: exactly the
    clean model's continuation). Greedy at temperature 0, else sampled with a generator seeded by `seed`."""
    with steering(opened, edits) as bridge:
        return _continue(bridge, opened, prompt, new_tokens, temperature, seed)


def clean_text(opened: ModelAndSAE, prompt: str, new_tokens: int, *, temperature: float = 0.0, seed: int = 0) -> str:
    """The clean model's continuation of BOS + prompt (no SAE spliced in)."""
    return _continue(opened.model.bridge, opened, prompt, new_tokens, temperature, seed)


def _continue(bridge: Any, opened: ModelAndSAE, prompt: str, new_tokens: int, temperature: float, seed: int) -> str:
    model = opened.model
    return sample_text(
        bridge,
        model.tokenizer,
        prompt,
        new_tokens,
        context_length=model.context_length,
        temperature=temperature,
        seed=seed,
    )


__all__ = [
    "Edit",
    "ablate",
    "ablate_per_row",
    "check_edits",
    "clamp",
    "clean_text",
    "edit_function",
    "logprob_changes",
    "next_token_logprobs",
    "scale",
    "steered_text",
    "steering",
]
