"""Results cached by content key, in Prefect's own result format, read and written without a task run.

Files go through the flow in groups per task run (`flows.file_pipeline`), so each file's transcript is looked up
and stored here rather than by Prefect's per-task cache policy. It is the same store as a cached task's
(`<cache-dir>/results/<key>`, Prefect's ResultStore), under the same leases (`<cache-dir>/locks`,
`batchscribe.locks`): one worker at a time computes a key, across every process and host sharing the cache;
the others wait, then read it.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect.filesystems import LocalFileSystem
from prefect.results import ResultStore

from batchscribe.locks import LeaseLockManager


class ResultCache:
    """Values by key under `<cache_dir>/results`, computed once across the processes sharing `cache_dir`."""

    def __init__(self, cache_dir: str | Path) -> None:
        cache_dir = Path(cache_dir)
        self.locks = LeaseLockManager(cache_dir / "locks")
        self.store = ResultStore(
            result_storage=LocalFileSystem(basepath=str(cache_dir / "results")),
            lock_manager=self.locks,
            cache_result_in_memory=False,  # a batch of 100,000 files reads each result once
        )

    def get(self, key: str, holder: str | None = None) -> Any | None:
        """The value stored under `key`, or None (also for an entry that cannot be read: it is computed again).

        Waits while another worker holds the key's lock, unless `holder` (the lock's holder) is the caller.
        """
        try:
            return self.store.read(key, holder=holder).result
        except Exception:  # noqa: BLE001 - missing, torn by a crash, or from an older version: a miss
            return None

    def get_or_compute(self, key: str, compute: Callable[[], Any]) -> tuple[Any, bool]:
        """(value, whether it came from the cache): read it, or compute and store it under the key's lock."""
        if (value := self.get(key)) is not None:
            self.locks.clear_lapsed(key)  # left by a holder that died between storing the value and releasing
            return value, True
        holder = f"{os.getpid()}-{threading.get_ident()}-{uuid.uuid4().hex[:8]}"
        # Waits while another worker holds the key's lease; past the bound it computes the key itself, unstored.
        locked = self.store.acquire_lock(key, holder=holder)
        try:
            if locked and (value := self.get(key, holder)) is not None:
                return value, True
            value = compute()
            if locked:
                self.store.write(value, key=key, holder=holder)
            return value, False
        finally:
            if locked:
                self.store.release_lock(key, holder=holder)
