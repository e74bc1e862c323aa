"""Writing an activation dataset (the format of sae.shards), one atomically written shard at a time.

`ActivationWriter` collects each shard's rows in memory; a complete shard is written by the
safetensors library into a temp file, fsync-ed, hashed from the finished file (hashlib) and renamed
into place on a background thread, then the manifest is rewritten atomically. So a killed capture
leaves a valid dataset of its complete shards, and `resume=True` continues after them.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sae.files import TMP_SUFFIX, write_json, write_safetensors
from sae.shards import (
    FORMAT_VERSION,
    MANIFEST,
    RESUME_FIELDS,
    STORAGE_DTYPES,
    read_header,
    read_manifest,
    sha256_file,
    shard_name,
)


class _ShardBuffer:
    """The shard being filled: its rows copied into tensors preallocated for `capacity` rows (grown
    once, to `limit` rows, when more come), written by the safetensors library once the shard is
    complete and hashed from the finished file."""

    def __init__(self, final: Path, capacity: int, limit: int, d_in: int, dtype: str):
        self.final, self.limit = final, limit
        self.acts = torch.empty(capacity, d_in, dtype=STORAGE_DTYPES[dtype][0])
        self.tokens = torch.empty(capacity, dtype=torch.int32)
        self.positions = torch.empty(capacity, dtype=torch.int32)
        self.rows = 0

    def append(self, acts: Tensor, tokens: Tensor, positions: Tensor) -> None:
        """acts [m, d_in] storage dtype; tokens, positions [m] int32; at most `limit` rows in all."""
        m = acts.shape[0]
        if self.rows + m > len(self.acts):  # more rows than expected_tokens promised
            grown = [t.new_empty(self.limit, *t.shape[1:]) for t in (self.acts, self.tokens, self.positions)]
            for new, old in zip(grown, (self.acts, self.tokens, self.positions)):
                new[: self.rows] = old[: self.rows]
            self.acts, self.tokens, self.positions = grown
        rows = slice(self.rows, self.rows + m)
        self.acts[rows], self.tokens[rows], self.positions[rows] = acts, tokens, positions
        self.rows += m

    def publish(self) -> str:
        """Write the shard (temp file, fsync, rename) and return the sha256 of the file."""
        tensors = {"acts": self.acts[: self.rows], "tokens": self.tokens[: self.rows]}
        tensors["positions"] = self.positions[: self.rows]
        return sha256_file(write_safetensors(self.final, tensors, durable=True))


class ActivationWriter:
    """Append activations to a dataset folder, one atomically written shard at a time.

    Use as a context manager; leaving the block normally calls `close()` (writes the last, partial
    shard and marks the manifest complete), leaving it by an exception keeps only complete shards
    so the capture can resume. `tokens_written` is the number of tokens in shards on disk; after
    `resume=True` it is where the caller continues (the caller skips exactly that many tokens).
    `expected_tokens`, the dataset's total when the caller knows it, sizes the last shard's buffer to
    the rows it will hold (otherwise every buffer holds `tokens_per_shard` rows).
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
                "so that no context window straddles two shards; try "
                f"{max(1, tokens_per_shard // context_length) * context_length}."
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
        self._open: _ShardBuffer | None = None  # the shard rows are going to
        self._closed = False
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer")
        self._in_flight: Future | None = None  # the full shard being fsync-ed and renamed in the background
        self.path.mkdir(parents=True, exist_ok=True)
        if resume and (self.path / MANIFEST).is_file():
            self._resume(metadata or {}, expected_tokens)
        else:
            existing = sorted(p.name for p in self.path.glob("acts-*.safetensors")) + (
                [MANIFEST] if (self.path / MANIFEST).exists() else []
            )
            if existing and not resume:
                raise ValueError(
                    f"{self.path} already holds an activation dataset ({', '.join(existing[:3])}...); "
                    "continue it with --resume, or choose an empty folder."
                )
            self._remove_strays()
            self._write_manifest()
        self._next_row = self.tokens_written  # dataset index of the next row add() receives
        self._next_shard = len(self.manifest["shards"])  # index of the next shard to open
        self.expected_tokens = expected_tokens

    # --- resume ------------------------------------------------------------------------
    def _resume(self, metadata: dict, expected_tokens: int | None) -> None:
        """Continue the dataset on disk; every check comes before the first change, so a refused
        resume leaves the folder exactly as it was."""
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
        if expected_tokens is not None and stored["total_tokens"] > expected_tokens:
            raise ValueError(
                f"{self.path} already holds {stored['total_tokens']} tokens, more than --tokens {expected_tokens}; "
                f"resume with --tokens {stored['total_tokens']} or more, or capture into a new folder."
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
        The rows are checked and copied into the current shard before this returns (so the caller
        may reuse its tensors); a full shard is written, hashed and renamed by a background thread."""
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
                f"shard {index // tps} ({shard_name(index // tps)}) row {index % tps}. Nothing from this batch was "
                "written; "
                f"check the model's numerics or capture with a wider dtype."
            )
        tokens = tokens.detach().to("cpu", torch.int32)
        positions = positions.detach().to("cpu", torch.int32)
        tps, done = self.manifest["tokens_per_shard"], 0
        while done < n:
            if self._open is None:
                left = tps if self.expected_tokens is None else self.expected_tokens - (start + done)
                self._open = _ShardBuffer(
                    self.path / shard_name(self._next_shard), min(tps, max(left, 1)), tps, d_in, self.manifest["dtype"]
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
        self._wait()  # one shard completing at a time, in order
        self._in_flight = self._pool.submit(self._publish, shard)

    def _publish(self, shard: _ShardBuffer) -> None:
        """Write the shard's file into place and record it in the manifest."""
        sha256 = shard.publish()
        self.manifest["shards"].append({"file": shard.final.name, "tokens": shard.rows, "sha256": sha256})
        self.manifest["total_tokens"] += shard.rows
        self._write_manifest()

    def _wait(self) -> None:
        """Block until the background shard write is done; re-raise its error here."""
        if self._in_flight is not None:
            future, self._in_flight = self._in_flight, None
            future.result()

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
            self._open = None
            self._pool.shutdown()

    def __enter__(self) -> ActivationWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        self._closed = True  # keep complete shards only; resume continues from them
        self._open = None
        try:
            self._wait()
        except Exception:
            pass
        finally:
            self._pool.shutdown()
