"""Cache locks shared by workers: one computes a cache key at a time, the others wait, then hit the cache."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio.to_thread
import pydantic_core
from prefect.cache_policies import CachePolicy
from prefect.locking.filesystem import FileSystemLockManager
from prefect.types._datetime import now


class ProcessLockManager(FileSystemLockManager):
    """FileSystemLockManager whose lock files die with their process.

    Prefect's lock files have no owner: one left by a killed process would block every later run forever.
    Each lock file here also records its host and pid and is created atomically with its contents, and a
    lock whose process is gone (same host) counts as free. A lock from a dead process on another host
    sharing the cache stays until `<cache-dir>/locks/*.lock` is removed.
    """

    def _get_lock_info(self, key: str, use_cache: bool = True) -> Any:
        path = self._lock_path_for_key(key)
        try:
            info = super()._get_lock_info(key, use_cache)
        except ValueError:  # another actor's half-written file, from a FileSystemLockManager without `os.link`
            return {"holder": "", "expiration": None, "path": path}
        if info and info.get("host") == socket.gethostname() and not _pid_alive(info.get("pid")):
            path.unlink(missing_ok=True)
            self._locks.pop(key, None)
            return None
        return info

    def acquire_lock(
        self, key: str, holder: str, acquire_timeout: float | None = None, hold_timeout: float | None = None
    ) -> bool:
        self._ensure_lock_files_directory_exists()
        path = self._lock_path_for_key(key)
        expiration = now("UTC") + timedelta(seconds=hold_timeout) if hold_timeout is not None else None
        payload = {"holder": holder, "expiration": None if expiration is None else str(expiration)}
        payload.update(host=socket.gethostname(), pid=os.getpid())
        while True:
            if self.is_lock_holder(key, holder):
                return True
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
            tmp.write_bytes(pydantic_core.to_json(payload))
            try:
                os.link(tmp, path)  # atomic: fails when the lock exists, never shows an empty file
                self._locks[key] = {"holder": holder, "expiration": expiration, "path": path}
                return True
            except FileExistsError:
                pass
            finally:
                tmp.unlink(missing_ok=True)
            if not self.wait_for_lock(key, acquire_timeout):
                return False

    async def aacquire_lock(
        self, key: str, holder: str, acquire_timeout: float | None = None, hold_timeout: float | None = None
    ) -> bool:
        return await anyio.to_thread.run_sync(self.acquire_lock, key, holder, acquire_timeout, hold_timeout)


def _pid_alive(pid: object) -> bool:
    if not isinstance(pid, int):
        return True  # not ours to judge: a lock written without a pid
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def locked_cache_policy(key_fn: Callable[[Any, dict], str], cache_dir: str | Path) -> CachePolicy:
    """`key_fn` as a cache policy under which one worker at a time computes a key; the others wait, then hit.

    The lock files live in `<cache_dir>/locks`, beside the results every worker sharing the cache reads.
    """
    locks = ProcessLockManager(lock_files_directory=Path(cache_dir) / "locks")
    return CachePolicy.from_cache_key_fn(key_fn).configure(lock_manager=locks, isolation_level="SERIALIZABLE")
