"""Train SAEs straight from a model's activations, with nothing written to disk but the SAEs.

    interp train-sae --model SPEC --hook blocks.0.mlp.hook_post [--hook NAME2 ...] --corpus C --tokens N \\
                     --out DIR --arch topk --d-sae 4096 --k 32 [trainer options, as `sae train`]

`train_from_model` is that command. `ModelActivationStream` is what `sae.train.train_sae` reads:
an iterator of activation batches (one tensor per hook, so every hook's SAEs share one forward pass)
that the trainer can save and restore (`state_dict` / `load_state_dict`). The model runs only as
deep as the deepest hook (`interp.activations.hooks.ActivationHooks` ends the pass there).

The order of the rows is a function of (corpus, split, corpus seed, context length, shuffle
settings), never of how far a run got:
- the token windows are `interp.model.corpus.token_sequences(corpus, tokenizer, ctx, corpus_seed)`, the
  same windows `interp capture` writes; row r is position r % ctx of window r // ctx, and the
  stream holds the first `tokens` rows;
- consecutive groups of `shuffle_buffer // ctx` windows (at least one forward batch) form shuffle
  windows whose rows are permuted by a generator seeded with (seed, group index); shuffle_buffer 0
  keeps the rows in window order, exactly the file order of a capture of the same tokens;
- batch b holds rows [b B, (b + 1) B) of that order (B = batch_size; a last partial batch is dropped).
So a resumed run seeks: it re-tokenizes the windows before the batch it continues at (cheap) and
runs the model only from the shuffle window that holds it.

Memory: a shuffle window holds shuffle_buffer x d_in float32 values per hook (on the model's device).
One process (no torchrun): data-parallel training reads activation datasets (`sae train --nproc`).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from interp.activations.config import MODEL_AUTOCAST, StreamConfig
from interp.activations.hooks import ActivationHooks, CapturePlan, plan_capture
from interp.activations.sources import corpus_windows, model_spec_id
from interp.model.corpus import batched_windows, load_corpus
from interp.model.transformer import load_model, model_device, weights_fingerprint
from sae.architectures import get_architecture
from sae.config import TrainConfig
from sae.distributed import environment_ranks, resolve_device
from sae.sweep import expand_sweep, sweep_names
from sae.train import train_sae

AUTOCAST_DTYPES = {name: None if name == "none" else getattr(torch, name) for name in MODEL_AUTOCAST}


class ModelActivationStream:
    """Seekable stream of activation batches computed by a model on the fly.

    Yields [batch_size, d_in] float32 (one hook) or a tuple of them (one per hook, in `plan` order).
    sequences: a function returning a fresh iterator of the [ctx] token windows (deterministic).
    identity: what must match for a saved state to be restored (model, corpus, seed, ...).
    """

    def __init__(
        self,
        bridge: Any,
        plan: CapturePlan,
        sequences: Callable[[], Iterator[Tensor]],
        *,
        total_tokens: int,
        batch_size: int,
        shuffle_buffer: int,
        seed: int,
        forward_batch: int = StreamConfig.forward_batch,
        autocast: str = "none",
        identity: dict | None = None,
    ):
        if total_tokens <= 0 or batch_size <= 0 or forward_batch <= 0 or shuffle_buffer < 0:
            raise ValueError(
                f"need tokens > 0, batch size > 0, forward batch > 0 and shuffle buffer >= 0; got "
                f"{total_tokens}, {batch_size}, {forward_batch}, {shuffle_buffer}."
            )
        if autocast not in AUTOCAST_DTYPES:
            raise ValueError(f"model autocast {autocast!r} is not one of {list(AUTOCAST_DTYPES)}.")
        if total_tokens < batch_size:
            raise ValueError(
                f"--tokens {total_tokens} is less than one batch of {batch_size} tokens; stream more tokens."
            )
        self.bridge, self.plan, self.sequences = bridge, plan, sequences
        self.total_tokens, self.batch_size, self.seed = total_tokens, batch_size, seed
        self.shuffle_buffer, self.forward_batch, self.autocast = shuffle_buffer, forward_batch, autocast
        ctx = plan.context_length
        # windows per shuffle group: a whole number of forward batches, at least one
        self.group_windows = max(1, shuffle_buffer // ctx // forward_batch) * forward_batch
        self.group_rows = self.group_windows * ctx
        self.num_batches = total_tokens // batch_size
        self.identity = {
            "hooks": list(plan.hook_names),
            "context_length": ctx,
            "total_tokens": total_tokens,
            "batch_size": batch_size,
            "shuffle_buffer": shuffle_buffer,
            "seed": seed,
            "forward_batch": forward_batch,
            "autocast": autocast,
            **(identity or {}),
        }
        self.batch = 0  # index of the next batch
        self._windows: Iterator[Tensor] | None = None
        self._next_window = 0  # index of the window self._windows yields next
        self._groups: dict[int, list[Tensor]] = {}  # loaded shuffle groups: rows per hook, in stream order

    # --- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON position of the next batch, with the settings it is valid for."""
        return {"batch": self.batch, **self.identity}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        differ = [
            f"{k}: state has {state.get(k)!r}, stream has {v!r}" for k, v in self.identity.items() if state.get(k) != v
        ]
        if differ:
            raise ValueError(
                "cannot resume the model activation stream: it was saved with other settings ("
                + "; ".join(differ)
                + "); resume with the original model, corpus, hooks and options."
            )
        self.batch = int(state["batch"])

    # --- rows ------------------------------------------------------------------------------
    def _windows_from(self, start: int) -> Iterator[Tensor]:
        """Token windows from index `start` on; windows before it are tokenized and skipped, not run."""
        if self._windows is None or self._next_window > start:
            self._windows, self._next_window = self.sequences(), 0
        skip = start - self._next_window
        if skip:
            next(itertools.islice(self._windows, skip - 1, skip), None)
            self._next_window = start
        return self._windows

    def _group(self, g: int) -> list[Tensor]:
        """Rows of shuffle group g per hook, [rows of g, d_in] float32 in stream order."""
        if g not in self._groups:
            ctx = self.plan.context_length
            rows = min(self.group_rows, self.total_tokens - g * self.group_rows)
            windows = list(itertools.islice(self._windows_from(g * self.group_windows), math.ceil(rows / ctx)))
            self._next_window += len(windows)
            if len(windows) * ctx < rows:  # the trainer then saves what it has, as at the end of any data
                warnings.warn(
                    f"the corpus ran out after {(g * self.group_windows + len(windows)) * ctx} tokens, "
                    f"fewer than --tokens {self.total_tokens}; lower --tokens or use a larger corpus.",
                    stacklevel=2,
                )
                raise StopIteration
            parts: list[list[Tensor]] = [[] for _ in self.plan.hooks]
            device = model_device(self.bridge)
            dtype = AUTOCAST_DTYPES[self.autocast]
            with ActivationHooks(self.bridge, self.plan.hook_names, self.plan.stop_at_layer) as hooks:
                for tokens in batched_windows(windows, self.forward_batch):
                    with torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext():
                        acts = hooks.run(tokens.to(device))
                    for i, spec in enumerate(self.plan.hooks):
                        parts[i].append(spec.rows(acts[spec.name]).float())
            group = [torch.cat(p)[:rows] for p in parts]
            if self.shuffle_buffer:
                order = torch.from_numpy(np.random.default_rng([self.seed, g]).permutation(rows)).to(group[0].device)
                group = [x[order] for x in group]
            self._groups = {g: group, **({g - 1: self._groups[g - 1]} if g - 1 in self._groups else {})}
        return self._groups[g]

    def _rows(self, start: int, stop: int) -> list[Tensor]:
        pieces: list[list[Tensor]] = [[] for _ in self.plan.hooks]
        while start < stop:
            g = start // self.group_rows
            end = min(stop, (g + 1) * self.group_rows)
            for i, rows in enumerate(self._group(g)):
                pieces[i].append(rows[start - g * self.group_rows : end - g * self.group_rows])
            start = end
        return [torch.cat(p) if len(p) > 1 else p[0] for p in pieces]

    # --- iteration -------------------------------------------------------------------------
    def __iter__(self) -> ModelActivationStream:
        return self

    def __next__(self) -> Tensor | tuple[Tensor, ...]:
        if self.batch >= self.num_batches:
            raise StopIteration
        start = self.batch * self.batch_size
        rows = self._rows(start, start + self.batch_size)
        self.batch += 1
        return rows[0] if len(rows) == 1 else tuple(rows)

    def __len__(self) -> int:
        """Batches left."""
        return self.num_batches - self.batch


def member_names(hooks: Sequence[str], sweep: Sequence[str]) -> list[str]:
    """Folder of each (hook, sweep member) SAE, hook-major: sweep names alone for one hook, else
    HOOK or HOOK/SWEEPNAME."""
    if len(hooks) == 1:
        return list(sweep)
    return [f"{h}/{s}" if s else h for h in hooks for s in sweep]


def train_from_model(
    cfg: StreamConfig, arch: str, sweep: dict[str, list[Any]], train_cfg: TrainConfig, *, progress: bool = True
) -> tuple[list[Any], list[str]]:
    """`interp train-sae`: one SAE per (hook, sweep member) on the model's activations as it runs.

    sweep: the architecture's config fields, each a list of values (every combination is trained).
    Returns the trained SAEs and their folder names under `cfg.out`."""
    cfg.validate()
    train_cfg.validate()
    epochs = cfg.epochs or None  # None: as many passes as cfg.tokens needs
    if environment_ranks().distributed:
        raise ValueError(
            "interp train-sae runs in one process; for several processes capture the activations "
            "(`interp capture`) and train with `sae train --nproc N`"
        )
    config_class = get_architecture(arch).config_class
    device = resolve_device(train_cfg.device)
    opened_corpus = load_corpus(cfg.corpus, split=cfg.split)
    loaded = load_model(cfg.model, device=device)
    plan = plan_capture(loaded.bridge, cfg.hooks, loaded.context_length)
    model_id = model_spec_id(cfg.model)
    weights = weights_fingerprint(loaded.bridge)
    stream = ModelActivationStream(
        loaded.bridge,
        plan,
        lambda: corpus_windows(opened_corpus, loaded, seed=cfg.corpus_seed, epochs=epochs),
        total_tokens=cfg.tokens,
        batch_size=train_cfg.batch_size,
        shuffle_buffer=train_cfg.shuffle_buffer,
        seed=train_cfg.seed,
        forward_batch=cfg.forward_batch,
        autocast=cfg.model_autocast,
        identity={
            "model": model_id,
            "weights": weights,
            "corpus": cfg.corpus,
            "split": cfg.split,
            "corpus_seed": cfg.corpus_seed,
            "epochs": epochs,
        },
    )
    members = expand_sweep(sweep)
    configs, sources, metadata = [], [], []
    for source, spec in enumerate(plan.hooks):
        for m in members:
            configs.append((arch, config_class.from_dict({"d_in": spec.d_in, **m})))
            sources.append(source)
            metadata.append(
                {
                    "hook_name": spec.name,
                    "model_name": loaded.name,
                    "model_path": model_id,
                    "model_weights": weights,
                    "context_size": loaded.context_length,
                    "corpus": cfg.corpus,
                    "activation_shape": list(spec.shape),
                }
            )
    names = member_names(plan.hook_names, sweep_names(members))
    run_info = {
        "source": "model",
        "model": model_id,
        "hooks": list(cfg.hooks),
        "corpus": cfg.corpus,
        "split": cfg.split,
        "corpus_seed": cfg.corpus_seed,
        "epochs": epochs,
        "tokens": cfg.tokens,
        "forward_batch": cfg.forward_batch,
        "model_autocast": cfg.model_autocast,
        "arch": arch,
        "sae": sweep,
    }
    trained = train_sae(
        configs,
        stream,
        train_cfg,
        Path(cfg.out),
        names=names,
        resume=cfg.resume,
        run_info=run_info,
        sources=sources,
        metadata=metadata,
        progress=progress,
    )
    return trained, names
