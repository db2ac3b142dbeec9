"""A process-local hook through which a running batch reports its progress (the CLI's progress bar)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class Listener(Protocol):
    def batch_started(self, total_files: int) -> None: ...

    def file_finished(self, row: dict[str, Any]) -> None: ...


_listeners: list[Listener] = []


def subscribe(listener: Listener) -> Callable[[], None]:
    """Tell `listener` about every batch in this process; returns the function that unsubscribes it."""
    _listeners.append(listener)
    return lambda: _listeners.remove(listener)


def batch_started(total_files: int) -> None:
    for listener in list(_listeners):
        listener.batch_started(total_files)


def file_finished(row: dict[str, Any]) -> None:
    for listener in list(_listeners):
        listener.file_finished(row)
