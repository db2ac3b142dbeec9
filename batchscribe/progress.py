"""A process-local hook through which a running batch reports each finished file (the CLI's progress bar)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Listener = Callable[[dict[str, Any]], None]

_listeners: list[Listener] = []


def subscribe(listener: Listener) -> Callable[[], None]:
    """Call `listener(row)` for every finished file; returns the function that unsubscribes it."""
    _listeners.append(listener)
    return lambda: _listeners.remove(listener)


def file_finished(row: dict[str, Any]) -> None:
    for listener in list(_listeners):
        listener(row)
