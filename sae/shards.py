"""The on-disk format of an activation dataset (format_version 1): the manifest and the shard files.

Folder layout::

    manifest.json            format_version, model_id, hook_name, d_in, dtype, context_length,
                             tokens_per_shard, total_tokens, complete, shards [{file, tokens, sha256}],
                             metadata (free dict: corpus spec, seed, ...)
    acts-00000.safetensors   acts [n, d_in] (float32|float16|bfloat16), tokens [n] int32,
    acts-00001.safetensors   positions [n] int32 (position of the token within its context window)

Rows are stored in capture order: context windows of `context_length` tokens one after another.
Every shard but the last holds exactly `tokens_per_shard` rows, a multiple of `context_length`,
so no context window straddles two shards. Shards are written by the safetensors library, which
orders the tensors so that each is aligned to its element size; readers follow the header's offsets.
Written by sae.writer, read by sae.data.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import torch

from sae.files import inside, read_json

FORMAT_VERSION = 1
MANIFEST = "manifest.json"

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


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(path: Path) -> dict[str, Any]:
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
            f"`interp capture` or sae.writer.ActivationWriter).{hint}"
        )
    manifest = read_json(file, fix="the capture that wrote it must be re-run")
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
    fix = "the manifest is damaged; re-capture the dataset"
    for name in ("d_in", "context_length", "tokens_per_shard"):
        if not _is_int(manifest[name]) or manifest[name] <= 0:
            raise ValueError(f"{file}: field {name!r} must be a positive integer, found {manifest[name]!r}; {fix}.")
    if not _is_int(manifest["total_tokens"]) or manifest["total_tokens"] < 0:
        raise ValueError(f"{file}: field 'total_tokens' must be a non-negative integer; {fix}.")
    shards = manifest["shards"]
    if not isinstance(shards, list):
        raise ValueError(f"{file}: field 'shards' must be a list, found {type(shards).__name__}; {fix}.")
    for i, entry in enumerate(shards):
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("file"), str)
            and isinstance(entry.get("sha256"), str)
            and _is_int(entry.get("tokens"))
            and entry["tokens"] > 0
        ):
            raise ValueError(f"{file}: shards[{i}] needs a string 'file' and 'sha256' and positive 'tokens'; {fix}.")
        inside(path, entry["file"], source=str(file), field=f"shards[{i}].file")
    names = [entry["file"] for entry in shards]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{file}: shard(s) {repeated} are listed more than once; {fix}.")
    return manifest


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_header(file: Path, expected_sha: str) -> tuple[dict[str, Any], int]:
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
        spans = sorted((int(e["data_offsets"][0]), int(e["data_offsets"][1]), key) for key, e in header.items())
    except (KeyError, TypeError, IndexError, ValueError) as err:
        raise ValueError(f"{broken}: malformed header entry ({err!r}); {fix}.") from err
    position = 0
    for start, end, key in spans:  # the tensors tile the data buffer: in order, no gap, no overlap
        if start != position or end < start:
            raise ValueError(f"{broken}: tensor {key!r} claims bytes [{start}, {end}) after byte {position}; {fix}.")
        position = end
    if data_start + position != size:
        raise ValueError(f"{broken}: header describes {data_start + position} bytes but the file has {size}; {fix}.")
    return header, data_start
