"""Files on disk: atomic writes (readers see the old file or the whole new one) and JSON reads whose
errors name the file and the fix. Used by every artifact writer of `sae` and `interp`."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"  # every temp file ends so; a reader of a folder skips (or removes) them


def temp_path(path: str | os.PathLike) -> Path:
    """A hidden name beside `path` for the file that will replace it (unique to this process)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")


def atomic_write(
    path: str | os.PathLike, write: Callable[[Path], Any], *, durable: bool = False, size: int | None = None
) -> Path:
    """Call `write(tmp)` on a temp file beside `path`, then rename it over `path`.

    durable: fsync the file before the rename and the folder after it, so the new file survives a
    power cut (capture manifests need this; reports do not). A failed write leaves no temp file; a
    full disk raises OSError(ENOSPC) naming the file, its size (when given) and the space free."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        write(tmp)
        if durable:
            _fsync(tmp, os.O_RDONLY)
        os.replace(tmp, path)
    except Exception as err:
        if not _is_disk_full(err):
            raise
        free = shutil.disk_usage(path.parent).free if path.parent.exists() else 0
        needed = f"{size:,} bytes needed, " if size is not None else ""
        raise OSError(
            errno.ENOSPC,
            f"no space left on the device of {path.parent}: could not write {path.name} ({needed}{free:,} free); "
            "free some space or write to another disk, then resume",
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
    if durable:
        _fsync(path.parent, os.O_RDONLY)
    return path


def _is_disk_full(err: BaseException) -> bool:
    """ENOSPC as an OSError, or inside another library's error (safetensors wraps Rust's io::Error:
    "IoError(Os { code: 28, kind: StorageFull, message: \"No space left on device\" })")."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return True
    text = str(err)
    return any(mark in text for mark in ("No space left on device", "StorageFull", "os error 28", "code: 28,"))


def write_safetensors(
    path: str | os.PathLike, tensors: dict[str, Any], *, metadata: dict[str, str] | None = None, durable: bool = False
) -> Path:
    """Write tensors as a safetensors file, atomically (see atomic_write)."""
    from safetensors.torch import save_file  # torch-backed: imported when a file is written

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp), metadata=metadata)
        os.chmod(tmp, new_file_mode())  # the library creates its files with mode 600

    size = sum(t.numel() * t.element_size() for t in tensors.values())
    return atomic_write(path, write, durable=durable, size=size)


def new_file_mode() -> int:
    """The mode a new file gets under this process's umask (0o666 & ~umask), read without changing it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    return 0o644


def write_text(path: str | os.PathLike, text: str, *, durable: bool = False) -> Path:
    """Write UTF-8 text atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), durable=durable)


def write_json(path: str | os.PathLike, data: Any, *, indent: int | None = 2, durable: bool = False) -> Path:
    """Write JSON atomically: UTF-8 as is, no NaN or Infinity (they are not JSON), a final newline."""
    text = json.dumps(data, indent=indent, ensure_ascii=False, allow_nan=False) + "\n"
    return write_text(path, text, durable=durable)


def read_json(path: str | os.PathLike, *, fix: str = "re-run the step that wrote it") -> dict[str, Any]:
    """The JSON object in `path`; FileNotFoundError or ValueError naming the file and `fix`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; {fix}.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not readable JSON ({err}); {fix}.") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, found {type(data).__name__}; {fix}.")
    return data


def check_output_folder(
    path: str | os.PathLike,
    *,
    option: str = "--out",
    holds: Sequence[str] = (),
    what: str = "artifact",
    overwrite: bool = False,
    replaces_whole: bool = False,
) -> Path:
    """Check an output folder before any work: it must not be a file, and when it already holds
    every file in `holds` (a complete `what`) it is refused unless overwrite. replaces_whole: the write
    replaces the whole folder, so a non-empty folder that is not a `what` (does not hold every file in
    `holds`) is refused too. Returns the path."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {path} is a file, not a folder; give a folder path (it is created if missing).")
    if replaces_whole and path.is_dir() and any(path.iterdir()) and not all((path / n).is_file() for n in holds):
        raise ValueError(
            f"{option} {path} holds files that are not a {what}, and writing the {what} replaces the whole folder; "
            "choose a new or empty folder, or move those files away first."
        )
    if holds and not overwrite and all((path / name).is_file() for name in holds):
        raise ValueError(
            f"{option} {path} already holds a complete {what}; pass --overwrite to replace it (what was built on it "
            "becomes stale) or choose another folder."
        )
    return path


def read_safetensors(path: str | os.PathLike, *, fix: str, finite: bool = False) -> dict[str, Any]:
    """Every tensor of a safetensors file; a missing, truncated or corrupt file raises an error naming
    it and `fix` (the library's own errors do not name the file). finite: also refuse NaN or Inf,
    naming the tensor and its first bad rows."""
    from safetensors.torch import load_file  # torch-backed: imported when a file is read

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; {fix}.")
    try:
        tensors = load_file(str(path))
    except Exception as err:  # safetensors raises its own error types for truncated or corrupt files
        raise ValueError(f"{path} is not a readable safetensors file ({err}); {fix}.") from None
    if finite:
        for name, tensor in tensors.items():
            if tensor.is_floating_point() and not bool(tensor.isfinite().all()):
                rows = (~tensor.isfinite()).reshape(tensor.shape[0] if tensor.dim() else 1, -1).any(1)
                bad = rows.nonzero().flatten()[:5].tolist()
                raise ValueError(f"{path}: tensor {name!r} holds NaN or Inf (rows {bad}, first shown); {fix}.")
    return tensors


def inside(folder: str | os.PathLike, name: str, *, source: str, field: str) -> Path:
    """folder/name, refused (ValueError naming the file `source` and its `field`) unless it resolves
    to a path inside folder: artifact files name their parts, and a name such as ../../etc/passwd
    must not reach outside the artifact."""
    root = Path(folder).resolve()
    if not isinstance(name, str) or not name:
        raise ValueError(f"{source}: field {field!r} must be a file name inside {folder}, found {name!r}.")
    path = (root / name).resolve()
    if path == root or root not in path.parents:
        raise ValueError(
            f"{source}: field {field!r} is {name!r}, which points outside {folder}; an artifact may only name "
            "files inside its own folder."
        )
    return path


LOCK_FILE = ".lock"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, command: str) -> Iterator[None]:
    """Hold an exclusive lock on `folder` (created if missing) while the block runs; a second holder
    is refused at once with a message naming the process that has it. The lock is the kernel's
    (flock on folder/.lock), so a killed run leaves no stale lock behind."""
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise ValueError(
                f"{folder} is in use by another `{command}` (pid {holder}); wait for it to finish or choose another "
                "output folder."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        if created and [p.name for p in folder.iterdir()] == [LOCK_FILE]:  # a refused or empty run: leave no trace
            (folder / LOCK_FILE).unlink()
            folder.rmdir()
        os.close(fd)  # closing releases the lock


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
