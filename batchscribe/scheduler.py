"""The window scheduler: one model, many files. Windows of every file in flight share the model's batches.

Each file's transcribe task cuts its audio into speech windows (`batchscribe.windows`), hands them to the
scheduler of the loaded model and waits for its words; the scheduler's thread takes the oldest windows
waiting, from any file, up to the batch size, and decodes them together (`batchscribe.decoding`). A file
whose language is not given takes the one detected on its first window, and keeps it. A row that fails the
decoder's checks is cut in two and both halves go to the front of the queue, to be decoded in the next
batch beside other files' windows; `decoding.second_opinion` then picks the reading. A GPU out-of-memory
halves the batch size (for the rest of the process) and decodes the same windows again in halves; at batch
size 1 the error reaches the file's task, which falls back to the CPU.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from batchscribe.decoding import SECOND_OPINION, BatchDecoder, RowRequest, RowResult, second_opinion
from batchscribe.errors import is_out_of_memory
from batchscribe.windows import Window, split_window

logger = logging.getLogger(__name__)

LINGER_S = 0.05  # a batch that is not full waits this long for windows from other files


@dataclass
class FileJob:
    """One file's windows in the scheduler, and what the scheduler learned about the file."""

    name: str
    language: str | None
    language_probability: float = 1.0
    redecoded: int = 0  # windows the guard decoded again, as two shorter rows
    guard_s: float = 0.0  # this file's share of the batches that decoded them again
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BatchKey:
    """Windows decode in one batch only when these agree (they are arguments of one `generate` call)."""

    beam_size: int
    temperature: float
    batch_size: int


@dataclass
class _Item:
    job: FileJob
    request: RowRequest
    key: BatchKey
    future: Future = field(default_factory=Future)
    halves: list[_Item] | None = None  # a second opinion under way: the two shorter rows
    first: RowResult | None = None  # ... and the row's first reading
    parent: _Item | None = None  # set on a half


class WindowScheduler:
    """Batches windows across files onto one model; thread-safe, with one decoding thread of its own."""

    def __init__(self, decoder: BatchDecoder, *, name: str = "batchscribe-scheduler", start: bool = True) -> None:
        """`start=False` queues windows without decoding them until `start()` (to batch a known set at once)."""
        self.decoder = decoder
        self.batch_limit: int | None = None  # lowered after an out-of-memory, for the rest of the process
        self.batch_sizes: list[int] = []  # of every batch handed to the model, in order (for tests and logs)
        self._queue: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        if start:
            self.start()

    def start(self) -> None:
        """Start decoding (once)."""
        if not self._thread.is_alive():
            self._thread.start()

    def submit(
        self,
        job: FileJob,
        windows: Sequence[Window],
        *,
        task: str,
        initial_prompt: str | None,
        beam_size: int,
        temperatures: tuple[float, ...],
        batch_size: int,
    ) -> list[Future]:
        """Queue `windows` of `job`'s file; each future resolves to that window's RowResult."""
        key = BatchKey(beam_size, temperatures[0], max(batch_size, 1))
        items = [
            _Item(
                job,
                RowRequest(w, self.decoder.features(w), task, initial_prompt, beam_size, temperatures),
                key,
            )
            for w in windows
        ]
        with self._cond:
            self._queue.extend(items)
            self._cond.notify()
        return [item.future for item in items]

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            try:
                self._deliver(batch, self._timed_run(batch))
            except Exception as error:  # noqa: BLE001 - isolate it: each window alone, so one bad file fails alone
                if len(batch) == 1:  # already alone: decoding it again would fail the same way
                    self._fail(batch[0], error)
                    continue
                for item in batch:
                    try:
                        self._deliver([item], self._timed_run([item]))
                    except BaseException as error:  # noqa: BLE001 - this window's file hears of it
                        self._fail(item, error)

    def _timed_run(self, batch: list[_Item]) -> list[RowResult]:
        started = time.perf_counter()
        results = self._run(batch)
        share = (time.perf_counter() - started) / len(batch)
        for item in batch:
            if item.parent is not None:
                item.job.guard_s += share
        return results

    def _fail(self, item: _Item, error: BaseException) -> None:
        while item.parent is not None:
            item = item.parent
        if not item.future.done():
            item.future.set_exception(error)

    def _deliver(self, batch: list[_Item], results: list[RowResult]) -> None:
        again: list[_Item] = []
        for item, result in zip(batch, results):
            halves = None
            if item.parent is None and result.verdict in SECOND_OPINION and len(item.request.temperatures) > 1:
                halves = split_window(item.request.window)
            if halves is not None:
                item.first, item.halves = result, [self._half(item, w) for w in halves]
                again += item.halves
                continue
            if item.parent is None:
                item.future.set_result(result)
                continue
            item.future.set_result(result)
            parent = item.parent
            if parent.halves and all(h.future.done() for h in parent.halves) and not parent.future.done():
                chosen = second_opinion(parent.first, [h.future.result() for h in parent.halves])
                parent.job.redecoded += 1
                parent.future.set_result(chosen)
        if again:
            with self._cond:
                self._queue.extendleft(reversed(again))  # first in the next batches, beside other files' windows
                self._cond.notify()

    def _half(self, item: _Item, window: Window) -> _Item:
        request = RowRequest(
            window,
            self.decoder.features(window),
            item.request.task,
            item.request.initial_prompt,
            item.request.beam_size,
            item.request.temperatures,
        )
        return _Item(item.job, request, item.key, parent=item)

    def _next_batch(self) -> list[_Item]:
        with self._cond:
            while not self._queue:
                self._cond.wait()
            key = self._queue[0].key
            size = min(key.batch_size, self.batch_limit or key.batch_size)
            deadline = time.monotonic() + LINGER_S
            while sum(1 for i in self._queue if i.key == key) < size and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            batch: list[_Item] = []
            kept: deque[_Item] = deque()
            while self._queue:
                item = self._queue.popleft()
                (batch if item.key == key and len(batch) < size else kept).append(item)
            self._queue = kept
            return batch

    def _run(self, batch: list[_Item]) -> list[RowResult]:
        """Decode `batch`; on an out-of-memory, halve the batch limit and decode it again in batches that fit."""
        try:
            return self._decode(batch)
        except Exception as error:
            if len(batch) == 1 or not is_out_of_memory(error):
                raise
            self.batch_limit = limit = max(1, len(batch) // 2)
            message = f"out of memory at batch size {len(batch)}; batch size lowered to {self.batch_limit}"
            logger.warning("%s (%s)", message, error)
            for job in {id(i.job): i.job for i in batch}.values():
                if message not in job.warnings:
                    job.warnings.append(message)
            return [result for i in range(0, len(batch), limit) for result in self._run(batch[i : i + limit])]

    def _decode(self, batch: list[_Item]) -> list[RowResult]:
        self.batch_sizes.append(len(batch))
        encoded = self.decoder.encode(np.stack([i.request.features for i in batch]))
        detected = self.decoder.detect([i.request for i in batch], encoded)
        for item, (language, probability) in zip(batch, detected):
            if item.job.language is None and item.request.window.index == 0 and item.parent is None:
                item.job.language, item.job.language_probability = language, probability
                logger.info("Detected language '%s' with probability %.2f for %s", language, probability, item.job.name)
        languages = [i.job.language or "en" for i in batch]
        return self.decoder.decode([i.request for i in batch], languages, encoded, detected)
