"""Prefect retry conditions: retry what may pass on a second try, never what will fail the same way."""

from __future__ import annotations

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
