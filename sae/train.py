"""The trainer: one stream of activation batches trains one SAE or a sweep of them.

Each batch is read once and fed to every SAE of the sweep. Per step and SAE:
`train_step` -> backward -> `after_backward` -> clip -> Adam -> `after_step`, with the learning
rate from a warm-up + decay schedule. Before the first step the trainer looks at the first
`init_tokens` tokens to set the activation scale (E||x * scale||^2 = d_in) and the decoder bias
(geometric median or mean of the scaled activations); those batches are then trained on like
any other. Saved SAEs take raw activations: the scale is folded into their weights.

Files under `out`:
    train_config.json          the resolved config of the run (train fields + every SAE config)
    log.jsonl                  one line per logged step and SAE: loss terms, L0, FVU, dead fraction (no firing
                               in the last dead_window_tokens tokens, stated on each line)
    checkpoint/                the newest checkpoint (sae.checkpoint)
    cfg.json + sae_weights.safetensors   (one SAE) or NAME/cfg.json ... (one folder per sweep member)

Sources: `batches` yields one tensor per step (every SAE trains on it) or a tuple of tensors, one
per source (e.g. one per hook of one forward pass); `sources[i]` says which entry SAE i trains on.
Each source has its own activation scale and b_dec estimate.

Data parallelism (sae.distributed): `Ranks` says which process this is. Each rank reads its slice
of every global batch, gradients are averaged over ranks between backward and `after_backward`,
fired counts summed; only the main rank writes files. The data position in a checkpoint is that
of the global stream, so a run resumes on any number of ranks.

Devices and precision: `device` auto|cpu|cuda|cuda:N; `autocast` bfloat16 or float16 runs the
training forward pass in that dtype (float16 with a gradient scaler, saved in checkpoints);
`selection_dtype` (auto: bfloat16 where the hardware multiplies it natively) is the precision of the
dense encoder product with which TopK-family SAEs only choose their active latents; on CUDA
batches are read and pinned on a background thread and copied to the GPU without blocking.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sae.architectures import SAE
from sae.checkpoint import CHECKPOINT_DIR, CHECKPOINT_FORMAT, latest_checkpoint, load_checkpoint, save_checkpoint
from sae.config import TRAIN_CONFIG, SAEConfig, TrainConfig
from sae.data import ActivationDataset
from sae.distributed import SINGLE_PROCESS, Ranks, resolve_device
from sae.feed import BatchFeed
from sae.files import check_output_folder, folder_lock, write_json
from sae.hardware import check_training_memory
from sae.io import save_sae
from sae.member import SweepMember
from sae.progress import progress_bar
from sae.sweep import sweep_names

LOG_FILE = "log.jsonl"


def train_sae(
    sae_configs: Sequence[tuple[str, SAEConfig]],
    batches: ActivationDataset | Iterable[Tensor] | Iterable[tuple[Tensor, ...]],
    cfg: TrainConfig,
    out: str | os.PathLike | None,
    *,
    names: Sequence[str] | None = None,
    resume: bool = False,
    run_info: dict[str, Any] | None = None,
    progress: bool = True,
    ranks: Ranks = SINGLE_PROCESS,
    sources: Sequence[int] | None = None,
    metadata: Sequence[dict[str, Any]] | None = None,
) -> list[SAE]:
    """Train every (architecture name, config) pair on one stream of [batch, d_in] batches.

    batches: an ActivationDataset (the trainer streams it shuffled, resumes exactly, and passes its
    hook/model names to the saved files); a seekable iterable (`state_dict()` / `load_state_dict()`:
    resumed by restoring its state); or any iterable (a resumed run re-reads and skips the batches
    already trained on, so it must yield the same sequence again). An iterable yields a tensor per
    step, or a tuple of tensors (one per source) with `sources[i]` the entry SAE i trains on.
    Under several ranks an iterable yields this rank's part of each global batch.
    out: run folder (None: train in memory only). names: folder per SAE (default: "" for one SAE,
    else the varying fields, e.g. "k16"). resume: continue from out/checkpoint.
    run_info: extra entries for train_config.json (the CLI records the dataset path and sweep).
    metadata: per SAE, extra entries for its cfg.json metadata (hook_name, model_name, ...).
    ranks: this process of a data-parallel job (sae.distributed).
    Returns the trained SAEs in inference form with the activation scale folded in (raw inputs).
    The main process holds a lock on `out` for the whole run, so a second run into the same folder is
    refused at once instead of interleaving its files.
    """
    with contextlib.ExitStack() as held:
        if out is not None and ranks.is_main:
            check_output_folder(out)
            held.enter_context(folder_lock(out, "sae train"))
        cfg.validate()
        if not sae_configs:
            raise ValueError("train_sae needs at least one SAE config")
        for _, c in sae_configs:
            c.validate()
        names = list(names) if names is not None else sweep_names([c.to_dict() for _, c in sae_configs])
        if len(set(names)) != len(names):
            raise ValueError(f"SAE names must be distinct, got {names}")
        sources = list(sources) if sources is not None else [0] * len(sae_configs)
        if len(sources) != len(sae_configs) or (sources and min(sources) < 0):
            raise ValueError(
                f"sources must give one non-negative source index per SAE config, got {sources} "
                f"for {len(sae_configs)} configs"
            )
        if metadata is not None and len(metadata) != len(sae_configs):
            raise ValueError(f"metadata must hold one dict per SAE config, got {len(metadata)} for {len(sae_configs)}")
        for s in set(sources):
            widths = {c.d_in for (_, c), src in zip(sae_configs, sources) if src == s}
            if len(widths) > 1:
                raise ValueError(
                    f"the SAEs trained on source {s} disagree on d_in ({sorted(widths)}); they read the same batches"
                )
        if isinstance(batches, ActivationDataset):
            for name, (_, c) in zip(names, sae_configs):
                if c.d_in != batches.d_in:
                    raise ValueError(
                        f"the dataset {batches.path} has d_in={batches.d_in} (its manifest.json) but SAE "
                        f"{name or 'config'} has d_in={c.d_in}; set d_in to {batches.d_in} (or leave it unset on the "
                        "command line)"
                    )
        steps = cfg.steps if cfg.steps is not None else _steps_of(batches, cfg)
        device = resolve_device(cfg.device, ranks)
        check_training_memory([(n, c.d_in, c.d_sae) for n, (_, c) in zip(names, sae_configs)], cfg, device)
        dead_window = cfg.dead_window(steps * cfg.batch_size)
        members = [
            SweepMember(n, arch, c, cfg, device, src, dead_window=dead_window, distributed=ranks.distributed)
            for n, (arch, c), src in zip(names, sae_configs, sources)
        ]
        out_dir = Path(out) if out is not None else None
        writes = out_dir is not None and ranks.is_main

        position, scales, start = None, [1.0] * (max(sources) + 1), 0
        torch.manual_seed(cfg.seed)
        folder = latest_checkpoint(out_dir) if out_dir is not None else None
        if resume:
            if folder is None:
                raise FileNotFoundError(
                    f"cannot resume: {out_dir}/{CHECKPOINT_DIR} holds no checkpoint; start the run without --resume"
                )
            state = load_checkpoint(folder, cfg, members)
            position, start = state["data_position"], state["step"]
            scales = state.get("activation_scales", [state["activation_scale"]])
        elif folder is not None:
            raise ValueError(
                f"{out_dir} already holds a run (checkpoint at {folder.name}); resume it with --resume "
                "or choose another --out folder"
            )
        for m in members:
            ranks.broadcast_(m.sae)  # the same seed builds the same weights; this makes it certain
        if writes:
            out_dir.mkdir(parents=True, exist_ok=True)
            write_json(
                out_dir / TRAIN_CONFIG,
                {
                    "format_version": CHECKPOINT_FORMAT,
                    **(run_info or {}),
                    "train": dataclasses.asdict(cfg),
                    "resolved": {
                        "device": str(device),
                        "selection_dtype": str(members[0].selection_dtype or cfg.dtype).removeprefix("torch."),
                        "dead_window_tokens": dead_window,
                    },
                    "members": [{"name": m.name, "arch": m.arch, "config": m.sae.cfg.to_dict()} for m in members],
                },
            )
        feed = BatchFeed(batches, cfg, ranks, position, prefetch=device.type == "cuda", pin=device.type == "cuda")
        dtype = getattr(torch, cfg.dtype)
        autocast = torch.autocast(device.type, dtype=getattr(torch, cfg.autocast)) if cfg.autocast != "none" else None
        log = open(out_dir / LOG_FILE, "a") if writes else None  # noqa: SIM115 - open for the whole run, closed below
        last_saved = start
        bar = progress_bar(
            total=steps, initial=start, desc="train", unit="step", disable=not (progress and ranks.is_main)
        )
        clock, clock_step = time.perf_counter(), start
        try:
            if start == 0:
                scales = _initialise(feed, members, cfg, dtype, device, ranks)
            if start >= steps:
                warnings.warn(
                    f"the run in {out_dir} already finished {start} of {steps} steps; only saving the SAEs",
                    stacklevel=2,
                )
            for step in range(start, steps):
                batch = _next_batch(feed, step, members, out_dir, last_saved, ranks)
                if batch is None:
                    warnings.warn(
                        f"the data ran out after {step} of {steps} steps; saving the SAEs as they are", stacklevel=2
                    )
                    steps = step
                    break
                xs = [b.to(device=device, dtype=dtype, non_blocking=True) * s for b, s in zip(batch, scales)]
                results = [m.step(xs[m.source], step, cfg, steps, autocast, ranks) for m in members]
                bar.update(1)
                done = step + 1
                if log is not None:
                    for m, r in zip(members, results):
                        if r["resampled"] is not None:
                            log.write(json.dumps({"step": done, "sae": m.name, "resampled": r["resampled"]}) + "\n")
                if done % cfg.log_every == 0 or done == steps:
                    rows = [m.metrics(xs[m.source], r, ranks) for m, r in zip(members, results)]
                    now = time.perf_counter()
                    rate = (done - clock_step) * cfg.batch_size / max(now - clock, 1e-9)
                    clock, clock_step = now, done
                    bar.set_postfix_str(
                        " | ".join(
                            f"{r['sae'] or 'fvu'} {r['fvu']:.3f} l0 {r['l0']:.1f} dead {r['dead_fraction']:.1%}"
                            for r in rows
                        )
                        + f" | {rate:,.0f} tok/s",
                        refresh=False,  # shown at the bar's next refresh, not as a redraw of its own
                    )
                    if log is not None:
                        for r in rows:
                            log.write(
                                json.dumps({"step": done, "tokens": done * cfg.batch_size, "tokens_per_s": rate, **r})
                                + "\n"
                            )
                        log.flush()
                if writes and (done == steps or (cfg.checkpoint_every and done % cfg.checkpoint_every == 0)):
                    save_checkpoint(out_dir, done, done * cfg.batch_size, feed.position, scales, cfg, members)
                    last_saved = done
        finally:
            bar.close()
            feed.close()
            if log is not None:
                log.close()
        trained = [_saveable(m.sae, scales[m.source]) for m in members]
        if writes:
            for i, (m, sae) in enumerate(zip(members, trained)):
                meta = {
                    **_metadata(batches, scales[m.source], steps * cfg.batch_size),
                    **(metadata[i] if metadata else {}),
                }
                save_sae(sae, out_dir / m.name if m.name else out_dir, metadata=meta)
        ranks.barrier()  # no rank returns before rank 0 has written the SAEs
        return trained


def _next_batch(
    feed: BatchFeed, step: int, members: Sequence[SweepMember], out: Path | None, last_saved: int, ranks: Ranks
) -> tuple[Tensor, ...] | None:
    """This rank's next batch (one tensor per source), checked; None when the data ran out on any rank.

    Ranks agree: a bad batch on one rank stops every rank with an error naming it."""
    batch, error, code = feed.next(), None, 0
    if batch is None:
        code = 1
    else:
        try:
            _check_batches(batch, step, members, out, last_saved)
        except ValueError as err:
            error, code = err, 2 + ranks.rank
    code = ranks.max_code(code, members[0].tokens_since_fired.device)
    if error is not None:
        raise error
    if code >= 2:
        raise ValueError(
            f"batch {step} of rank {code - 2} is bad (NaN/Inf or a wrong shape; rank {code - 2} "
            "reports which); every rank stopped"
        )
    return None if code == 1 else batch


def _steps_of(batches: Any, cfg: TrainConfig) -> int:
    if isinstance(batches, ActivationDataset):
        steps = batches.num_tokens // cfg.batch_size
        if steps == 0:
            raise ValueError(
                f"the dataset {batches.path} holds {batches.num_tokens} tokens, fewer than one batch of "
                f"{cfg.batch_size}"
            )
        return steps
    if hasattr(batches, "__len__"):
        return len(batches)
    raise ValueError("TrainConfig.steps is required when batches is a plain iterator (its length is unknown)")


def _check_batches(
    batch: tuple[Tensor, ...], step: int, members: Sequence[SweepMember], out: Path | None, last_saved: int
) -> None:
    """Each source's tensor of one step checked against the d_in of the SAEs that read it."""
    needed = max(m.source for m in members) + 1
    if len(batch) < needed:
        raise ValueError(
            f"batch {step} holds {len(batch)} tensor(s) but the SAEs read source(s) up to "
            f"index {needed - 1}; yield one tensor per source"
        )
    for m in members:
        _check_batch(batch[m.source], step, m.sae.cfg.d_in, out, last_saved)


def _check_batch(x: Tensor, step: int, d_in: int, out: Path | None, last_saved: int) -> Tensor:
    """Refuse a batch of the wrong shape or with NaN/Inf, naming the batch and the last good checkpoint."""
    if x.ndim != 2 or x.shape[1] != d_in:
        raise ValueError(
            f"batch {step} has shape {tuple(x.shape)} but the SAE config has d_in={d_in}; "
            f"the data and the config disagree on d_in"
        )
    if not torch.isfinite(x).all():
        row = int((~torch.isfinite(x)).any(1).nonzero()[0])
        where = (
            f"the last good checkpoint (step {last_saved}) is kept in {out / CHECKPOINT_DIR}"
            if out is not None and last_saved
            else "no checkpoint was written before it"
        )
        raise ValueError(
            f"batch {step} (0-based, the batch of step {step + 1}) contains NaN or Inf values "
            f"(first at row {row}); training stopped and {where}. Fix or remove the bad activations."
        )
    return x


def _initialise(
    feed: BatchFeed,
    members: Sequence[SweepMember],
    cfg: TrainConfig,
    dtype: torch.dtype,
    device: torch.device,
    ranks: Ranks,
) -> list[float]:
    """Per source: activation scale and decoder bias from the first init_tokens tokens of the global
    stream (all ranks' local batches gathered); returns the scales."""
    first = feed.peek(max(1, math.ceil(cfg.init_tokens / cfg.batch_size)))
    code = ranks.max_code(0 if first else 1, members[0].tokens_since_fired.device)
    if code:
        raise ValueError("the batch stream is empty: nothing to train on")
    for i, b in enumerate(first):
        _check_batches(b, i, members, None, 0)
    scales = []
    for source in range(max(m.source for m in members) + 1):
        readers = [m for m in members if m.source == source]
        if not readers:
            scales.append(1.0)
            continue
        x = torch.cat([ranks.gather_rows(b[source].to(device)) for b in first])[: cfg.init_tokens].to(torch.float64)
        scale = activation_scale(x) if cfg.normalize_activations else 1.0
        x = x * scale
        if cfg.b_dec_init != "zeros":
            b_dec = geometric_median(x) if cfg.b_dec_init == "geometric_median" else x.mean(0)
            for m in readers:
                m.sae.init_from_data(b_dec.to(dtype))
        scales.append(scale)
    return scales


def _saveable(sae: SAE, scale: float) -> SAE:
    """A copy in inference form that takes raw activations (the scale folded into the weights)."""
    final = copy.deepcopy(sae).inference_form()
    final.fold_activation_scale(scale)
    return final


def _metadata(batches: Any, scale: float, tokens: int) -> dict[str, Any]:
    meta: dict[str, Any] = {"training_tokens": tokens, "activation_scale_folded": scale}
    if isinstance(batches, ActivationDataset):
        meta.update(
            hook_name=batches.hook_name,
            model_name=batches.model_id,
            context_size=batches.context_length,
            dataset_path=str(batches.path),
        )
        if "weights" in batches.manifest["metadata"]:  # the fingerprint of the model captured from
            meta["model_weights"] = batches.manifest["metadata"]["weights"]
    return meta


def geometric_median(x: Tensor, iters: int = 100, tol: float = 1e-7) -> Tensor:
    """argmin_m sum_i ||x_i - m|| of x [n, d] by Weiszfeld's iteration, in float64 -> [d].

    Distances come from ||x_i||^2 - 2 x_i.m + ||m||^2, so an iteration is two matrix-vector products
    over x (no [n, d] temporaries). Stops when m moves less than tol * (1 + ||m||)."""
    x = x.double()
    sq_norms = x.pow(2).sum(1)  # [n]
    median = x.mean(0)
    for _ in range(iters):
        dist = (sq_norms - 2 * (x @ median) + median.dot(median)).clamp_min(0).sqrt()
        inv_dist = 1 / dist.clamp_min(1e-12)
        new = (inv_dist @ x) / inv_dist.sum()
        moved = (new - median).norm()
        median = new
        if moved <= tol * (1 + median.norm()):
            break
    return median


def activation_scale(x: Tensor) -> float:
    """s such that E||s x||^2 = d_in over the rows of x [n, d_in]."""
    mean_sq = x.double().pow(2).sum(1).mean().item()
    if mean_sq == 0:
        raise ValueError("the first activations are all zero; cannot normalise them (set normalize_activations false)")
    return math.sqrt(x.shape[1] / mean_sq)
