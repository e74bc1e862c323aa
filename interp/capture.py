"""Hook capture: run a model over token sequences and write the activations at named hooks to disk.

One forward pass per batch serves every requested hook, and the pass ends as soon as the last of
them has fired: blocks, final norm and unembedding past it never run (`stop_at_layer` is also set,
to the deepest hooked block + 1, or left off for a hook after the last block).

Each hook's activation [batch, pos, *shape] becomes rows [batch * pos, d_in], d_in = prod(shape):
per-head hooks ([batch, pos, n_heads, d_head]) are flattened into one vector per token, attention
patterns ([batch, n_heads, q_pos, k_pos]) into one row per query token; the per-token shape goes into
the manifest's metadata (`activation_shape`). Rows are appended with their token id and position to
one activation dataset per hook, `OUT/<hook_name>/` (sae.data.ActivationWriter: atomic shards,
sha256 manifest, NaN/Inf check). Appends run on a background thread, so checking, hashing and
writing a batch's rows overlap the next forward pass; the rows are read straight from the hooked
activation (each pass allocates fresh ones), never copied on the CPU. On a CPU the forward pass and
the writes take turns at one core (`_CoreSharing`) instead of stalling each other.

Resume: the token sequences are a deterministic function of (corpus, split, seed), so a resumed
capture regenerates them, skips the rows each dataset already holds (`tokens_written`), and appends
the rest; the result equals an uninterrupted capture byte for byte.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import itertools
import math
import queue
import re
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from sae.shards import STORAGE_DTYPES
from sae.writer import ActivationWriter
from torch import Tensor
from tqdm import tqdm

from interp.corpus import load_corpus, token_sequences
from interp.model import load_model

SHARD_BYTES = 64 * 2**20  # default shard size: about 64 MiB of activations
DEFAULT_BATCH_SIZE = 32  # context windows per forward pass
_BLOCK_HOOK = re.compile(r"^blocks\.(\d+)\.")
_EMBEDDING_STAGE = ("hook_embed", "hook_pos_embed", "hook_tokens", "embed.", "pos_embed.")


def check_dtype(name: str) -> str:
    """Return `name` if it is a storage dtype of activation datasets, else raise ValueError."""
    if name not in STORAGE_DTYPES:
        raise ValueError(
            f"--dtype {name!r} is not a storage dtype for activations; choose one of {', '.join(STORAGE_DTYPES)}."
        )
    return name


def stop_layer(hook_names: Iterable[str], n_layers: int) -> int | None:
    """`stop_at_layer` for a forward pass that must reach every hook in `hook_names`.

    Deepest hooked block + 1 for block hooks (`blocks.3.mlp.hook_post` -> 4), 0 when every hook is
    in the embedding stage, None (a full pass) when a hook lies after the last block (ln_final, unembed).
    """
    deepest = -1
    for name in hook_names:
        match = _BLOCK_HOOK.match(name)
        if match:
            deepest = max(deepest, int(match.group(1)))
        elif not name.startswith(_EMBEDDING_STAGE):
            return None
    return min(deepest + 1, n_layers)


def _compact_hook_list(names: Iterable[str]) -> str:
    """Hook names with block indices folded: `blocks.{0..11}.mlp.hook_post` once, not twelve times."""
    grouped: dict[str, list[int]] = {}
    for name in names:
        match = _BLOCK_HOOK.match(name)
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
                f"Valid hook names of this model: {_compact_hook_list(hook_point_names)}."
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
        return activation.movedim(self.position_dim, 1).reshape(-1, self.d_in)


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


def _enable_gated_hooks(bridge, hook_names: Sequence[str]) -> None:
    """Turn on the bridge settings some hooks need to fire at all (use_hook_mlp_in for
    blocks.N.hook_mlp_in, use_attn_result for attn.hook_result, ...); they stay on afterwards."""
    for name in hook_names:
        setting = bridge._gated_hook_reason(name)
        if setting is None:
            continue
        try:
            getattr(bridge, f"set_{setting}")(True)
        except NotImplementedError as err:
            raise ValueError(
                f"hook {name!r} needs the model setting {setting}, which this model does not support "
                f"({err}); choose another hook."
            ) from err


def plan_capture(bridge, hook_names: Sequence[str], context_length: int) -> CapturePlan:
    """Validate `hook_names` against the model (turning on the settings gated hooks need) and learn
    each hook's per-token shape from one probe pass over a [1, context_length] sequence."""
    hook_names = list(hook_names)
    check_hook_names(list(bridge.hook_dict), hook_names)
    _enable_gated_hooks(bridge, hook_names)
    stop = stop_layer(hook_names, len(bridge.blocks))
    device = next(bridge.parameters()).device
    probe = torch.zeros(1, context_length, dtype=torch.long, device=device)
    with ActivationHooks(bridge, hook_names, stop) as hooks:
        acts = hooks.run(probe)
    specs = []
    for name in hook_names:
        act = acts[name]
        # attention patterns and scores carry the query position at -2, everything else at 1
        position_dim = act.ndim - 2 if name.endswith(("hook_pattern", "hook_attn_scores")) else 1
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


def weights_fingerprint(bridge) -> str:
    """Short hash of the model's parameters (names, shapes and up to 4096 evenly spaced values each):
    a resumed capture must run the same weights as the one it continues."""
    digest = hashlib.sha256()
    for name, tensor in sorted(bridge.state_dict().items()):
        flat = tensor.detach().flatten()
        sample = flat[:: max(1, flat.numel() // 4096)].to("cpu", torch.float32).contiguous()
        digest.update(f"{name}{list(tensor.shape)}{tensor.dtype}".encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]


def default_tokens_per_shard(d_in: int, dtype: str, context_length: int) -> int:
    """About SHARD_BYTES of activations per shard, rounded down to whole context windows."""
    itemsize = STORAGE_DTYPES[dtype][0].itemsize
    return max(1, SHARD_BYTES // (d_in * itemsize * context_length)) * context_length


class _BackgroundWrites:
    """Runs ActivationWriter.add calls on one worker thread, in submission order.

    At most `max_pending` batches wait in the queue, which bounds memory. An error raised by a write
    is raised again in the caller, naming the hook and dataset, at the next `submit` or at `finish`;
    writes after a failed one are dropped. The worker takes a batch only while `gate` is open.
    """

    def __init__(self, max_pending: int = 4):
        self.max_pending = max_pending
        self._queue: queue.Queue = queue.Queue(max_pending)
        self._error: BaseException | None = None
        self.gate = threading.Event()
        self.gate.set()
        self._submitted = self._done = 0  # each counter is written by one thread only
        self._thread = threading.Thread(target=self._work, name="activation-writes", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            self.gate.wait()
            name, writer, rows, tokens, positions = item
            try:
                if self._error is None:
                    writer.add(rows, tokens, positions)
            except ValueError as err:
                self._error = ValueError(f"capture of hook {name!r} into {writer.path}: {err}")
                self._error.__cause__ = err
            except BaseException as err:  # an I/O error: re-raised as is in the caller
                self._error = err
            finally:
                self._done += 1

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    @property
    def pending(self) -> int:
        """Batches submitted and not yet written."""
        return self._submitted - self._done

    def submit(self, name: str, writer: ActivationWriter, rows: Tensor, tokens: Tensor, positions: Tensor) -> None:
        self._raise_error()
        if self._queue.full():
            self.gate.set()  # never wait on a worker that is held back
        self._submitted += 1
        self._queue.put((name, writer, rows, tokens, positions))

    def close(self) -> None:
        """Wait for every submitted write (those after a failed one are dropped)."""
        self.gate.set()
        self._queue.put(None)
        self._thread.join()

    def finish(self) -> None:
        """Wait for every submitted write; raise the first error."""
        self.close()
        self._raise_error()


class _CoreSharing:
    """Keeps the writes thread and a CPU forward pass that uses every core from running at once.

    A forward pass on all of torch's threads stalls whenever the writes thread (hashing and writing,
    about 1.7 us of CPU per 2 KiB row) takes one of their cores. So the writes are held while batches
    accumulate, and once `max_pending` wait, the next pass runs on one thread fewer while the writes
    thread drains them on the freed core. On a GPU, or with one torch thread, writes run freely."""

    def __init__(self, writes: _BackgroundWrites, device: torch.device, enabled: bool = True):
        self.writes, self.threads = writes, torch.get_num_threads()
        self.active = enabled and device.type == "cpu" and self.threads > 1

    @contextmanager
    def forward(self):
        """Around one forward pass: all threads with the writes held, or one fewer while they drain."""
        if not self.active:
            yield
            return
        drain = self.writes.pending >= self.writes.max_pending
        if drain:
            torch.set_num_threads(self.threads - 1)
            self.writes.gate.set()
        else:
            self.writes.gate.clear()
        try:
            yield
        finally:
            if drain:
                torch.set_num_threads(self.threads)


def capture(
    bridge,
    plan: CapturePlan,
    batches: Iterable[Tensor],
    writers: Mapping[str, ActivationWriter],
    *,
    total_tokens: int,
    start_token: int = 0,
    progress: bool = True,
    share_cores: bool = True,
) -> int:
    """Run `batches` of token windows [b, context_length] through the model and append each hook's
    rows to `writers[hook name]`, stopping after `total_tokens` tokens.

    The first batch begins at dataset token `start_token`; rows a writer already holds (its
    `tokens_written`) are skipped, so writers that stopped at different shards all continue exactly
    where they stopped. Returns the number of tokens the datasets hold at the end.
    share_cores=False lets the writes run whenever they can (`_CoreSharing` off; for comparison).
    """
    ctx = plan.context_length
    device = next(bridge.parameters()).device
    held = {name: writer.tokens_written for name, writer in writers.items()}  # before the writes thread adds any
    done = start_token
    bar = tqdm(
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
    cores = _CoreSharing(writes, device, enabled=share_cores)
    try:
        with ActivationHooks(bridge, plan.hook_names, plan.stop_at_layer) as hooks:
            for batch in batches:
                if done >= total_tokens:
                    break
                if batch.ndim != 2 or batch.shape[1] != ctx:
                    raise ValueError(f"token batches must have shape [batch, {ctx}], got {list(batch.shape)}.")
                with cores.forward():
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


def batched(sequences: Iterable[Tensor], batch_size: int) -> Iterator[Tensor]:
    """[ctx] token sequences -> [batch_size, ctx] batches (the last one may be smaller)."""
    iterator = iter(sequences)
    while chunk := list(itertools.islice(iterator, batch_size)):
        yield torch.stack(chunk)


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
    batch_size: int = DEFAULT_BATCH_SIZE,
    tokens_per_shard: int | None = None,
    metadata: dict | None = None,
    resume: bool = False,
    progress: bool = True,
    share_cores: bool = True,
) -> dict[str, Path]:
    """Capture `total_tokens` tokens of `sequences` ([context_length] token tensors, deterministic)
    at every hook in one pass per batch, into one activation dataset per hook: {hook: OUT/<hook>}.

    With `resume=True`, existing datasets under `out` continue where their complete shards end.
    `metadata` (corpus spec, seed, ...) goes into every manifest; a resume must match it.
    `share_cores`: see `capture`.
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
                    tokens_per_shard=tokens_per_shard or default_tokens_per_shard(spec.d_in, dtype, context_length),
                    metadata={**(metadata or {}), "hooks": list(plan.hook_names), "activation_shape": list(spec.shape)},
                    resume=resume,
                    expected_tokens=total_tokens,
                )
            )
        for name, writer in writers.items():
            if writer.tokens_written > total_tokens:
                raise ValueError(
                    f"{writer.path} already holds {writer.tokens_written} tokens, more than --tokens {total_tokens}; "
                    f"resume with --tokens {writer.tokens_written} or more, or capture into a new folder."
                )
        # Restart at the batch boundary at or before the least advanced dataset: each batch then holds
        # the same windows as in an uninterrupted capture, so every row comes out bit-identical.
        window_batch = batch_size * context_length
        start = min(w.tokens_written for w in writers.values()) // window_batch * window_batch
        sequences = itertools.islice(sequences, start // context_length, None)
        done = capture(
            bridge,
            plan,
            batched(sequences, batch_size),
            writers,
            total_tokens=total_tokens,
            start_token=start,
            progress=progress,
            share_cores=share_cores,
        )
    if done < total_tokens:
        print(
            f"capture: the corpus ran out after {done} of {total_tokens} tokens; the datasets hold {done}.",
            file=sys.stderr,
        )
    return paths


def run_capture(
    model: str | Path,
    hooks: Sequence[str],
    corpus: str,
    tokens: int,
    out: str | Path,
    *,
    dtype: str = "float32",
    batch_size: int = DEFAULT_BATCH_SIZE,
    tokens_per_shard: int | None = None,
    resume: bool = False,
    seed: int = 0,
    split: str = "train",
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Path]:
    """`interp capture`: load the model and corpus by spec, then `capture_to_disk`."""
    check_dtype(dtype)
    loaded = load_model(model, device=device)
    model_spec = str(Path(model).resolve()) if Path(model).exists() else str(model)
    sequences = token_sequences(load_corpus(corpus, split=split), loaded.tokenizer, loaded.context_length, seed)
    metadata = {
        "model": model_spec,
        "weights": weights_fingerprint(loaded.bridge),
        "corpus": corpus,
        "split": split,
        "seed": seed,
    }
    return capture_to_disk(
        loaded.bridge,
        hooks,
        sequences,
        out,
        total_tokens=tokens,
        model_id=loaded.name,
        context_length=loaded.context_length,
        dtype=dtype,
        batch_size=batch_size,
        tokens_per_shard=tokens_per_shard,
        metadata=metadata,
        resume=resume,
        progress=progress,
    )


def _cli(args: argparse.Namespace) -> int:
    paths = run_capture(
        args.model,
        args.hooks,
        args.corpus,
        args.tokens,
        args.out,
        dtype=args.dtype,
        batch_size=args.batch_size,
        tokens_per_shard=args.shard_tokens,
        resume=args.resume,
        seed=args.seed,
        split=args.split,
        device=args.device,
    )
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "capture",
        help="write a model's activations at hooks to activation datasets",
        description="Run a model over a corpus and write the activations at each --hook to OUT/<hook>/ "
        "(manifest.json + safetensors shards). One forward pass serves all hooks and stops "
        "after the deepest one.",
    )
    p.add_argument("--model", required=True, help="model folder, Hugging Face checkpoint directory or model name")
    p.add_argument(
        "--hook",
        dest="hooks",
        action="append",
        required=True,
        metavar="NAME",
        help="hook name, e.g. blocks.0.mlp.hook_post; repeat for several (`interp hooks` lists them)",
    )
    p.add_argument("--corpus", default="stdlib", help="corpus spec (default: stdlib, the built-in corpus)")
    p.add_argument("--split", default="train", help="corpus split: train or heldout (default: train)")
    p.add_argument("--tokens", type=int, required=True, help="number of tokens to capture")
    p.add_argument("--out", type=Path, required=True, help="output folder; one dataset per hook inside")
    p.add_argument("--dtype", default="float32", help="storage dtype: float32 (default), float16 or bfloat16")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="context windows per forward pass")
    p.add_argument(
        "--shard-tokens",
        type=int,
        default=None,
        help="tokens per shard, a multiple of the context length (default: about 64 MiB per shard)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the corpus sequence order")
    p.add_argument("--resume", action="store_true", help="continue a killed capture from its last complete shard")
    p.add_argument("--device", default=None, help="torch device (default: the model loader's choice)")
    p.set_defaults(run=_cli)
