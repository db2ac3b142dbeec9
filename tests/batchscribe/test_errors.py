import inspect

import pytest

from batchscribe.errors import (
    ContentNotFoundError,
    GpuError,
    IncompleteError,
    InputError,
    MediaError,
    NoAudioError,
    UnavailableError,
    gpu_errors,
    is_transient,
    row_error,
)
from batchscribe.retries import retry_if_transient, retry_when


class State:
    def __init__(self, error: BaseException | None) -> None:
        self.error = error

    def result(self) -> None:
        if self.error:
            raise self.error


def test_conditions_are_plain_functions_prefect_will_call() -> None:
    for condition in (retry_if_transient, retry_when(lambda e: True)):
        assert inspect.isfunction(condition)


def test_only_transient_errors_retry() -> None:
    assert retry_if_transient(None, None, State(UnavailableError("reset by peer")))
    assert retry_if_transient(None, None, State(IncompleteError("CAR response truncated")))
    assert not retry_if_transient(None, None, State(InputError("file is empty")))
    assert not retry_if_transient(None, None, State(ContentNotFoundError("no such file")))
    assert not retry_if_transient(None, None, State(FileNotFoundError()))  # not ours: a bug, never retried
    assert retry_if_transient(None, None, State(GpuError("GPU failure: CUDA out of memory")))
    assert not retry_if_transient(None, None, State(MediaError("not an audio file")))
    assert not retry_if_transient(None, None, State(None))


def test_engine_gpu_failures_become_gpu_errors() -> None:
    with pytest.raises(GpuError, match="CUDA out of memory") as info:
        with gpu_errors():
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert is_transient(info.value) and isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(ValueError), gpu_errors():
        raise ValueError("bad tensor")


def test_each_error_decides_its_row() -> None:
    assert row_error(NoAudioError("no audio stream")) == {"status": "no_audio", "error": "no audio stream"}
    assert row_error(InputError("file is empty")) == {"status": "failed", "error": "file is empty"}
    assert row_error(KeyError("x")) == {"status": "failed", "error": "KeyError: 'x'"}


def test_every_task_retries_by_the_one_condition() -> None:
    from tasks.diarize import diarize_audio
    from tasks.fetch import stage_input
    from tasks.transcribe import transcribe_audio

    assert {t.retry_condition_fn for t in (stage_input, transcribe_audio, diarize_audio)} == {retry_if_transient}
