"""Prefect retry conditions: retry what may pass on a second try, never what will fail the same way."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from batchscribe.errors import is_transient

RetryCondition = Callable[[Any, Any, Any], bool]


def retry_when(is_transient: Callable[[BaseException], bool]) -> RetryCondition:
    """A `retry_condition_fn` that retries only when `is_transient(error)` says so.

    It returns a plain nested function on purpose: Prefect calls a retry condition only when
    `inspect.isfunction()` is true, and silently never retries for any other callable (a partial, say).
    """

    def condition(task: Any, task_run: Any, state: Any) -> bool:
        try:
            state.result()
        except Exception as error:  # noqa: BLE001 - classify, do not handle
            return is_transient(error)
        return False

    return condition


# The one retry condition every task uses: our error vocabulary's kind decides (batchscribe.errors).
retry_if_transient = retry_when(is_transient)


class Attempts:
    """Runs a Prefect task's body in the current thread with the task's own retry policy, counting runs.

    Files go through the flow in groups per task run (`flows.file_pipeline`), so a file's stage and transcription
    retry here, one file at a time: `task.retries` more tries after a transient error, after
    `task.retry_delay_seconds` (with `task.retry_jitter_factor`), exactly when `retry_if_transient` would.
    `count` says how many runs it took, also when the last one failed.
    """

    def __init__(self) -> None:
        self.count = 0

    def call(self, task: Any, *args: Any, **kwargs: Any) -> Any:
        """`task.fn(*args, **kwargs)`, retried like the task."""
        for attempt in range(task.retries + 1):
            self.count += 1
            try:
                return task.fn(*args, **kwargs)
            except Exception as error:
                if attempt == task.retries or not is_transient(error):
                    raise
                time.sleep(_delay_s(task, attempt))
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def _delay_s(task: Any, attempt: int) -> float:
    delays = task.retry_delay_seconds or 0
    delay = delays[min(attempt, len(delays) - 1)] if isinstance(delays, (list, tuple)) else delays
    jitter = task.retry_jitter_factor or 0
    return max(0.0, delay * random.uniform(1 - jitter, 1 + jitter)) if jitter else float(delay)
