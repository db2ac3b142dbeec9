"""`batchscribe status`: hours done, a running batch's rate and time left, and the files to check first."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from batchscribe.manifest import read_manifest
from batchscribe.run_state import RunStateWriter, read_run_state
from flows.cli_report import status_report

SPEECH = Path(__file__).resolve().parents[1] / "fixtures" / "speech"
CLI = [sys.executable, "-m", "flows.cli"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=900)


def test_status_lists_the_files_to_check_first(prefect_server, cache_dir, bad_media, tmp_path) -> None:
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    shutil.copy(SPEECH / "en2.mp3", inbox / "en2.mp3")
    shutil.copy(bad_media["truncated_mp3"], inbox / "truncated.mp3")
    shutil.copy(bad_media["text_as_mp3"], inbox / "notes.mp3")
    done = _cli("run", str(inbox), "-o", str(out), "-f", "txt", "--no-progress", "--cache-dir", str(cache_dir))
    assert done.returncode == 1  # notes.mp3 is not audio
    assert read_run_state(str(out)).finished and read_run_state(str(out)).files_done == 3

    status = _cli("status", str(out))
    assert status.returncode == 1, status.stderr
    text = status.stdout
    assert "audio transcribed: 0.00 h" in text and "running:" not in text
    assert "notes.mp3" in text.split("check first")[0]  # failures come before the review queue
    queue = text.split("check first", 1)[1].splitlines()
    assert queue[0] == " (1 of 2 transcribed files flagged):"
    flagged = [line for line in queue if line.startswith("truncated.mp3")]
    assert len(flagged) == 1 and "warning: " in flagged[0] and "truncated" in flagged[0]
    assert not any(line.startswith("en2.mp3") for line in queue)

    # While a batch runs, status tells its rate and the time left.
    state = RunStateWriter(str(out), files_total=12)
    state.file_finished(600.0, write=True)
    report = status_report(read_manifest(out), str(out), review_limit=0)
    assert "running: 1 of 12 files, 0.17 h of audio in" in report and "left" in report and "check first" not in report
