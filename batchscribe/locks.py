"""Cache locks shared by workers on any host: one computes a cache key at a time, the others wait, then hit.

A lock is a lease: a file in `<cache-dir>/locks` naming its holder (host, pid) and an expiry that a
heartbeat thread of the holding process pushes forward every third of the lease while the work goes on.
A holder that dies (a killed pod, a lost node) stops renewing; once its lease lapses any worker on any
host takes the lock over. On the holder's own host a lock whose process is gone is free at once.

A waiter never blocks its worker for good: after `max_wait_s` it stops waiting for a live holder and
computes the key itself (the same result, written twice). Expiries are wall-clock times, so the hosts'
clocks must agree to well within a lease (NTP does).
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio.to_thread
import pydantic_core
from prefect.cache_policies import CachePolicy
from prefect.locking.filesystem import FileSystemLockManager
from prefect.types._datetime import now, parse_datetime

LEASE_S = float(os.environ.get("BATCHSCRIBE_LEASE_S", 60))  # a dead holder blocks its key this long at most
MAX_WAIT_S = float(os.environ.get("BATCHSCRIBE_LOCK_WAIT_S", 1800))  # then a waiter computes the key itself
POLL_S = 0.2  # how often a waiter looks at the lock


class LeaseLockManager(FileSystemLockManager):
    """Lock files with a renewed lease, safe to share between hosts over a shared folder (NFS, a volume).

    Creating a lock and taking over a lapsed one are both atomic (`os.link` onto a name that must not
    exist), so two workers never both believe they hold a key.
    """

    def __init__(self, lock_files_directory: Path, *, lease_s: float = LEASE_S, max_wait_s: float = MAX_WAIT_S):
        super().__init__(lock_files_directory)
        self.lease_s = lease_s
        self.max_wait_s = max_wait_s
        self._held: dict[str, str] = {}  # key -> holder, the leases this process renews
        self._unlocked: set[tuple[str, str]] = set()  # (key, holder) that gave up waiting and computes unlocked
        self._guard = threading.Lock()
        self._heartbeat: threading.Thread | None = None

    # -- reading a lock -------------------------------------------------------------------------------------

    def _get_lock_info(self, key: str, use_cache: bool = True) -> Any:
        """The lock's record, or None when there is none or it is free to take (lapsed, or its process gone)."""
        path = self._lock_path_for_key(key)
        try:
            info = _parse_record(path.read_bytes())
        except FileNotFoundError:
            return None
        except ValueError:  # a record written without `os.link` by another lock manager, caught half-written
            return {"holder": "", "expiration": None, "path": path}
        info["path"] = path
        expiration = info.get("expiration")
        info["expiration"] = parse_datetime(expiration) if expiration else None
        if self._is_free(info):
            return None
        return info

    def _is_free(self, info: dict[str, Any]) -> bool:
        expiration: datetime | None = info["expiration"]
        if expiration is not None and expiration < now("UTC"):
            return True
        return info.get("host") == socket.gethostname() and not _pid_alive(info.get("pid"))

    def is_locked(self, key: str, use_cache: bool = False) -> bool:
        return self._get_lock_info(key) is not None

    def is_lock_holder(self, key: str, holder: str) -> bool:
        if (key, holder) in self._unlocked:
            return True
        info = self._get_lock_info(key)
        return info is not None and info["holder"] == holder

    # -- taking and giving back -----------------------------------------------------------------------------

    def acquire_lock(
        self, key: str, holder: str, acquire_timeout: float | None = None, hold_timeout: float | None = None
    ) -> bool:
        """Take `key`'s lease for `holder`, waiting while a live holder renews it, at most `acquire_timeout`
        (default `max_wait_s`): then returns True without the lock, and the caller computes unlocked."""
        self._ensure_lock_files_directory_exists()
        path = self._lock_path_for_key(key)
        deadline = time.monotonic() + (self.max_wait_s if acquire_timeout is None else acquire_timeout)
        while True:
            if self.is_lock_holder(key, holder):
                return True
            if self._create(path, holder) or self._take_over(path, holder):
                self._hold(key, holder)
                return True
            if time.monotonic() >= deadline:
                with self._guard:
                    self._unlocked.add((key, holder))
                return True
            time.sleep(POLL_S)

    async def aacquire_lock(
        self, key: str, holder: str, acquire_timeout: float | None = None, hold_timeout: float | None = None
    ) -> bool:
        return await anyio.to_thread.run_sync(self.acquire_lock, key, holder, acquire_timeout, hold_timeout)

    def release_lock(self, key: str, holder: str) -> None:
        with self._guard:
            if (key, holder) in self._unlocked:
                self._unlocked.discard((key, holder))
                return
            self._held.pop(key, None)
        info = self._get_lock_info(key)
        if info is not None and info["holder"] == holder:
            info["path"].unlink(missing_ok=True)
        self._locks.pop(key, None)

    def clear_lapsed(self, key: str) -> None:
        """Remove `key`'s lock when its lease has lapsed or its process is gone: a holder that died after
        storing its result leaves the lock behind, and the readers of that result never take it over."""
        path = self._lock_path_for_key(key)
        if path.exists() and self._take_over(path, f"sweeper-{uuid.uuid4().hex[:8]}"):
            path.unlink(missing_ok=True)

    def wait_for_lock(self, key: str, timeout: float | None = None) -> bool:
        deadline = time.monotonic() + (self.max_wait_s if timeout is None else timeout)
        while self.is_locked(key):
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_S)
        return True

    async def await_for_lock(self, key: str, timeout: float | None = None) -> bool:
        return await anyio.to_thread.run_sync(self.wait_for_lock, key, timeout)

    def _record(self, holder: str) -> bytes:
        expiration = now("UTC") + timedelta(seconds=self.lease_s)
        return pydantic_core.to_json(
            {"holder": holder, "expiration": str(expiration), "host": socket.gethostname(), "pid": os.getpid()}
        )

    def _create(self, path: Path, holder: str) -> bool:
        """Link a complete record onto `path`: fails when a lock exists, never shows a half-written file."""
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        tmp.write_bytes(self._record(holder))
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def _take_over(self, path: Path, holder: str) -> bool:
        """Replace a lapsed (or dead) holder's lock, one taker at a time.

        The takers race to create a breaker file named for the lapsed record; the one that creates it
        removes the old lock and links its own. A breaker whose taker died is itself removed after a lease.
        """
        try:
            old = path.read_bytes()
            info = _parse_record(old)
            info["expiration"] = parse_datetime(info["expiration"]) if info.get("expiration") else None
        except (FileNotFoundError, ValueError, TypeError):
            return False
        if not self._is_free(info):
            return False
        breaker = path.with_name(f".{path.name}.{hashlib.sha256(old).hexdigest()[:16]}.break")
        try:
            fd = os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                if time.time() - breaker.stat().st_mtime > self.lease_s:
                    breaker.unlink(missing_ok=True)  # its taker died midway
            except FileNotFoundError:
                pass
            return False
        os.close(fd)
        try:
            if path.read_bytes() != old:  # someone else replaced it meanwhile
                return False
            path.unlink()
            return self._create(path, holder)
        except FileNotFoundError:
            return False
        finally:
            breaker.unlink(missing_ok=True)

    # -- the heartbeat --------------------------------------------------------------------------------------

    def _hold(self, key: str, holder: str) -> None:
        with self._guard:
            self._held[key] = holder
            if self._heartbeat is None or not self._heartbeat.is_alive():
                self._heartbeat = threading.Thread(target=self._renew_forever, name="batchscribe-lease", daemon=True)
                self._heartbeat.start()

    def _renew_forever(self) -> None:
        while True:
            time.sleep(self.lease_s / 3)
            with self._guard:
                held = dict(self._held)
                if not held:  # started again by the next `_hold`
                    self._heartbeat = None
                    return
            for key, holder in held.items():
                self.renew(key, holder)

    def renew(self, key: str, holder: str) -> bool:
        """Push `key`'s expiry a lease ahead if `holder` still holds it; False (and stop renewing) if not."""
        path = self._lock_path_for_key(key)
        try:
            info = _parse_record(path.read_bytes())
        except (FileNotFoundError, ValueError):
            info = {}
        if info.get("holder") != holder or info.get("host") != socket.gethostname() or info.get("pid") != os.getpid():
            with self._guard:
                if self._held.get(key) == holder:
                    del self._held[key]  # taken over while this process stalled past its lease
            return False
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        tmp.write_bytes(self._record(holder))
        os.replace(tmp, path)
        return True


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


def locked_cache_policy(
    key_fn: Callable[[Any, dict], str],
    cache_dir: str | Path,
    *,
    lease_s: float = LEASE_S,
    max_wait_s: float = MAX_WAIT_S,
) -> CachePolicy:
    """`key_fn` as a cache policy under which one worker at a time computes a key; the others wait, then hit.

    The lease files live in `<cache_dir>/locks`, beside the results every worker sharing the cache reads.
    """
    locks = LeaseLockManager(Path(cache_dir) / "locks", lease_s=lease_s, max_wait_s=max_wait_s)
    return CachePolicy.from_cache_key_fn(key_fn).configure(lock_manager=locks, isolation_level="SERIALIZABLE")


def _parse_record(data: bytes) -> dict[str, Any]:
    """A lock file's record. Not through pydantic-core's string cache: each record's holder and expiry are new
    strings, which that process-wide cache would keep (up to 16,384 of them, ~150 bytes a file done)."""
    return pydantic_core.from_json(data, cache_strings=False)
