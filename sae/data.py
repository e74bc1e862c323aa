"""Reading an activation dataset (the format of sae.shards): a folder validated on open and streamed
in shuffled batches from memory-mapped shards through a seekable shuffle (`BatchStream`); never
loaded whole.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sae.progress import progress_bar
from sae.shards import MANIFEST, STORAGE_DTYPES, read_header, read_manifest, sha256_file


class ActivationDataset:
    """A validated, read-only activation dataset folder.

    Opening checks the manifest (format_version, fields, dtype, unique plain shard names) and every
    shard's header (keys, shapes, dtypes, byte offsets, file size) against it. Each shard's sha256 is
    checked against the manifest when the shard is first read (the README gives its speed), so a
    flipped byte, a swapped shard or a lying header is named before a single row of it is used;
    `verify=False` (`--no-verify`) skips the hashes, for huge datasets on trusted storage.
    Nothing is loaded: shards are memory-mapped and read row by row as batches need them.
    """

    def __init__(self, path: str | os.PathLike, verify: bool = True):
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        m = self.manifest
        self.d_in: int = m["d_in"]
        self.dtype: torch.dtype = STORAGE_DTYPES[m["dtype"]][0]
        self.hook_name: str = m["hook_name"]
        self.model_id: str = m["model_id"]
        self.context_length: int = m["context_length"]
        self.num_shards: int = len(m["shards"])
        self.complete: bool = m["complete"]
        counts = [s["tokens"] for s in m["shards"]]
        self.num_tokens: int = sum(counts)
        if self.num_tokens != m["total_tokens"]:
            raise ValueError(
                f"{self.path / MANIFEST}: total_tokens is {m['total_tokens']} but its shards hold {self.num_tokens}; "
                f"the manifest is damaged, re-capture the dataset."
            )
        self.shard_starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)  # [num_shards + 1]
        self._layout = [self._check_shard(i) for i in range(self.num_shards)]
        self._maps: dict[int, dict[str, Tensor]] = {}
        self.verify_hashes = verify
        if not self.complete:
            warnings.warn(
                f"{self.path} is an incomplete capture (still running or killed); reading the "
                f"{self.num_tokens} tokens of its complete shards. Resume the capture to finish it.",
                stacklevel=2,
            )

    def _check_shard(self, i: int) -> dict[str, tuple[int, tuple[int, ...], torch.dtype]]:
        """Validate shard i's header; return {key: (absolute byte offset, shape, torch dtype)}."""
        entry = self.manifest["shards"][i]
        file = self.path / entry["file"]
        if not file.is_file():
            raise FileNotFoundError(
                f"shard {file} (listed in {self.path / MANIFEST}, sha256 {entry['sha256']}) is missing; "
                f"restore it or re-capture the dataset."
            )
        header, data_start = read_header(file, entry["sha256"])
        n, d_in, code = entry["tokens"], self.d_in, STORAGE_DTYPES[self.manifest["dtype"]][1]
        expected = {
            "acts": (code, [n, d_in], self.dtype),
            "tokens": ("I32", [n], torch.int32),
            "positions": ("I32", [n], torch.int32),
        }
        if set(header) != set(expected):
            raise ValueError(
                f"shard {file} holds keys {sorted(header)} but an activation shard holds {sorted(expected)}."
            )
        layout = {}
        for key, (want_dtype, want_shape, dt) in expected.items():
            got = header[key]
            if got.get("dtype") != want_dtype or got.get("shape") != want_shape:
                raise ValueError(
                    f"shard {file}: {key!r} is {got.get('dtype')} {got.get('shape')} but {MANIFEST} implies "
                    f"{want_dtype} {want_shape} "
                    f"(dtype {self.manifest['dtype']}, d_in {d_in}, tokens {n}); the shard does not belong to this "
                    "manifest."
                )
            offset = data_start + got["data_offsets"][0]
            if offset % dt.itemsize:
                raise ValueError(
                    f"shard {file}: {key!r} starts at byte {offset}, not aligned to its {dt.itemsize}-byte "
                    f"elements; write shards with ActivationWriter."
                )
            if got["data_offsets"][1] - got["data_offsets"][0] != math.prod(want_shape) * dt.itemsize:
                raise ValueError(
                    f"shard {file}: {key!r} spans bytes {got['data_offsets']}, not the "
                    f"{math.prod(want_shape) * dt.itemsize} bytes of {want_dtype} {want_shape}; the shard is corrupt."
                )
            layout[key] = (offset, tuple(want_shape), dt)
        return layout

    def verify(self) -> None:
        """Check every shard's sha256 now, whatever `verify` was; ValueError names the first bad file."""
        for i in progress_bar(range(self.num_shards), desc="verify shards", unit="shard", disable=None):
            self._check_hash(i)

    def _check_hash(self, i: int) -> None:
        entry = self.manifest["shards"][i]
        file = self.path / entry["file"]
        actual = sha256_file(file)
        if actual != entry["sha256"]:
            raise ValueError(
                f"shard {file} is corrupt: its sha256 is {actual} but {self.path / MANIFEST} expects "
                f"{entry['sha256']} (shard {i}); restore the file or re-capture the dataset."
            )

    def _tensors_of(self, i: int) -> dict[str, Tensor]:
        """Shard i's tensors over a private, lazily paged memory map of its file (no file handle kept);
        its sha256 is checked first (unless verify=False)."""
        if i not in self._maps:
            if self.verify_hashes:
                self._check_hash(i)
            file = self.path / self.manifest["shards"][i]["file"]
            storage = torch.UntypedStorage.from_file(str(file), shared=False, nbytes=file.stat().st_size)
            self._maps[i] = {
                key: torch.empty(0, dtype=dt).set_(storage, offset // dt.itemsize, shape)
                for key, (offset, shape, dt) in self._layout[i].items()
            }
        return self._maps[i]

    def shard(self, i: int) -> dict[str, Tensor]:
        """Shard i, memory-mapped: acts [n, d_in] (storage dtype), tokens [n] int32, positions [n] int32."""
        if not 0 <= i < self.num_shards:
            raise IndexError(f"shard index {i} out of range: {self.path} has {self.num_shards} shards.")
        return dict(self._tensors_of(i))

    def rows(self, index: np.ndarray) -> Tensor:
        """Activations of the dataset rows `index` (int64 [m], any order) -> [m, d_in] storage dtype.
        Reads only those rows from the memory-mapped shards."""
        index = np.asarray(index, dtype=np.int64)
        out = torch.empty(len(index), self.d_in, dtype=self.dtype)
        which = np.searchsorted(self.shard_starts, index, side="right") - 1
        for s in np.unique(which):
            sel = np.nonzero(which == s)[0]
            local = index[sel] - self.shard_starts[s]
            order = np.argsort(local, kind="stable")  # ascending reads touch each page once
            out[torch.from_numpy(sel[order])] = self._tensors_of(int(s))["acts"][torch.from_numpy(local[order])]
        return out

    def sequential(
        self, batch_size: int, *, max_tokens: int | None = None, dtype: torch.dtype = torch.float32
    ) -> Iterator[Tensor]:
        """Batches [<= batch_size, d_in] in file order, every row once (the last batch may be
        shorter), stopping after max_tokens rows: for evaluation, where nothing may be dropped."""
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        stop = self.num_tokens if max_tokens is None else min(max_tokens, self.num_tokens)
        for start in range(0, stop, batch_size):
            yield self.rows(np.arange(start, min(start + batch_size, stop))).to(dtype)

    def fingerprint(self) -> str:
        """Short hash of the shard hashes: identifies this dataset's content in a stream state."""
        return hashlib.sha256("".join(s["sha256"] for s in self.manifest["shards"]).encode()).hexdigest()[:16]

    def batches(
        self,
        batch_size: int,
        *,
        shuffle_buffer: int = 2**18,
        seed: int = 0,
        epochs: int | None = 1,
        rank: int = 0,
        world_size: int = 1,
        state: dict | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> BatchStream:
        """Stream of [batch_size, d_in] batches for this rank; see BatchStream."""
        return BatchStream(
            self,
            batch_size,
            shuffle_buffer=shuffle_buffer,
            seed=seed,
            epochs=epochs,
            rank=rank,
            world_size=world_size,
            state=state,
            dtype=dtype,
        )

    def __len__(self) -> int:
        return self.num_tokens

    def __repr__(self) -> str:
        return (
            f"ActivationDataset({str(self.path)!r}, hook={self.hook_name!r}, d_in={self.d_in}, "
            f"tokens={self.num_tokens}, shards={self.num_shards}, dtype={self.manifest['dtype']})"
        )


class BatchStream:
    """Seekable shuffled stream of batches from an ActivationDataset.

    Order of one epoch: the dataset is cut into chunks of `context_length` rows (one context window
    each); the chunks are permuted (seed, epoch); consecutive runs of shuffle_buffer // context_length
    chunks form a window whose rows are permuted again (seed, epoch, window). So rows from many
    shards and contexts mix within a window, and any position is reached without replaying the
    stream. shuffle_buffer=0 streams rows in file order.

    Global batch g covers rows [g*G, (g+1)*G) of the epoch order, G = batch_size * world_size;
    rank r yields the slice [r*batch_size, (r+1)*batch_size) of it, so W ranks together see exactly
    the rows one rank with batch G sees. The remainder of an epoch smaller than G is dropped.
    `state_dict()` is the same on every rank; `batches(..., state=sd)` continues with the next batch.
    """

    def __init__(
        self,
        dataset: ActivationDataset,
        batch_size: int,
        *,
        shuffle_buffer: int,
        seed: int,
        epochs: int | None,
        rank: int,
        world_size: int,
        state: dict | None,
        dtype: torch.dtype,
    ):
        if batch_size <= 0 or world_size <= 0 or not 0 <= rank < world_size:
            raise ValueError(
                f"need batch_size > 0 and 0 <= rank < world_size, got batch_size={batch_size}, "
                f"rank={rank}, world_size={world_size}."
            )
        if epochs is not None and epochs < 0:
            raise ValueError(f"epochs must be >= 0 or None (forever), got {epochs}.")
        if shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be >= 0 rows (0: no shuffling), got {shuffle_buffer}.")
        self.dataset, self.batch_size, self.rank, self.world_size = dataset, batch_size, rank, world_size
        self.global_batch = batch_size * world_size
        self.shuffle_buffer, self.seed, self.epochs, self.dtype = shuffle_buffer, seed, epochs, dtype
        self.batches_per_epoch = dataset.num_tokens // self.global_batch
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"{dataset.path} holds {dataset.num_tokens} tokens, fewer than one global batch of "
                f"{self.global_batch} (batch_size {batch_size} x world_size {world_size}); use a smaller batch."
            )
        ctx, n = dataset.context_length, dataset.num_tokens
        self._chunk_starts = np.arange(0, n, ctx, dtype=np.int64)  # [num_chunks]
        self._chunk_lens = np.minimum(ctx, n - self._chunk_starts)
        self._chunks_per_window = max(1, shuffle_buffer // ctx)
        self.epoch, self.batch = 0, 0  # position of the next global batch
        if state is not None:
            self._load_state(state)
        self._order_epoch: int | None = None

    # --- state -------------------------------------------------------------------------
    def _settings(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset.fingerprint(),
            "num_tokens": self.dataset.num_tokens,
            "seed": self.seed,
            "shuffle_buffer": self.shuffle_buffer,
            "global_batch": self.global_batch,
        }

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable position of the next batch, with the settings it is valid for."""
        return {"epoch": self.epoch, "batch": self.batch, **self._settings()}

    def _load_state(self, state: dict) -> None:
        differ = [
            f"{k}: state has {state.get(k)!r}, stream has {v!r}"
            for k, v in self._settings().items()
            if state.get(k) != v
        ]
        if differ:
            raise ValueError(
                "cannot resume the batch stream: the saved state was taken with different settings "
                f"({'; '.join(differ)}); resume with the original dataset, seed, shuffle_buffer and global batch."
            )
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])

    # --- order -------------------------------------------------------------------------
    def _epoch_order(self) -> None:
        """Chunk order of self.epoch and each window's [start, end) in the epoch's row order."""
        if self.shuffle_buffer == 0:
            perm = np.arange(len(self._chunk_starts))
        else:
            perm = np.random.default_rng([self.seed, self.epoch]).permutation(len(self._chunk_starts))
        self._perm = perm
        window_lens = np.add.reduceat(self._chunk_lens[perm], np.arange(0, len(perm), self._chunks_per_window))
        self._window_ends = np.cumsum(window_lens)  # [num_windows]
        self._window_cache: dict[int, np.ndarray] = {}
        self._order_epoch = self.epoch

    def _window_rows(self, w: int) -> np.ndarray:
        """Dataset row ids of window w of the current epoch, in stream order."""
        if w not in self._window_cache:
            chunks = self._perm[w * self._chunks_per_window : (w + 1) * self._chunks_per_window]
            rows = np.concatenate(
                [np.arange(s, s + k) for s, k in zip(self._chunk_starts[chunks], self._chunk_lens[chunks])]
            )
            if self.shuffle_buffer:
                rows = np.random.default_rng([self.seed, self.epoch, w]).permutation(rows)
            self._window_cache = {w: rows}  # the stream moves forward: keep one window
        return self._window_cache[w]

    def _rows(self, start: int, stop: int) -> np.ndarray:
        """Dataset row ids at positions [start, stop) of the current epoch's order."""
        parts = []
        while start < stop:
            w = int(np.searchsorted(self._window_ends, start, side="right"))
            w_start = int(self._window_ends[w - 1]) if w else 0
            end = min(stop, int(self._window_ends[w]))
            parts.append(self._window_rows(w)[start - w_start : end - w_start])
            start = end
        return np.concatenate(parts)

    # --- iteration ---------------------------------------------------------------------
    def __iter__(self) -> Iterator[Tensor]:
        return self

    def __next__(self) -> Tensor:
        if self.batch >= self.batches_per_epoch:
            self.epoch, self.batch = self.epoch + 1, 0
        if self.epochs is not None and self.epoch >= self.epochs:
            raise StopIteration
        if self._order_epoch != self.epoch:
            self._epoch_order()
        first = self.batch * self.global_batch + self.rank * self.batch_size
        index = self._rows(first, first + self.batch_size)
        self.batch += 1
        return self.dataset.rows(index).to(self.dtype)

    def __len__(self) -> int:
        """Batches left to yield (finite epochs only)."""
        if self.epochs is None:
            raise TypeError("an endless stream (epochs=None) has no length")
        return max(0, self.epochs * self.batches_per_epoch - (self.epoch * self.batches_per_epoch + self.batch))
