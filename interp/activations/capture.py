"""Hook capture: run a model over token sequences and write the activations at named hooks to disk.

One forward pass per batch serves every requested hook, and the pass ends as soon as the last of
them has fired: blocks, final norm and unembedding past it never run (`stop_at_layer` is also set,
to the deepest hooked block + 1, or left off for a hook after the last block).

Each hook's activation [batch, pos, *shape] becomes rows [batch * pos, d_in], d_in = prod(shape):
per-head hooks ([batch, pos, n_heads, d_head]) are flattened into one vector per token, attention
patterns ([batch, n_heads, q_pos, k_pos]) into one row per query token; the per-token shape goes into
the manifest's metadata (`activation_shape`). Rows are appended with their token id and position to
one activation dataset per hook, `OUT/<hook_name>/` (sae.writer.ActivationWriter: atomic shards,
sha256 manifest, NaN/Inf check). Appends run on a background thread, so checking, hashing and
writing a batch's rows overlap the next forward pass; the rows are read straight from the hooked
activation (each pass allocates fresh ones), never copied on the CPU.

Resume: the token sequences are a deterministic function of (corpus, split, seed), so a resumed
capture regenerates them, skips the rows each dataset already holds (`tokens_written`), and appends
the rest; the result equals an uninterrupted capture byte for byte.
"""

from __future__ import annotations

import itertools
import queue
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path

import torch
from torch import Tensor

from interp.activations.config import CaptureConfig
from interp.activations.hooks import ActivationHooks, CapturePlan, plan_capture
from interp.activations.sources import corpus_windows, model_spec_id
from interp.model.corpus import batched_windows, load_corpus
from interp.model.transformer import load_model, model_device, weights_fingerprint
from sae.files import check_output_folder
from sae.progress import progress_bar
from sae.shards import STORAGE_DTYPES
from sae.writer import ActivationWriter

SHARD_BYTES = 64 * 2**20  # default shard size: about 64 MiB of activations


def check_dtype(name: str) -> str:
    """Return `name` if it is a storage dtype of activation datasets, else raise ValueError."""
    if name not in STORAGE_DTYPES:
        raise ValueError(
            f"--dtype {name!r} is not a storage dtype for activations; choose one of {', '.join(STORAGE_DTYPES)}."
        )
    return name


def default_tokens_per_shard(d_in: int, dtype: str, context_length: int) -> int:
    """About SHARD_BYTES of activations per shard, rounded down to whole context windows."""
    itemsize = STORAGE_DTYPES[dtype][0].itemsize
    return max(1, SHARD_BYTES // (d_in * itemsize * context_length)) * context_length


class _BackgroundWrites:
    """Runs ActivationWriter.add calls on one worker thread, in submission order.

    At most `max_pending` batches wait in the queue, which bounds memory. An error raised by a write
    is raised again in the caller, naming the hook and dataset, at the next `submit` or at `finish`;
    writes after a failed one are dropped.
    """

    def __init__(self, max_pending: int = 4):
        self._queue: queue.Queue = queue.Queue(max_pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="activation-writes", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            name, writer, rows, tokens, positions = item
            try:
                if self._error is None:
                    writer.add(rows, tokens, positions)
            except ValueError as err:
                self._error = ValueError(f"capture of hook {name!r} into {writer.path}: {err}")
                self._error.__cause__ = err
            except BaseException as err:  # an I/O error: re-raised as is in the caller
                self._error = err

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, name: str, writer: ActivationWriter, rows: Tensor, tokens: Tensor, positions: Tensor) -> None:
        self._raise_error()
        self._queue.put((name, writer, rows, tokens, positions))

    def close(self) -> None:
        """Wait for every submitted write (those after a failed one are dropped)."""
        self._queue.put(None)
        self._thread.join()

    def finish(self) -> None:
        """Wait for every submitted write; raise the first error."""
        self.close()
        self._raise_error()


def capture(
    bridge,
    plan: CapturePlan,
    batches: Iterable[Tensor],
    writers: Mapping[str, ActivationWriter],
    *,
    total_tokens: int,
    start_token: int = 0,
    progress: bool = True,
) -> int:
    """Run `batches` of token windows [b, context_length] through the model and append each hook's
    rows to `writers[hook name]`, stopping after `total_tokens` tokens.

    The first batch begins at dataset token `start_token`; rows a writer already holds (its
    `tokens_written`) are skipped, so writers that stopped at different shards all continue exactly
    where they stopped. Returns the number of tokens the datasets hold at the end.
    """
    ctx = plan.context_length
    device = model_device(bridge)
    held = {name: writer.tokens_written for name, writer in writers.items()}  # before the writes thread adds any
    done = start_token
    bar = progress_bar(
        total=total_tokens,
        initial=min(held.values()),
        unit="tok",
        unit_scale=True,
        desc="capture",
        disable=not progress,
        dynamic_ncols=True,
        smoothing=0.1,
    )
    writes = _BackgroundWrites()
    try:
        with ActivationHooks(bridge, plan.hook_names, plan.stop_at_layer) as hooks:
            for batch in batches:
                if done >= total_tokens:
                    break
                if batch.ndim != 2 or batch.shape[1] != ctx:
                    raise ValueError(f"token batches must have shape [batch, {ctx}], got {list(batch.shape)}.")
                acts = hooks.run(batch.to(device))
                n = min(batch.numel(), total_tokens - done)
                tokens = batch.reshape(-1)[:n].to("cpu", torch.int32)
                positions = torch.arange(ctx, dtype=torch.int32).repeat(batch.shape[0])[:n]
                for spec in plan.hooks:
                    skip = min(max(0, held[spec.name] - done), n)
                    if skip < n:  # a view of this pass's activation: no later pass writes to it
                        rows = spec.rows(acts[spec.name])[skip:n]
                        writes.submit(spec.name, writers[spec.name], rows, tokens[skip:], positions[skip:])
                bar.update(max(0, done + n - bar.n))
                done += n
        writes.finish()
    except BaseException:
        writes.close()  # rows already computed still reach the disk; the caller's error wins
        raise
    finally:
        bar.close()
    return done


def capture_to_disk(
    bridge,
    hook_names: Sequence[str],
    sequences: Iterable[Tensor],
    out: str | Path,
    *,
    total_tokens: int,
    model_id: str,
    context_length: int,
    dtype: str = "float32",
    batch_size: int = CaptureConfig.batch_size,
    tokens_per_shard: int | None = None,
    metadata: dict | None = None,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Path]:
    """Capture `total_tokens` tokens of `sequences` ([context_length] token tensors, deterministic)
    at every hook in one pass per batch, into one activation dataset per hook: {hook: OUT/<hook>}.

    With `resume=True`, existing datasets under `out` continue where their complete shards end.
    `metadata` (corpus spec, seed, ...) goes into every manifest; a resume must match it.
    """
    check_dtype(dtype)
    if total_tokens <= 0 or batch_size <= 0:
        raise ValueError(f"--tokens and --batch-size must be positive, got {total_tokens} and {batch_size}.")
    plan = plan_capture(bridge, hook_names, context_length)
    sequences = iter(sequences)
    first = next(sequences, None)  # corpus errors surface here, before any folder is made
    if first is None:
        corpus = (metadata or {}).get("corpus", "the corpus")
        raise ValueError(
            f"no token sequences to capture: {corpus} holds less than one window of {context_length} tokens; "
            "use a larger corpus."
        )
    sequences = itertools.chain([first], sequences)
    out = Path(out)
    paths = {spec.name: out / spec.name for spec in plan.hooks}
    with ExitStack() as stack:
        writers = {}
        for spec in plan.hooks:
            writers[spec.name] = stack.enter_context(
                ActivationWriter(
                    paths[spec.name],
                    d_in=spec.d_in,
                    dtype=dtype,
                    hook_name=spec.name,
                    model_id=model_id,
                    context_length=context_length,
                    tokens_per_shard=tokens_per_shard
                    if tokens_per_shard is not None
                    else default_tokens_per_shard(spec.d_in, dtype, context_length),
                    metadata={**(metadata or {}), "hooks": list(plan.hook_names), "activation_shape": list(spec.shape)},
                    resume=resume,
                    expected_tokens=total_tokens,
                )
            )
        # Restart at the batch boundary at or before the least advanced dataset: each batch then holds
        # the same windows as in an uninterrupted capture, so every row comes out bit-identical.
        window_batch = batch_size * context_length
        start = min(w.tokens_written for w in writers.values()) // window_batch * window_batch
        sequences = itertools.islice(sequences, start // context_length, None)
        done = capture(
            bridge,
            plan,
            batched_windows(sequences, batch_size),
            writers,
            total_tokens=total_tokens,
            start_token=start,
            progress=progress,
        )
    if done < total_tokens:
        print(
            f"capture: the corpus ran out after {done} of {total_tokens} tokens; the datasets hold {done}.",
            file=sys.stderr,
        )
    return paths


def run_capture(cfg: CaptureConfig, *, progress: bool = True) -> dict[str, Path]:
    """`interp capture`: load the model and corpus by spec, then `capture_to_disk`."""
    cfg.validate()
    check_dtype(cfg.dtype)
    check_output_folder(cfg.out)
    loaded = load_model(cfg.model, device=cfg.device)
    sequences = corpus_windows(load_corpus(cfg.corpus, split=cfg.split), loaded, seed=cfg.corpus_seed)
    metadata = {
        "model": model_spec_id(cfg.model),
        "weights": weights_fingerprint(loaded.bridge),
        "corpus": cfg.corpus,
        "split": cfg.split,
        "seed": cfg.corpus_seed,
    }
    return capture_to_disk(
        loaded.bridge,
        cfg.hooks,
        sequences,
        cfg.out,
        total_tokens=cfg.tokens,
        model_id=loaded.name,
        context_length=loaded.context_length,
        dtype=cfg.dtype,
        batch_size=cfg.batch_size,
        tokens_per_shard=cfg.shard_tokens,
        metadata=metadata,
        resume=cfg.resume,
        progress=progress,
    )
