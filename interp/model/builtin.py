"""The files of the built-in corpora: the running interpreter's standard-library `.py` files and the
packaged tinyshakespeare, read as UTF-8 text (interp.model.corpus and interp.model.mix read them)."""

from __future__ import annotations

import importlib.resources
import os
import sysconfig
from pathlib import Path

SHAKESPEARE_FILE = "tinyshakespeare.txt"  # in the package folder interp/model/corpora
# Standard-library folders that are not library source: installed packages and test suites.
STDLIB_EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test"})


def shakespeare_file() -> Path:
    """The packaged tinyshakespeare text file."""
    path = Path(str(importlib.resources.files("interp.model") / "corpora" / SHAKESPEARE_FILE))
    if not path.is_file():
        raise FileNotFoundError(f"the packaged corpus {path} is missing; reinstall monosemantic.")
    return path


def stdlib_files() -> list[Path]:
    """The interpreter's standard-library `.py` files, sorted, without site-packages and tests."""
    root = Path(sysconfig.get_paths()["stdlib"])
    found = []
    for folder, subfolders, names in os.walk(root):  # symlinked folders are listed, not entered
        subfolders[:] = [name for name in subfolders if name not in STDLIB_EXCLUDED_DIRS]  # never walked
        found.extend(Path(folder, name) for name in names if name.endswith(".py"))
    files = sorted(path for path in found if path.is_file())
    if not files:
        raise ValueError(f"found no standard-library .py files under {root}; use a corpus path instead.")
    return files


def read_text_file(path: Path) -> str:
    """The file's text as UTF-8; unreadable or non-UTF-8 files raise ValueError naming the path."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ValueError(f"cannot read corpus file {path}: {err.strerror or err}.") from err
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"corpus file {path} is not UTF-8 text (byte {err.start} cannot be decoded); "
            "convert it to UTF-8 or leave it out of the corpus."
        ) from err
