"""Cancelling a batch (Ctrl-C): queued files never start, in-flight ones end as `cancelled` rows.

`request()` is what a signal handler calls; the file pipeline checks `check()` between its stages, and
the flow collects finished files with `as_finished`, which on a request cancels every queued file, waits
a short grace for the running ones and gives up on the rest, so the manifest is flushed and the process
can exit within seconds whatever is still decoding.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import TypeVar

from batchscribe.errors import FileCancelledError

GRACE_S = 8.0  # how long running files may take to reach their end (or their next stage) after a request
POLL_S = 0.25

T = TypeVar("T")
_requested = threading.Event()


def request() -> None:
    """Ask the running batch to stop."""
    _requested.set()


def requested() -> bool:
    return _requested.is_set()


def reset() -> None:
    """Forget a request (a new batch in the same process)."""
    _requested.clear()


def check(stage: str) -> None:
    """Raise FileCancelledError, which ends the file as a `cancelled` row, when a cancel was requested."""
    if _requested.is_set():
        raise FileCancelledError(f"cancelled before {stage}: run the batch again to finish it")


def as_finished(futures: dict[Future, T], grace_s: float = GRACE_S) -> Iterator[tuple[T, Future | None]]:
    """(item, its future) as each finishes; once a cancel is requested, the queued futures are cancelled
    (nothing is yielded for them), the running ones get `grace_s` to finish, and those still running are
    yielded as (item, None): the caller records them as cancelled without waiting."""
    pending = set(futures)
    while pending and not _requested.is_set():
        done, pending = wait(pending, timeout=POLL_S, return_when=FIRST_COMPLETED)
        yield from ((futures[f], f) for f in done)
    if not pending:
        return
    running = {f for f in pending if not f.cancel()}
    done, running = wait(running, timeout=grace_s)
    yield from ((futures[f], f) for f in done)
    yield from ((futures[f], None) for f in running)
