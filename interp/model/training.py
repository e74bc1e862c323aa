"""Train our small transformer on a corpus: tokenizer first, then the model, then save both.

The NativeModel trains unwrapped (no hooks: the same weights and forward as the bridge, faster);
the bridge wraps it only for the hook-based parts of the training record and for the caller.
Schedule: AdamW, linear warm-up over `warmup_steps`, then cosine decay to `min_lr_fraction * lr`
over the budget's progress p = max(tokens seen / --tokens, training seconds / --minutes).
The clock counts training steps only (evaluation and sampling pause it).

Speed: the forward pass runs under bfloat16 autocast where the hardware multiplies bfloat16 natively
(`--autocast auto`); the weights, the optimizer and the loss stay float32, and held-out evaluation
runs in float32. AdamW is the single-kernel (fused) one where torch has it for the device.
`scripts/bench_model_train.py` measures both against the float32 loop.

At the end the held-out loss is also stated in bits per byte, beside `gzip -9` and `xz -9e` on
the same held-out bytes (interp.model.compression).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from interp.model.compression import bits_per_byte, compressor_bits_per_byte, predicted_bytes
from interp.model.config import PROMPTS, InitConfig, ModelConfig, ModelTrainConfig
from interp.model.corpus import Corpus, load_corpus, token_sequences
from interp.model.record import MLP_HOOK, Sample, TrainingRecord
from interp.model.tokenizer import Tokenizer, train_tokenizer
from interp.model.transformer import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    LoadedModel,
    build_native_model,
    model_device,
    native_to_bridge,
    sample_text,
    save_model,
)
from sae.files import check_output_folder, read_json, temp_path
from sae.hardware import fast_adam, native_bfloat16_matmul
from sae.progress import progress_bar

PROMPT_CHARS = 80


def forward_autocast_dtype(cfg: ModelTrainConfig, device: torch.device) -> torch.dtype | None:
    """The training forward pass's autocast dtype on `device` (None: float32), as `cfg.autocast` says."""
    if cfg.autocast == "auto":
        return torch.bfloat16 if native_bfloat16_matmul(device) else None
    return None if cfg.autocast == "none" else torch.bfloat16


def train_model(
    cfg: ModelTrainConfig,
    model_cfg: ModelConfig,
    out: str | Path,
    *,
    show_progress: bool = True,
    overwrite: bool = False,
) -> LoadedModel:
    """Train the tokenizer (unless given) and the model; save model, tokenizer and training record
    into `out`; return the trained model as a LoadedModel. A folder that already holds a model is
    refused before any work unless overwrite."""
    cfg.validate()
    model_cfg.validate()
    check_output_folder(out, holds=(CONFIG_FILE, WEIGHTS_FILE), what="model", overwrite=overwrite)
    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    train_corpus, heldout_corpus = load_corpus(cfg.corpus, "train"), load_corpus(cfg.corpus, "heldout")
    tokenizer = (
        Tokenizer.load(cfg.tokenizer)
        if cfg.tokenizer
        else train_tokenizer(
            first_chars(train_corpus, cfg.tokenizer_chars),
            cfg.vocab_size,
            show_progress=show_progress and sys.stderr.isatty(),  # its own bar: terminals only
        )
    )
    model_cfg = dataclasses.replace(model_cfg, d_vocab=tokenizer.vocab_size, seed=cfg.seed)
    ctx = model_cfg.context_length
    model = build_native_model(model_cfg).to(cfg.device)
    heldout = _first_windows(heldout_corpus, tokenizer, ctx, max(1, cfg.eval_tokens // ctx))
    heldout_bytes = predicted_bytes(heldout, tokenizer.token_bytes())
    prompt = cfg.prompt if cfg.prompt is not None else default_prompt(cfg.corpus, heldout_corpus)
    prompt_tokens = torch.tensor([tokenizer.bos_id, *tokenizer.encode(prompt)])[:ctx]
    strings = tokenizer.token_strings()
    record = TrainingRecord(
        prompt=prompt,
        prompt_token_strings=[strings[i] for i in prompt_tokens.tolist()],
        sample_temperature=cfg.sample_temperature,
        sample_seed=cfg.seed,
        config={
            "model": dataclasses.asdict(model_cfg),
            "train": dataclasses.asdict(cfg),
            "corpus": train_corpus.describe(),
            "heldout_corpus": heldout_corpus.describe(),
        },
        tensors={"prompt_tokens": prompt_tokens, "mlp_post.init": _mlp_post(model, model_cfg, prompt_tokens)},
    )

    optimizer = _adamw(model, cfg)
    device = model_device(model)
    autocast_dtype = forward_autocast_dtype(cfg, device)
    budget_tokens, budget_seconds = cfg.budget()
    batches = _batches(token_sequences(train_corpus, tokenizer, ctx, cfg.seed, epochs=None), cfg.batch_size)
    heldout_marks = [i / (cfg.heldout_points + 1) for i in range(1, cfg.heldout_points + 1)]
    story_marks = sorted(cfg.story_points)

    def checkpoint(step: int, seen: int, progress: float, *, heldout_point: bool, story_point: bool) -> None:
        if heldout_point:
            record.add_heldout(step, seen, evaluate(model, heldout))
        if story_point:
            record.samples.append(_sample(model, tokenizer, prompt, cfg, ctx, step, seen, progress))

    checkpoint(0, 0, 0.0, heldout_point=True, story_point=True)
    bar = progress_bar(
        total=budget_tokens or int(budget_seconds),
        unit="tok" if budget_tokens else "s",
        unit_scale=bool(budget_tokens),
        disable=not show_progress,
        desc="training",
    )
    step, seen, train_seconds, progress = 0, 0, 0.0, 0.0
    model.train()
    while progress < 1.0:
        start = time.perf_counter()
        tokens = next(batches).to(cfg.device)
        lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) * _cosine(progress, cfg.min_lr_fraction)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            logits = model(tokens)
        loss = next_token_loss(logits, tokens)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        loss_value = loss.item()
        train_seconds += time.perf_counter() - start
        step += 1
        seen += tokens.numel()
        record.add_train_step(step, seen, loss_value, lr, train_seconds)
        before = progress
        progress = min(1.0, seen / budget_tokens) if budget_tokens else min(1.0, train_seconds / budget_seconds)
        bar.update((seen if budget_tokens else int(train_seconds)) - bar.n)
        bar.set_postfix(  # shown at the bar's next refresh (a redraw per step would flood a log file)
            loss=f"{loss_value:.3f}", tok_s=f"{seen / train_seconds:,.0f}", lr=f"{lr:.2e}", refresh=False
        )
        story_point, heldout_point = _crossed(story_marks, before, progress), _crossed(heldout_marks, before, progress)
        if story_point or heldout_point:
            model.eval()
            checkpoint(step, seen, progress, heldout_point=heldout_point, story_point=story_point)
            model.train()
    bar.close()
    model.eval()
    checkpoint(step, seen, 1.0, heldout_point=True, story_point=True)
    final_heldout = record.heldout_curve["loss"][-1]
    record.tensors["mlp_post.final"] = _mlp_post(model, model_cfg, prompt_tokens)
    record.summary = {
        "steps": step,
        "tokens": seen,
        "train_seconds": train_seconds,
        "tokens_per_second": seen / train_seconds,
        "wall_seconds": time.perf_counter() - started,  # since the call began: tokenizer, evaluations, samples
        "final_train_loss": sum(record.train_curve["loss"][-20:]) / len(record.train_curve["loss"][-20:]),
        "heldout_loss": final_heldout,
        "heldout_tokens": heldout.numel(),
        "heldout_predictions": heldout.shape[0] * (heldout.shape[1] - 1),
        "heldout_bytes": len(heldout_bytes),
        "heldout_bits_per_byte": bits_per_byte(final_heldout, heldout, len(heldout_bytes)),
        "compressors_bits_per_byte": compressor_bits_per_byte(heldout_bytes),
        "autocast": str(autocast_dtype).removeprefix("torch.") if autocast_dtype is not None else "none",
    }
    save_model(model, model_cfg, tokenizer, out, training={**record.summary, "corpus": cfg.corpus, "seed": cfg.seed})
    record.save(out)
    return LoadedModel(
        bridge=native_to_bridge(model, model_cfg, name=Path(out).name),
        tokenizer=tokenizer,
        name=Path(out).name,
        context_length=ctx,
    )


def initial_model(cfg: InitConfig) -> Path:
    """Save, into `cfg.out`, the model folder `cfg.like` as it was at initialisation (step 0: the same
    config, seed and tokenizer, untrained): the random-weights control of a scorecard.

    `cfg.out` must be missing, empty, or (with overwrite) a model folder other than `cfg.like`; it is
    built beside and renamed into place whole, so no file of a model it replaces is left in it."""
    like, out = Path(cfg.like), Path(cfg.out)
    if out.resolve() == like.resolve():
        raise ValueError(f"--out {out} is --like itself; the initialisation goes into a folder of its own.")
    config = read_json(like / CONFIG_FILE)
    check_output_folder(
        out, holds=(CONFIG_FILE, WEIGHTS_FILE), what="model", overwrite=cfg.overwrite, replaces_whole=True
    )
    model_cfg = ModelConfig(**config["model"])
    tokenizer = Tokenizer.load(like)
    training = {"initialisation_of": str(like.resolve()), "corpus": (config.get("training") or {}).get("corpus")}
    building = temp_path(out)
    shutil.rmtree(building, ignore_errors=True)
    try:
        save_model(build_native_model(model_cfg), model_cfg, tokenizer, building, training=training)
        if out.exists():
            shutil.rmtree(out)
        os.replace(building, out)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return out


def default_prompt(spec: str, heldout: Corpus) -> str:
    """The record's prompt when none is given: PROMPTS for the built-in corpora; for other corpora
    the opening lines (up to PROMPT_CHARS characters) of the first held-out document."""
    if spec in PROMPTS:
        return PROMPTS[spec]
    opening = next(iter(heldout))[:PROMPT_CHARS]
    return opening[: opening.rfind("\n") + 1] or opening


def next_token_loss(logits: Tensor, tokens: Tensor) -> Tensor:
    """Mean cross-entropy (nats) of predicting tokens[:, 1:] from logits[:, :-1]; logits [b, pos, vocab]."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten())


@torch.no_grad()
def evaluate(model: nn.Module, windows: Tensor, batch_size: int = 32) -> float:
    """Mean next-token cross-entropy (nats) over all windows [n, ctx], every prediction weighted equally."""
    device = model_device(model)
    total = 0.0
    for i in range(0, len(windows), batch_size):
        batch = windows[i : i + batch_size].to(device)
        total += next_token_loss(model(batch), batch).item() * len(batch)
    return total / len(windows)


def _adamw(model: nn.Module, cfg: ModelTrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (incl. embeddings), none on biases and norm gains; the
    fused kernel when cfg.fused_adam and torch has one for the device."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
        **(fast_adam(model_device(model)) if cfg.fused_adam else {}),
    )


def _crossed(marks: list[float], before: float, now: float) -> bool:
    """Whether progress passed a mark on this step (the end, 1.0, is handled on its own)."""
    return now < 1.0 and any(before < mark <= now for mark in marks)


def _cosine(progress: float, floor: float) -> float:
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _batches(windows: Iterator[Tensor], batch_size: int) -> Iterator[Tensor]:
    while True:
        yield torch.stack([next(windows) for _ in range(batch_size)])


def _first_windows(corpus: Corpus, tokenizer: Tokenizer, ctx: int, n: int) -> Tensor:
    """The first n packed windows [n, ctx] of a corpus (seed 0), fewer if it is short."""
    windows = []
    for window in token_sequences(corpus, tokenizer, ctx, seed=0):
        windows.append(window)
        if len(windows) == n:
            break
    if not windows:
        raise ValueError(
            f"held-out split of corpus {corpus.spec!r} is shorter than one window of {ctx} tokens; use a larger corpus."
        )
    return torch.stack(windows)


def first_chars(corpus: Corpus, max_chars: int) -> Iterator[str]:
    """The corpus's documents until max_chars characters are reached: what a tokenizer learns from."""
    total = 0
    for document in corpus:
        yield document
        total += len(document)
        if total >= max_chars:
            return


def _mlp_post(model: nn.Module, cfg: ModelConfig, tokens: Tensor) -> Tensor:
    """`blocks.{i}.mlp.hook_post` of the model's current weights, through a bridge on a copy."""
    return mlp_activations(native_to_bridge(copy.deepcopy(model), cfg), tokens)


def _sample(
    model: nn.Module,
    tokenizer: Tokenizer,
    prompt: str,
    cfg: ModelTrainConfig,
    ctx: int,
    step: int,
    seen: int,
    progress: float,
) -> Sample:
    greedy = sample_text(model, tokenizer, prompt, cfg.sample_tokens, context_length=ctx)
    sampled = sample_text(
        model,
        tokenizer,
        prompt,
        cfg.sample_tokens,
        context_length=ctx,
        temperature=cfg.sample_temperature,
        seed=cfg.seed,
    )
    return Sample(step=step, tokens=seen, progress=progress, greedy=greedy, sampled=sampled)


def mlp_activations(bridge: Any, tokens: Tensor) -> Tensor:
    """MLP neuron activations [n_layers, pos, d_mlp] of a bridge on one sequence `tokens` [pos]."""
    n_layers = bridge.cfg.n_layers
    names = [MLP_HOOK.format(layer=i) for i in range(n_layers)]
    device = model_device(bridge)
    with torch.no_grad():
        _, cache = bridge.run_with_cache(tokens[None].to(device), names_filter=lambda name: name in names)
    return torch.stack([cache[name][0].float().cpu() for name in names])
