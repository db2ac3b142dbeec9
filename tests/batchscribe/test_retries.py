import inspect

from batchscribe.retries import retry_when
from tasks.audio import MediaError
from tasks.fetch import InputError, retry_if_transient
from tasks.transcribe import retry_if_engine_transient


class State:
    def __init__(self, error: BaseException | None) -> None:
        self.error = error

    def result(self) -> None:
        if self.error:
            raise self.error


def test_conditions_are_plain_functions_prefect_will_call() -> None:
    for condition in (retry_if_transient, retry_if_engine_transient, retry_when(lambda e: True)):
        assert inspect.isfunction(condition)


def test_only_transient_errors_retry() -> None:
    assert retry_if_transient(None, None, State(ConnectionError("reset by peer")))
    assert retry_if_transient(None, None, State(TimeoutError()))
    assert not retry_if_transient(None, None, State(InputError("file is empty")))
    assert not retry_if_transient(None, None, State(FileNotFoundError()))
    assert retry_if_engine_transient(None, None, State(RuntimeError("CUDA out of memory. Tried to allocate")))
    assert not retry_if_engine_transient(None, None, State(MediaError("not an audio file")))
    assert not retry_if_engine_transient(None, None, State(None))
