"""The batch stream of a training run: this rank's batches, the data position after each (for exact
resume), look-ahead for initialisation, and on CUDA a background thread that reads and pins ahead."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from torch import Tensor

from sae.config import TrainConfig
from sae.data import ActivationDataset
from sae.distributed import Ranks
from sae.progress import progress_bar


class BatchFeed:
    """Batches for this rank with the data position after each, and look-ahead for initialisation.

    Each item is a tuple of tensors, one per source. From an ActivationDataset the position is the
    BatchStream state (exact resume). From a seekable source (an iterable with `state_dict()` and
    `load_state_dict(state)`, e.g. a stream from a model) it is that state, restored on resume
    without replaying the skipped batches. From any other iterable it is the count of batches read,
    and a resumed run re-reads and skips that many.
    With `prefetch`, a background thread reads (and with `pin`, pins) up to two batches ahead.
    """

    def __init__(
        self,
        source: ActivationDataset | Iterable[Any],
        cfg: TrainConfig,
        ranks: Ranks,
        position: dict | None,
        *,
        prefetch: bool = False,
        pin: bool = False,
    ):
        self.read = position["batches"] if position else 0
        if isinstance(source, ActivationDataset):
            self.stream = source.batches(
                ranks.local_batch(cfg.batch_size),
                shuffle_buffer=cfg.shuffle_buffer,
                seed=cfg.seed,
                epochs=None,
                rank=ranks.rank,
                world_size=ranks.world_size,
                state=position["stream"] if position else None,
            )
            self.iterator: Iterator[Any] = self.stream
        elif _seekable(source):
            self.stream = source
            if position:
                source.load_state_dict(position["stream"])  # type: ignore[attr-defined]
            self.iterator = iter(source)
        else:
            self.stream = None
            self.iterator = iter(source)
            for _ in progress_bar(range(self.read), desc="skipping trained batches", disable=self.read < 100):
                next(self.iterator)
        self.ahead: list[tuple[tuple[Tensor, ...], dict]] = []
        self.position = self._position()
        self.pin = pin
        self._queue: queue.Queue | None = None
        if prefetch:
            self._queue = queue.Queue(maxsize=2)
            self._stop = threading.Event()
            threading.Thread(target=self._prefetch, name="batch-prefetch", daemon=True).start()

    def _position(self) -> dict:
        return {"batches": self.read, "stream": self.stream.state_dict() if self.stream is not None else None}

    def _read(self) -> tuple[tuple[Tensor, ...], dict] | None:
        try:
            batch = next(self.iterator)
        except StopIteration:
            return None
        self.read += 1
        parts = tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
        if self.pin:  # page-locked host memory: the copy to the GPU runs without blocking
            parts = tuple(t.pin_memory() if t.device.type == "cpu" else t for t in parts)
        return parts, self._position()

    def _prefetch(self) -> None:
        """Background reader: items (or the error that ended the stream) in order, None at the end."""
        while not self._stop.is_set():
            try:
                item: Any = self._read()
            except BaseException as err:
                item = err
            self._queue.put(item)  # type: ignore[union-attr]
            if item is None or isinstance(item, BaseException):
                return

    def _next(self) -> tuple[tuple[Tensor, ...], dict] | None:
        if self._queue is None:
            return self._read()
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        """Stop the background reader (it may finish the read in progress)."""
        if self._queue is not None:
            self._stop.set()
            while not self._queue.empty():
                self._queue.get_nowait()

    def peek(self, n: int) -> list[tuple[Tensor, ...]]:
        """Read up to n batches ahead (they are still returned by `next` later)."""
        while len(self.ahead) < n and (item := self._next()) is not None:
            self.ahead.append(item)
        return [b for b, _ in self.ahead[:n]]

    def next(self) -> tuple[Tensor, ...] | None:
        """The next batch (None at the end of the data); `self.position` is then the position after it."""
        item = self.ahead.pop(0) if self.ahead else self._next()
        if item is None:
            return None
        batch, self.position = item
        return batch


def _seekable(source: Any) -> bool:
    return callable(getattr(source, "state_dict", None)) and callable(getattr(source, "load_state_dict", None))
