"""Progress for people: a tqdm bar on a terminal; in a file or a pipe (CI logs, `> run.log`), a plain
line at most every LOG_EVERY_S seconds and at the end, instead of hundreds of carriage-return redraws."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from tqdm import tqdm

LOG_EVERY_S = 10.0


class _Lines:
    """A text stream for tqdm that turns its redraws into whole lines (no \\r, no padding)."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(*args: Any, **kwargs: Any) -> tqdm:
    """tqdm(*args, **kwargs) on standard error: a live bar on a terminal, plain log lines otherwise."""
    stream = sys.stderr
    if kwargs.get("disable") or stream.isatty():
        return tqdm(*args, **kwargs)
    kwargs.pop("dynamic_ncols", None)
    return tqdm(*args, **{**kwargs, "file": _Lines(stream), "mininterval": LOG_EVERY_S, "ascii": True, "ncols": 100})
