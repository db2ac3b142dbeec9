"""Several devices in one worker: a model copy and a window scheduler per device, files dealt to the least busy.

A machine with several GPUs runs one worker process that loads the model once per device
(`TranscribeOptions.device_index`, every visible GPU by default). Each copy has its own window scheduler,
so each device decodes its own batches; a file goes whole to the scheduler with the fewest files in flight
(ties: the one dealt the fewest files so far), so its windows, its language and its warnings stay together.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from batchscribe.decoding import BatchDecoder
from batchscribe.scheduler import WindowScheduler


class DevicePool:
    """One model copy per device, each with its window scheduler started on first use; thread-safe."""

    def __init__(self, models: Sequence[Any], devices: Sequence[int]) -> None:
        """`models[i]` is a faster-whisper WhisperModel loaded on `devices[i]`."""
        self.models, self.devices = list(models), list(devices)
        self.in_flight = [0] * len(self.models)  # files each device is working on now
        self.dealt = [0] * len(self.models)  # files each device was given, all told
        self._schedulers: list[WindowScheduler | None] = [None] * len(self.models)
        self._lock = threading.Lock()

    def scheduler(self, slot: int) -> WindowScheduler:
        """The window scheduler of the model copy in `slot`, started on first use."""
        with self._lock:
            scheduler = self._schedulers[slot]
            if scheduler is None:
                name = f"batchscribe-scheduler-{self.devices[slot]}" if slot else "batchscribe-scheduler"
                scheduler = self._schedulers[slot] = WindowScheduler(BatchDecoder(self.models[slot]), name=name)
            return scheduler

    @contextmanager
    def least_busy(self) -> Iterator[int]:
        """The slot of the copy with the fewest files in flight, held for one file while the block runs."""
        with self._lock:
            slot = min(range(len(self.models)), key=lambda i: (self.in_flight[i], self.dealt[i], i))
            self.in_flight[slot] += 1
            self.dealt[slot] += 1
        try:
            yield slot
        finally:
            with self._lock:
                self.in_flight[slot] -= 1
