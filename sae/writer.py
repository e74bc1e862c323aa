"""Writing an activation dataset (the format of sae.shards), one atomically written shard at a time.

`ActivationWriter` streams each shard's rows into a temp file as they arrive, hashing them in file
order, and on completion fsyncs and renames it (os.replace) and rewrites the manifest atomically,
so a killed capture leaves a valid dataset of its complete shards and `resume=True` continues
after them.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import Tensor

from sae.files import TMP_SUFFIX, write_json
from sae.shards import (
    FORMAT_VERSION,
    MANIFEST,
    RESUME_FIELDS,
    STORAGE_DTYPES,
    raw_bytes,
    read_header,
    read_manifest,
    shard_layout,
    shard_name,
)


class _ShardFile:
    """The shard being filled: rows go to its temp file as they arrive and are hashed in file order,
    so completing it costs only its tokens and positions (no second pass over the acts) when it ends
    with the `capacity` rows its header was written for."""

    def __init__(self, final: Path, capacity: int, d_in: int, dtype: str):
        self.final, self.tmp = final, final.with_name(final.name + TMP_SUFFIX)
        self.d_in, self.dtype = d_in, dtype
        self.row_bytes = d_in * STORAGE_DTYPES[dtype][0].itemsize
        self.header, order = shard_layout(capacity, d_in, dtype)
        self.streamed = order[0] == "acts"  # the acts already sit where the finished file has them
        self.rows = 0
        self.tokens: list[bytes] = []  # int32 bytes of each appended piece
        self.positions: list[bytes] = []
        self.digest = hashlib.sha256()
        self.fh: BinaryIO = open(self.tmp, "w+b")
        self._emit(self.header)

    def _emit(self, data: bytes | memoryview) -> None:
        self.digest.update(data)  # hashlib and file writes release the GIL for large buffers
        self.fh.write(data)

    def append(self, acts: Tensor, tokens: Tensor, positions: Tensor) -> None:
        """acts [m, d_in] contiguous, storage dtype; tokens, positions [m] int32 (copied: they end the file)."""
        self._emit(raw_bytes(acts))
        self.tokens.append(tokens.numpy().tobytes())
        self.positions.append(positions.numpy().tobytes())
        self.rows += acts.shape[0]

    def finish(self) -> str:
        """Complete and fsync the temp file; return its sha256. A shard whose row count differs from
        the capacity its header was written for is written out again with its own header."""
        parts = {"tokens": b"".join(self.tokens), "positions": b"".join(self.positions)}
        header, order = shard_layout(self.rows, self.d_in, self.dtype)
        if header == self.header and self.streamed:
            self._emit(parts["tokens"])
            self._emit(parts["positions"])
        else:
            self.fh.seek(len(self.header))
            parts["acts"] = self.fh.read(self.rows * self.row_bytes)
            self.fh.seek(0)
            self.fh.truncate()
            self.digest = hashlib.sha256()
            self._emit(header)
            for key in order:
                self._emit(parts[key])
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        return self.digest.hexdigest()

    def discard(self) -> None:
        self.fh.close()
        self.tmp.unlink(missing_ok=True)


class ActivationWriter:
    """Append activations to a dataset folder, one atomically written shard at a time.

    Use as a context manager; leaving the block normally calls `close()` (writes the last, partial
    shard and marks the manifest complete), leaving it by an exception keeps only complete shards
    so the capture can resume. `tokens_written` is the number of tokens in shards on disk; after
    `resume=True` it is where the caller continues (the caller skips exactly that many tokens).
    `expected_tokens`, the dataset's total when the caller knows it, lets the last shard be written
    and hashed in one pass like the others (without it, a last shard shorter than `tokens_per_shard`
    is written out and hashed a second time at `close()`).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        d_in: int,
        dtype: str,
        hook_name: str,
        model_id: str,
        context_length: int,
        tokens_per_shard: int,
        metadata: dict | None = None,
        resume: bool = False,
        expected_tokens: int | None = None,
    ):
        if dtype not in STORAGE_DTYPES:
            raise ValueError(f"dtype {dtype!r} is not supported; choose one of {sorted(STORAGE_DTYPES)}.")
        if d_in <= 0 or context_length <= 0 or tokens_per_shard <= 0:
            raise ValueError(
                f"d_in, context_length and tokens_per_shard must be positive, got d_in={d_in}, "
                f"context_length={context_length}, tokens_per_shard={tokens_per_shard}."
            )
        if tokens_per_shard % context_length:
            raise ValueError(
                f"tokens_per_shard ({tokens_per_shard}) must be a multiple of context_length ({context_length}) "
                f"so that no context window straddles two shards; try {max(1, tokens_per_shard // context_length) * context_length}."
            )
        self.path = Path(path)
        self.torch_dtype = STORAGE_DTYPES[dtype][0]
        self.manifest: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "model_id": model_id,
            "hook_name": hook_name,
            "d_in": d_in,
            "dtype": dtype,
            "context_length": context_length,
            "tokens_per_shard": tokens_per_shard,
            "total_tokens": 0,
            "complete": False,
            "shards": [],
            "metadata": dict(metadata or {}),
        }
        self._open: _ShardFile | None = None  # the shard rows are going to
        self._closed = False
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer")
        self._in_flight: Future | None = None  # the full shard being fsync-ed and renamed in the background
        self.path.mkdir(parents=True, exist_ok=True)
        if resume and (self.path / MANIFEST).is_file():
            self._resume(metadata or {})
        else:
            existing = sorted(p.name for p in self.path.glob("acts-*.safetensors")) + (
                [MANIFEST] if (self.path / MANIFEST).exists() else []
            )
            if existing and not resume:
                raise ValueError(
                    f"{self.path} already holds an activation dataset ({', '.join(existing[:3])}...); "
                    f"pass resume=True (--resume) to continue it, or choose an empty folder."
                )
            self._remove_strays()
            self._write_manifest()
        self._next_row = self.tokens_written  # dataset index of the next row add() receives
        self._next_shard = len(self.manifest["shards"])  # index of the next shard to open
        self.expected_tokens = expected_tokens

    # --- resume ------------------------------------------------------------------------
    def _resume(self, metadata: dict) -> None:
        stored = read_manifest(self.path)
        differ = [
            f"{k}: dataset has {stored[k]!r}, capture has {self.manifest[k]!r}"
            for k in RESUME_FIELDS
            if stored[k] != self.manifest[k]
        ]
        differ += [
            f"metadata[{k!r}]: dataset has {stored['metadata'][k]!r}, capture has {v!r}"
            for k, v in metadata.items()
            if k in stored["metadata"] and stored["metadata"][k] != v
        ]
        if differ:
            raise ValueError(
                f"cannot resume {self.path}: the existing dataset was captured with different settings "
                f"({'; '.join(differ)}). Re-run with the original settings or write to a new folder."
            )
        shards = list(stored["shards"])
        if stored["complete"] and shards and shards[-1]["tokens"] < self.manifest["tokens_per_shard"]:
            shards.pop()  # a final partial shard is rewritten in full once more tokens come
        for entry in shards:
            file = self.path / entry["file"]
            if not file.is_file():
                raise FileNotFoundError(
                    f"cannot resume {self.path}: shard {file} listed in {MANIFEST} is missing; "
                    f"the dataset is damaged, re-capture it into a new folder."
                )
            read_header(file, entry["sha256"])
        self.manifest["metadata"] = {**stored["metadata"], **metadata}
        self.manifest["shards"] = shards
        self.manifest["total_tokens"] = sum(s["tokens"] for s in shards)
        self._write_manifest()
        self._remove_strays()

    def _remove_strays(self) -> None:
        """Delete temp files and shard files the manifest does not list (left by a killed capture)."""
        listed = {s["file"] for s in self.manifest["shards"]}
        for p in self.path.iterdir():
            if p.name.endswith(TMP_SUFFIX) or (p.name.startswith("acts-") and p.name not in listed):
                p.unlink()

    # --- writing -----------------------------------------------------------------------
    @property
    def tokens_written(self) -> int:
        """Tokens in shards complete on disk (shards still being written in the background excluded)."""
        return self.manifest["total_tokens"]

    def add(self, acts: Tensor, tokens: Tensor, positions: Tensor | None = None) -> None:
        """Append rows. acts [n, d_in] float; tokens [n] int; positions [n] int (default: the
        row's index in the dataset modulo context_length, i.e. whole context windows in order).
        The rows are hashed and written to the current shard's temp file before this returns (so the
        caller may reuse its tensors); a full shard is fsync-ed and renamed by a background thread."""
        if self._closed:
            raise ValueError(
                f"ActivationWriter for {self.path} is closed; open a new one with resume=True to add more."
            )
        d_in = self.manifest["d_in"]
        if acts.ndim != 2 or acts.shape[1] != d_in:
            raise ValueError(f"acts must have shape [n, {d_in}] (d_in of this dataset), got {list(acts.shape)}.")
        n = acts.shape[0]
        if tokens.shape != (n,):
            raise ValueError(f"tokens must have shape [{n}] to match acts, got {list(tokens.shape)}.")
        if tokens.is_floating_point():
            raise ValueError(f"tokens must be integer token ids, got dtype {tokens.dtype}.")
        start = self._next_row
        if positions is None:
            positions = torch.arange(start, start + n) % self.manifest["context_length"]
        elif positions.shape != (n,):
            raise ValueError(f"positions must have shape [{n}] to match acts, got {list(positions.shape)}.")
        stored = acts.detach().to("cpu", self.torch_dtype).contiguous()
        # a finite sum proves every value finite (NaN/Inf propagate); only then is the row search needed
        finite = torch.isfinite(stored.sum(dtype=torch.float32)) or torch.isfinite(stored).all()
        if not finite:
            row = int((~torch.isfinite(stored).all(dim=1)).nonzero()[0, 0])
            index = start + row
            tps = self.manifest["tokens_per_shard"]
            overflow = (
                ""
                if not torch.isfinite(acts[row]).all()
                else f" (finite in the input, overflows {self.manifest['dtype']})"
            )
            raise ValueError(
                f"non-finite activation (NaN/Inf){overflow} in row {row} of this batch: dataset token {index}, "
                f"shard {index // tps} ({shard_name(index // tps)}) row {index % tps}. Nothing from this batch was written; "
                f"check the model's numerics or capture with a wider dtype."
            )
        tokens = tokens.detach().to("cpu", torch.int32)
        positions = positions.detach().to("cpu", torch.int32)
        tps, done = self.manifest["tokens_per_shard"], 0
        while done < n:
            if self._open is None:
                left = tps if self.expected_tokens is None else self.expected_tokens - (start + done)
                self._open = _ShardFile(
                    self.path / shard_name(self._next_shard), min(tps, max(left, 1)), d_in, self.manifest["dtype"]
                )
                self._next_shard += 1
            take = min(n - done, tps - self._open.rows)
            self._open.append(stored[done : done + take], tokens[done : done + take], positions[done : done + take])
            done += take
            if self._open.rows == tps:
                self._complete_open_shard()
        self._next_row += n

    def _complete_open_shard(self) -> None:
        """Hand the shard being filled to the background thread, which finishes, fsyncs and renames it."""
        shard, self._open = self._open, None
        try:
            self._wait()  # one shard completing at a time, in order
        except BaseException:
            shard.discard()
            raise
        self._in_flight = self._pool.submit(self._publish, shard)

    def _publish(self, shard: _ShardFile) -> None:
        """Finish the shard's file, move it into place and record it in the manifest."""
        try:
            sha256 = shard.finish()
            os.replace(shard.tmp, shard.final)
        except BaseException:
            shard.discard()
            raise
        self.manifest["shards"].append({"file": shard.final.name, "tokens": shard.rows, "sha256": sha256})
        self.manifest["total_tokens"] += shard.rows
        self._write_manifest()

    def _wait(self) -> None:
        """Block until the background shard write is done; re-raise its error here."""
        if self._in_flight is not None:
            future, self._in_flight = self._in_flight, None
            future.result()

    def _discard_open_shard(self) -> None:
        if self._open is not None:
            shard, self._open = self._open, None
            shard.discard()

    def _write_manifest(self) -> None:
        write_json(self.path / MANIFEST, self.manifest, indent=1, durable=True)

    def close(self) -> None:
        """Write the last (partial) shard and mark the dataset complete."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._open is not None:
                self._complete_open_shard()
            self._wait()
            self.manifest["complete"] = True
            self._write_manifest()
        finally:
            self._discard_open_shard()
            self._pool.shutdown()

    def __enter__(self) -> ActivationWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        self._closed = True  # keep complete shards only; resume continues from them
        self._discard_open_shard()
        try:
            self._wait()
        except Exception:
            pass
        finally:
            self._pool.shutdown()
