"""The activation dataset: activations captured from a model, on disk, streamed in shuffled batches.

Folder layout (format_version 1)::

    manifest.json            format_version, model_id, hook_name, d_in, dtype, context_length,
                             tokens_per_shard, total_tokens, complete, shards [{file, tokens, sha256}],
                             metadata (free dict: corpus spec, seed, ...)
    acts-00000.safetensors   acts [n, d_in] (float32|float16|bfloat16), tokens [n] int32,
    acts-00001.safetensors   positions [n] int32 (position of the token within its context window)

Rows are stored in capture order: context windows of `context_length` tokens one after another.
Every shard but the last holds exactly `tokens_per_shard` rows, a multiple of `context_length`,
so no context window straddles two shards. In a shard's data buffer `acts` come first, then
`tokens` and `positions` (those two go first when 16-bit acts hold an odd number of values, which
would leave the int32 arrays unaligned); readers follow the header's offsets either way.

`ActivationWriter` streams each shard's rows into a temp file as they arrive, hashing them in file
order, and on completion fsyncs and renames it (os.replace) and rewrites the manifest atomically,
so a killed capture leaves a valid dataset of its complete shards and `resume=True` continues
after them. `ActivationDataset` validates a folder on open and streams batches from memory-mapped
shards through a seekable shuffle (see `BatchStream`).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import warnings
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TMP_SUFFIX = ".tmp"

# dtype name in the manifest -> (torch dtype, safetensors dtype code)
STORAGE_DTYPES: dict[str, tuple[torch.dtype, str]] = {
    "float32": (torch.float32, "F32"),
    "float16": (torch.float16, "F16"),
    "bfloat16": (torch.bfloat16, "BF16"),
}
# fields a resumed capture must share with the dataset it continues
RESUME_FIELDS = ("model_id", "hook_name", "d_in", "dtype", "context_length", "tokens_per_shard")
REQUIRED_FIELDS = RESUME_FIELDS + ("format_version", "total_tokens", "complete", "shards", "metadata")


def shard_name(index: int) -> str:
    return f"acts-{index:05d}.safetensors"


def _write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see either the old file or the whole new one."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _read_manifest(path: Path) -> dict[str, Any]:
    file = path / MANIFEST
    if not file.is_file():
        hint = ""
        nested = sorted(p.parent.name for p in path.glob(f"*/{MANIFEST}")) if path.is_dir() else []
        if nested:
            hint = f" It holds one dataset per hook; pass one of: {', '.join(str(path / n) for n in nested)}."
        elif not path.exists():
            hint = " The folder does not exist."
        raise FileNotFoundError(
            f"{file} not found: {path} is not an activation dataset folder (write one with "
            f"`interp capture` or sae.data.ActivationWriter).{hint}"
        )
    try:
        manifest = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{file} is not valid JSON ({err}); the capture that wrote it must be re-run.") from err
    if not isinstance(manifest, dict):
        raise ValueError(f"{file} must hold a JSON object, found {type(manifest).__name__}.")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{file}: format_version is {version!r} but this version of monosemantic reads format_version "
            f"{FORMAT_VERSION}; re-capture the activations or use a matching monosemantic version."
        )
    missing = [k for k in REQUIRED_FIELDS if k not in manifest]
    if missing:
        raise ValueError(f"{file} lacks the field(s) {missing}; it was not written by ActivationWriter.")
    if manifest["dtype"] not in STORAGE_DTYPES:
        raise ValueError(f"{file}: dtype {manifest['dtype']!r} is not one of {sorted(STORAGE_DTYPES)}.")
    return manifest


def _read_header(file: Path, expected_sha: str) -> tuple[dict[str, Any], int]:
    """Parse a safetensors header; return (tensor entries, byte offset of the data buffer).

    Raises ValueError naming the file (with the manifest's expected sha256) when the file is
    shorter than its header says: a truncated shard is reported without hashing it.
    """
    size = file.stat().st_size
    broken = f"shard {file} is truncated or corrupt"
    fix = f"the manifest expects sha256 {expected_sha}; restore the file or re-capture the dataset"
    if size < 8:
        raise ValueError(f"{broken}: {size} bytes, too short for a safetensors header; {fix}.")
    with open(file, "rb") as fh:
        (header_len,) = struct.unpack("<Q", fh.read(8))
        if 8 + header_len > size:
            raise ValueError(f"{broken}: header claims {header_len} bytes but the file has {size}; {fix}.")
        try:
            header = json.loads(fh.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{broken}: unreadable header ({err}); {fix}.") from err
    if not isinstance(header, dict):
        raise ValueError(f"{broken}: its header is not a JSON object; {fix}.")
    header.pop("__metadata__", None)
    data_start = 8 + header_len
    try:
        end = max((int(entry["data_offsets"][1]) for entry in header.values()), default=0)
    except (KeyError, TypeError, IndexError, ValueError) as err:
        raise ValueError(f"{broken}: malformed header entry ({err!r}); {fix}.") from err
    if data_start + end != size:
        raise ValueError(f"{broken}: header describes {data_start + end} bytes but the file has {size}; {fix}.")
    return header, data_start


def _shard_layout(n: int, d_in: int, dtype: str) -> tuple[bytes, tuple[str, ...]]:
    """Header bytes (8-byte little-endian length + JSON padded to 8 bytes) of an n-row shard, and the
    order of its tensors in the data buffer: acts first, so that a shard can be hashed in file order
    while its rows arrive; tokens and positions first when 16-bit acts hold an odd number of values."""
    torch_dtype, code = STORAGE_DTYPES[dtype]
    entries = {
        "acts": (code, [n, d_in], n * d_in * torch_dtype.itemsize),
        "tokens": ("I32", [n], 4 * n),
        "positions": ("I32", [n], 4 * n),
    }
    order = ("acts", "tokens", "positions") if entries["acts"][2] % 4 == 0 else ("tokens", "positions", "acts")
    header, offset = {}, 0
    for key in order:
        kind, shape, size = entries[key]
        header[key] = {"dtype": kind, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text, order


def _raw_bytes(tensor: Tensor) -> memoryview:
    """The bytes of a contiguous CPU tensor, without a copy."""
    return memoryview(tensor.reshape(-1).view(torch.uint8).numpy())


class _ShardFile:
    """The shard being filled: rows go to its temp file as they arrive and are hashed in file order,
    so completing it costs only its tokens and positions (no second pass over the acts) when it ends
    with the `capacity` rows its header was written for."""

    def __init__(self, final: Path, capacity: int, d_in: int, dtype: str):
        self.final, self.tmp = final, final.with_name(final.name + TMP_SUFFIX)
        self.d_in, self.dtype = d_in, dtype
        self.row_bytes = d_in * STORAGE_DTYPES[dtype][0].itemsize
        self.header, order = _shard_layout(capacity, d_in, dtype)
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
        self._emit(_raw_bytes(acts))
        self.tokens.append(tokens.numpy().tobytes())
        self.positions.append(positions.numpy().tobytes())
        self.rows += acts.shape[0]

    def finish(self) -> str:
        """Complete and fsync the temp file; return its sha256. A shard whose row count differs from
        the capacity its header was written for is written out again with its own header."""
        parts = {"tokens": b"".join(self.tokens), "positions": b"".join(self.positions)}
        header, order = _shard_layout(self.rows, self.d_in, self.dtype)
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
        stored = _read_manifest(self.path)
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
            _read_header(file, entry["sha256"])
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
        _write_atomic(self.path / MANIFEST, (json.dumps(self.manifest, indent=1) + "\n").encode())

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


class ActivationDataset:
    """A validated, read-only activation dataset folder.

    Opening checks the manifest (format_version, fields, dtype) and every shard's header (keys,
    shapes, dtypes, file size) against it; `verify=True` also checks each shard's sha256.
    Nothing is loaded: shards are memory-mapped and read row by row as batches need them.
    """

    def __init__(self, path: str | os.PathLike, verify: bool = False):
        self.path = Path(path)
        self.manifest = _read_manifest(self.path)
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
        if verify:
            self.verify()
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
        header, data_start = _read_header(file, entry["sha256"])
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
                    f"shard {file}: {key!r} is {got.get('dtype')} {got.get('shape')} but {MANIFEST} implies {want_dtype} {want_shape} "
                    f"(dtype {self.manifest['dtype']}, d_in {d_in}, tokens {n}); the shard does not belong to this manifest."
                )
            offset = data_start + got["data_offsets"][0]
            if offset % dt.itemsize:
                raise ValueError(
                    f"shard {file}: {key!r} starts at byte {offset}, not aligned to its {dt.itemsize}-byte "
                    f"elements; write shards with ActivationWriter."
                )
            layout[key] = (offset, tuple(want_shape), dt)
        return layout

    def verify(self) -> None:
        """Check every shard's sha256 against the manifest; ValueError names the first bad file."""
        for entry in tqdm(self.manifest["shards"], desc="verify shards", unit="shard", disable=None):
            file = self.path / entry["file"]
            actual = _sha256_file(file)
            if actual != entry["sha256"]:
                raise ValueError(
                    f"shard {file} is corrupt: its sha256 is {actual} but {MANIFEST} expects {entry['sha256']}; "
                    f"restore the file or re-capture the dataset."
                )

    def _tensors_of(self, i: int) -> dict[str, Tensor]:
        """Shard i's tensors over a private, lazily paged memory map of its file (no file handle kept)."""
        if i not in self._maps:
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
