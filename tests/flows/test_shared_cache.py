"""Two batches sharing one cache at the same time: each file is decoded and transcribed by one of them only."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from batchscribe.manifest import read_manifest

SPEECH = Path(__file__).resolve().parents[1] / "fixtures" / "speech"
CLIPS = ("en.wav", "es.mp3")


def test_two_processes_sharing_a_cache_transcribe_each_file_once(prefect_server, cache_dir, tmp_path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name in CLIPS:
        shutil.copy(SPEECH / name, inbox / name)
    outs = [tmp_path / "out-1", tmp_path / "out-2"]
    cli = [sys.executable, "-m", "flows.cli", "run", str(inbox), "--cache-dir", str(cache_dir), "--no-progress"]
    # Both against the session's server (PREFECT_API_URL is in the environment), started together.
    batches = [
        subprocess.Popen([*cli, "--output", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for out in outs
    ]
    for batch in batches:
        stdout, stderr = batch.communicate(timeout=600)
        assert batch.returncode == 0, stdout + stderr[-3000:]

    first, second = (read_manifest(out).set_index("relative_path").sort_index() for out in outs)
    assert list(first.index) == sorted(CLIPS) and (first["status"] == "ok").all() and (second["status"] == "ok").all()
    # A cached row carries the timing of the run that made it: one transcription per file across both processes.
    for column in ("started_at", "finished_at", "transcribe_s"):
        assert (first[column] == second[column]).all(), (column, first[column], second[column])
    for name in CLIPS:
        assert (outs[0] / f"{name}.txt").read_text() == (outs[1] / f"{name}.txt").read_text()
    assert not list((cache_dir / "locks").glob("*.lock"))  # every lock was released
