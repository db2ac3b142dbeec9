"""A running batch's progress file: rate, time left, and a stopped batch told apart."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

from batchscribe.run_state import RunState, RunStateWriter, read_run_state


def test_the_writer_records_progress_and_the_end(tmp_path) -> None:
    writer = RunStateWriter(str(tmp_path), files_total=4)
    assert read_run_state(str(tmp_path)).files_done == 0
    writer.file_finished(120.0, write=False)
    assert read_run_state(str(tmp_path)).files_done == 0  # buffered until the manifest flushes
    writer.file_finished(None, write=True)  # a failed file: no audio counted
    state = read_run_state(str(tmp_path))
    assert (state.files_done, state.audio_s_done, state.finished) == (2, 120.0, False)
    writer.finish()
    assert read_run_state(str(tmp_path)).finished
    assert read_run_state(str(tmp_path / "elsewhere")) is None


def test_time_left_follows_the_rate_so_far_and_silence_means_stopped() -> None:
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    state = RunState(start.isoformat(), (start + timedelta(minutes=10)).isoformat(), files_total=40, files_done=10)
    assert state.seconds_left() == 30 * 60
    assert not state.stale(start + timedelta(minutes=15)) and state.stale(start + timedelta(hours=1))
    assert not replace(state, finished=True).stale(start + timedelta(hours=1))
    assert replace(state, files_done=0).seconds_left() is None
