"""A running batch's progress, kept beside its manifest so `batchscribe status` can tell its rate and time left."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone

from batchscribe import storage
from batchscribe.storage import StorageOptions

RUN_STATE = "batch-progress.json"
STALE_S = 600.0  # a running batch not heard from for this long has probably stopped


@dataclass(frozen=True)
class RunState:
    started_at: str  # ISO 8601, UTC
    updated_at: str
    files_total: int
    files_done: int = 0
    audio_s_done: float = 0.0  # seconds of audio in the files done
    finished: bool = False

    def elapsed_s(self) -> float:
        return (_parse(self.updated_at) - _parse(self.started_at)).total_seconds()

    def seconds_left(self) -> float | None:
        """Time left at the rate so far (files a second); None before the first file is done."""
        if not self.files_done:
            return None
        return self.elapsed_s() / self.files_done * (self.files_total - self.files_done)

    def stale(self, now: datetime | None = None) -> bool:
        """Whether a batch that has not finished stopped reporting (killed, or its machine went away)."""
        now = now or datetime.now(timezone.utc)
        return not self.finished and (now - _parse(self.updated_at)).total_seconds() > STALE_S


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


class RunStateWriter:
    """The flow's side: the state written at the start, as files finish (at most every `min_interval_s`),
    and at the end."""

    def __init__(self, output_root: str, files_total: int, storage_options: StorageOptions | None = None) -> None:
        self.path = storage.join(output_root, RUN_STATE)
        self.storage_options = storage_options
        now = _now()
        self.state = RunState(started_at=now, updated_at=now, files_total=files_total)
        self._write()

    def file_finished(self, audio_s: float | None, *, write: bool) -> None:
        self.state = replace(
            self.state,
            updated_at=_now(),
            files_done=self.state.files_done + 1,
            audio_s_done=self.state.audio_s_done + (audio_s or 0.0),
        )
        if write:
            self._write()

    def finish(self) -> None:
        self.state = replace(self.state, updated_at=_now(), finished=True)
        self._write()

    def _write(self) -> None:
        data = json.dumps(asdict(self.state)).encode()
        storage.write_bytes_atomic(self.path, data, self.storage_options)


def read_run_state(output_root: str, storage_options: StorageOptions | None = None) -> RunState | None:
    """The last batch's progress in `output_root`, or None when none was recorded."""
    data = storage.read_bytes(storage.join(output_root, RUN_STATE), storage_options)
    if data is None:
        return None
    try:
        return RunState(**json.loads(data))
    except (ValueError, TypeError):
        return None
