"""The window scheduler: one model, many files. Windows of every file in flight share the model's batches.

Each file's transcribe task cuts its audio into speech windows (`batchscribe.windows`), hands them to the
scheduler of the loaded model and waits for its words; each of the scheduler's lanes (one thread per batch
the model can decode at once: two on the CPU, one on a GPU) takes the oldest windows waiting, from any file,
up to the batch size, and decodes them together (`batchscribe.decoding`). Clips that share rows go to the
first lane only, so that they meet as many partners as one lane would give them; the other lane decodes
windows that go alone in their row (a longer file's). When fewer of those wait than fill a batch for every
lane, a lane takes its share of them, so that the lanes finish together. A file whose language is not
given takes the one detected on its first window, and keeps it: another lane encodes the file's other
windows meanwhile, and waits for the language before it decodes them. A row that fails the decoder's checks
is cut in two and both halves go to the front of the queue, to be decoded in the next batch beside other
files' windows; `guard.second_opinion` then picks the reading. A GPU out-of-memory halves the batch size and
decodes the same windows again in halves; after RAISE_AFTER_BATCHES full batches at the lowered size the
next size up is tried again (never above the asked one). At batch size 1 the error reaches the file's task,
which falls back to the CPU. A batch that fails otherwise is decoded again one window at a time, so that
only the file whose window fails hears of it; the others get a warning.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace

import numpy as np

from batchscribe import packing
from batchscribe.decoding import BatchDecoder
from batchscribe.errors import is_out_of_memory
from batchscribe.guard import second_opinion
from batchscribe.rows import SECOND_OPINION, RowRequest, RowResult
from batchscribe.windows import MAX_WINDOW_S, Window, split_window

logger = logging.getLogger(__name__)

LINGER_S = 0.05  # a batch that is not full waits this long for windows from other files
MIN_LANE_ROWS = 4  # a lane takes its share of the waiting rows, but at least this many (or all there are)
# After an out-of-memory, this many full batches at the lowered size before the next size up is tried
# again; doubled after each out-of-memory, so a size that keeps failing is tried less and less often.
RAISE_AFTER_BATCHES = 50


@dataclass
class FileJob:
    """One file's windows in the scheduler, and what the scheduler learned about the file."""

    name: str
    language: str | None
    language_probability: float = 1.0
    detecting: bool = False  # its first window is being decoded: its other windows' rows wait for the language
    redecoded: int = 0  # windows the guard decoded again, as two shorter rows
    guard_s: float = 0.0  # this file's share of the batches that decoded them again
    model_s: float = 0.0  # the file's share of the model's time: each batch's time split over its rows
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
    packable: bool = False  # short enough to share a row with other files' windows
    fingerprint: np.ndarray | None = None  # a packable window's sound, so that alike windows never share a row
    halves: list[_Item] | None = None  # a second opinion under way: the two shorter rows
    first: RowResult | None = None  # ... and the row's first reading
    parent: _Item | None = None  # set on a half


class WindowScheduler:
    """Batches windows across files onto one model; thread-safe, with a decoding thread per lane."""

    def __init__(
        self,
        decoder: BatchDecoder,
        *,
        name: str = "batchscribe-scheduler",
        start: bool = True,
        lanes: int | None = None,
    ) -> None:
        """`start=False` queues windows without decoding them until `start()` (to batch a known set at once);
        `lanes`: batches decoded at once (default: as many as the model runs at once, `decoder.lanes`)."""
        self.decoder = decoder
        self.lanes = max(1, decoder.lanes if lanes is None else lanes)
        self.batch_limit: int | None = None  # lowered after an out-of-memory, raised again after full batches
        self._ooms, self._fitted = 0, 0  # out-of-memory errors so far; full batches since the limit last moved
        self.batch_sizes: list[int] = []  # rows of every batch handed to the model, in order (for tests and logs)
        self.languages = packing.LanguagePrior()
        self._queue: deque[_Item] = deque()
        self._cond = threading.Condition()  # guards the queue and what lanes share: jobs, languages, futures
        self._busy = 0  # lanes decoding a batch now
        self._threads = [
            threading.Thread(target=self._loop, args=(i,), name=name if i == 0 else f"{name}-lane{i}", daemon=True)
            for i in range(self.lanes)
        ]
        self._started = False
        if start:
            self.start()

    def start(self) -> None:
        """Start decoding (once)."""
        with self._cond:
            if self._started:
                return
            self._started = True
        for thread in self._threads:
            thread.start()

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
        whole_file: bool = True,
    ) -> list[Future]:
        """Queue `windows` of `job`'s file; each future resolves to that window's RowResult.

        A file that is one short window (`whole_file`: `windows` are all of the file's windows) may share a
        row with other files' windows; a longer file's windows never do, so its words do not depend on
        which other files are in flight.
        """
        key = BatchKey(beam_size, temperatures[0], max(batch_size, 1))
        items = []
        one_window = whole_file and len(windows) == 1
        for w in windows:
            features = self.decoder.features(w)
            packable = one_window and w.duration_s <= packing.PACK_MAX_S
            items.append(
                _Item(
                    job,
                    RowRequest(w, features, task, initial_prompt, beam_size, temperatures),
                    key,
                    packable=packable,
                    fingerprint=packing.fingerprint(features, w.duration_s) if packable else None,
                )
            )
        with self._cond:
            self._queue.extend(items)
            self._cond.notify_all()
        return [item.future for item in items]

    def _loop(self, lane: int) -> None:
        while True:
            batch = self._next_batch(lane)
            try:
                self._decode_batch(batch)
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()  # a lane waiting for a fuller batch goes on

    def _decode_batch(self, batch: list[_Item]) -> None:
        """Decode `batch` and deliver its results; when it fails, each of its windows alone."""
        try:
            self._deliver(batch, self._timed_run(batch))
        except Exception as error:  # noqa: BLE001 - isolate it: each window alone, so one bad file fails alone
            if len(batch) == 1:  # already alone: decoding it again would fail the same way
                self._fail(batch[0], error)
                return
            jobs = list({id(i.job): i.job for i in batch}.values())
            reason = f"{type(error).__name__}: {error}"
            logger.warning(
                "a batch of %d windows failed (%s); decoding each window alone (files: %s)",
                len(batch),
                reason,
                ", ".join(job.name for job in jobs),
            )
            message = f"a batch holding windows of this file failed ({reason}); its windows were decoded alone"
            for job in jobs:
                if message not in job.warnings:
                    job.warnings.append(message)
            for item in batch:
                try:
                    self._deliver([item], self._timed_run([item]))
                except BaseException as error:  # noqa: BLE001 - this window's file hears of it
                    self._fail(item, error)

    def _timed_run(self, batch: list[_Item]) -> list[RowResult]:
        started = time.perf_counter()
        results = self._run(batch)
        share = (time.perf_counter() - started) / len(batch)
        with self._cond:
            for item in batch:
                item.job.model_s += share  # the file's model time: its share of each batch, no waiting
                if item.parent is not None:
                    item.job.guard_s += share
        return results

    def _fail(self, item: _Item, error: BaseException) -> None:
        with self._cond:
            while item.parent is not None:
                item = item.parent
            item.job.detecting = False  # its other windows wait no longer (they decode as English)
            self._cond.notify_all()
            if not item.future.done():
                item.future.set_exception(error)

    def _deliver(self, batch: list[_Item], results: list[RowResult]) -> None:
        with self._cond:  # lanes deliver one at a time: two halves of one window may end in two lanes
            self._deliver_locked(batch, results)

    def _deliver_locked(self, batch: list[_Item], results: list[RowResult]) -> None:
        again: list[_Item] = []
        for item, result in zip(batch, results):
            halves = None
            if result.shared > 1 and (result.verdict in SECOND_OPINION or result.unsure):
                item.packable = False  # its shared row failed, or it lost its words there: decoded alone next
                again.append(item)
                continue
            if item.parent is None and result.verdict in SECOND_OPINION and len(item.request.temperatures) > 1:
                halves = split_window(item.request.window)
            if halves is not None:
                item.first, item.halves = result, [self._half(item, w) for w in halves]
                again += item.halves
                continue
            item.future.set_result(result)
            parent = item.parent
            if (
                parent is not None
                and parent.halves
                and all(h.future.done() for h in parent.halves)
                and not parent.future.done()
            ):
                chosen = second_opinion(parent.first, [h.future.result() for h in parent.halves])
                parent.job.redecoded += 1
                parent.future.set_result(chosen)
        if again:
            self._queue.extendleft(reversed(again))  # first in the next batches, beside other files' windows
            self._cond.notify_all()

    def _half(self, item: _Item, window: Window) -> _Item:
        return _Item(item.job, self._for_window(item.request, window), item.key, parent=item)

    def _for_window(self, request: RowRequest, window: Window) -> RowRequest:
        """`request` (task, prompt, search) for another window."""
        return replace(request, window=window, features=self.decoder.features(window))

    def _next_batch(self, lane: int) -> list[_Item]:
        while not (batch := self._take(lane)):  # another lane took what this one waited for
            pass
        return batch

    def _take(self, lane: int) -> list[_Item]:
        with self._cond:
            while (key := next((i.key for i in self._queue if _takes(lane, i)), None)) is None:
                self._cond.wait()
            size = min(key.batch_size, self.batch_limit or key.batch_size)
            deadline = time.monotonic() + LINGER_S
            while (waiting := _RowCount.of(i for i in self._queue if i.key == key and _takes(lane, i))).rows < size:
                if self._busy and waiting.rows < 1:
                    # Another lane decodes: rather than a row of a few clips, wait for a full row or for that
                    # lane (a clip decodes worse in a sparse row than among others: docs/performance.md).
                    self._cond.wait()
                    continue
                if (left := deadline - time.monotonic()) <= 0:
                    break
                self._cond.wait(left)
            if self.lanes > 1:  # a share of the windows every lane takes, so that the lanes end together
                size = min(size, max(math.ceil(waiting.alone / self.lanes), MIN_LANE_ROWS) + waiting.packed_rows)
            batch: list[_Item] = []
            count = _RowCount()
            kept: deque[_Item] = deque()
            while self._queue:
                item = self._queue.popleft()
                if item.key == key and _takes(lane, item) and count.with_item(item).rows <= size:
                    batch.append(item)
                    count = count.with_item(item)
                    if item.job.language is None and _first(item):
                        item.job.detecting = True
                else:
                    kept.append(item)
            self._queue = kept
            if self._queue:
                self._cond.notify_all()  # the other lanes' share
            self._busy += bool(batch)
            return batch

    def _run(self, batch: list[_Item]) -> list[RowResult]:
        """Decode `batch`; on an out-of-memory, halve the batch limit and decode it again in batches that fit.

        After `RAISE_AFTER_BATCHES` (doubled for each out-of-memory so far) full batches at a lowered limit,
        the limit doubles again, up to the batch size asked for (then no limit).
        """
        try:
            results = self._decode(batch)
        except Exception as error:
            rows = _rows(batch)
            if len(rows) == 1 or not is_out_of_memory(error):
                raise
            self.batch_limit = limit = max(1, len(rows) // 2)
            self._ooms, self._fitted = self._ooms + 1, 0
            message = (
                f"out of memory at batch size {len(rows)}; batch size lowered to {limit}, "
                f"{len(rows)} tried again after {self._raise_after} full batches"
            )
            logger.warning("%s (%s)", message, error)
            for job in {id(i.job): i.job for i in batch}.values():
                if message not in job.warnings:
                    job.warnings.append(message)
            done: dict[int, RowResult] = {}
            for i in range(0, len(rows), limit):
                part = [item for row in rows[i : i + limit] for item in row]
                done.update((id(item), result) for item, result in zip(part, self._run(part)))
            return [done[id(item)] for item in batch]
        limit = self.batch_limit
        if limit is not None and self.batch_sizes[-1] >= limit:
            self._fitted += 1
            if self._fitted >= self._raise_after:
                asked = batch[0].key.batch_size
                self.batch_limit = None if limit * 2 >= asked else limit * 2
                self._fitted = 0
                logger.warning(
                    "batch size raised from %d to %d after %d full batches without running out of memory",
                    limit,
                    min(limit * 2, asked),
                    self._raise_after,
                )
        return results

    @property
    def _raise_after(self) -> int:
        """Full batches at a lowered limit before it is raised: RAISE_AFTER_BATCHES, doubled per out-of-memory."""
        return RAISE_AFTER_BATCHES << max(self._ooms - 1, 0)

    def _decode(self, batch: list[_Item]) -> list[RowResult]:
        self._detect_clips(batch)
        rows = _rows(batch)
        self.batch_sizes.append(len(rows))
        packs = [None if len(row) == 1 else packing.pack([i.request.window for i in row]) for row in rows]
        requests = [
            row[0].request if p is None else self._for_window(row[0].request, p.window) for row, p in zip(rows, packs)
        ]
        encoded = self.decoder.encode(np.stack([r.features for r in requests]))
        detected = self.decoder.detect(requests, encoded)
        for row, (language, probability) in zip(rows, detected):
            item = row[0]
            if item.job.language is None and _first(item):
                self._decide(item.job, language, probability)
        self._await_languages(rows)
        languages = [row[0].job.language or "en" for row in rows]
        results = self.decoder.decode(requests, languages, encoded, detected)
        by_item: dict[int, RowResult] = {}
        for row, packed, result in zip(rows, packs, results):
            parts = [result] if packed is None else packing.split_back(packed, result)
            by_item.update((id(item), part) for item, part in zip(row, parts))
        return [by_item[id(item)] for item in batch]

    def _await_languages(self, rows: list[list[_Item]]) -> None:
        """Wait, encoder work done, for the language of each file whose first window another lane is decoding
        (that lane decides it as soon as its own encoder pass is done)."""
        with self._cond:
            while any(row[0].job.language is None and row[0].job.detecting for row in rows):
                self._cond.wait()

    def _detect_clips(self, batch: list[_Item]) -> None:
        """The language of each short file that has none yet, from a short encoder pass over its first window."""
        clips = [i for i in batch if i.packable and i.job.language is None and i.request.window.index == 0]
        if not clips:
            return
        found = packing.clip_languages(
            [i.request.features for i in clips],
            [i.request.window.duration_s for i in clips],
            lambda frames: self.decoder.language_probabilities(self.decoder.encode(frames)),
        )
        with self._cond:  # the pile's languages as they stand: another lane may be deciding too
            for item, probabilities in zip(clips, found):
                self._decide(item.job, *self.languages.choose(probabilities))

    def _decide(self, job: FileJob, language: str, probability: float) -> None:
        with self._cond:
            job.language, job.language_probability, job.detecting = language, probability, False
            self.languages.observe(language, probability)
            self._cond.notify_all()  # rows of its other windows, waiting in another lane, go on
        logger.info("Detected language '%s' with probability %.2f for %s", language, probability, job.name)


def _first(item: _Item) -> bool:
    """The file's first window (the one its language is detected on), not a half of it."""
    return item.request.window.index == 0 and item.parent is None


def _takes(lane: int, item: _Item) -> bool:
    """Whether `lane` decodes `item`: the first lane any window, the others only windows that go alone in
    their row (clips that share rows stay together in the first lane's batches)."""
    return lane == 0 or not item.packable


def _group(item: _Item) -> tuple:
    return item.request.task, item.request.initial_prompt, item.job.language


def _rows(batch: list[_Item]) -> list[list[_Item]]:
    """`batch` as rows: packable windows of a known language share rows of at most 30 s, never with a
    window that sounds alike; others go alone."""
    rows: list[list[_Item]] = []
    open_rows: dict[tuple, list[tuple[list[_Item], float]]] = {}
    for item in batch:
        if not item.packable or item.job.language is None:
            rows.append([item])
            continue
        candidates = open_rows.setdefault(_group(item), [])
        slot = next(
            (
                k
                for k, (row, total) in enumerate(candidates)
                if packing.fits(total, item.request.window) and not any(_alike(item, other) for other in row)
            ),
            None,
        )
        if slot is None:
            slot = len(candidates)
            candidates.append(([], 0.0))
            rows.append(candidates[slot][0])
        row, total = candidates[slot]
        row.append(item)
        candidates[slot] = (row, total + (packing.JOIN_GAP_S if total else 0.0) + item.request.window.duration_s)
    return rows


def _alike(a: _Item, b: _Item) -> bool:
    return a.fingerprint is not None and b.fingerprint is not None and packing.alike(a.fingerprint, b.fingerprint)


@dataclass(frozen=True)
class _RowCount:
    """About how many rows some windows make: one per window that goes alone, 30 s of packed speech per row."""

    alone: int = 0
    packed_s: float = 0.0

    @property
    def packed_rows(self) -> float:
        return self.packed_s / MAX_WINDOW_S

    @property
    def rows(self) -> float:
        return self.alone + self.packed_rows

    def with_item(self, item: _Item) -> _RowCount:
        if item.packable:
            return _RowCount(self.alone, self.packed_s + item.request.window.duration_s + packing.JOIN_GAP_S)
        return _RowCount(self.alone + 1, self.packed_s)

    @classmethod
    def of(cls, items: Iterable[_Item]) -> _RowCount:
        count = cls()
        for item in items:
            count = count.with_item(item)
        return count
