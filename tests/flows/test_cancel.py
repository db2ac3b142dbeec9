"""Ctrl-C on `batchscribe run`, as a user presses it: a real CLI subprocess on real speech files."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from batchscribe.manifest import DATASET, read_manifest
from tests.conftest import ffmpeg

SPEECH = Path(__file__).resolve().parents[1] / "fixtures" / "speech"
CLIPS = ("en.wav", "en2.mp3", "es.mp3", "de.mp3", "fr.mp3")
FILES = 20
EXIT_WITHIN_S = 15


def make_inbox(inbox: Path) -> None:
    """FILES distinct speech files (each clip after its own stretch of silence: no two share a cache key)."""
    inbox.mkdir()
    for i in range(FILES):
        clip = SPEECH / CLIPS[i % len(CLIPS)]
        ffmpeg("-i", f"file:{clip}", "-af", f"adelay={100 * (i + 1)}", "-ac", "1", f"file:{inbox / f'{i:02d}.mp3'}")


def test_ctrl_c_cancels_cleanly_and_the_next_run_finishes_the_rest(prefect_server, cache_dir, tmp_path) -> None:
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    make_inbox(inbox)
    cli = [sys.executable, "-m", "flows.cli", "run", str(inbox), "-o", str(out), "-f", "txt", "--no-progress"]
    cli += ["--cache-dir", str(cache_dir), "--workers", "2"]
    run = subprocess.Popen(cli, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 400
    while not (out / DATASET).is_dir() or not list((out / DATASET).iterdir()):  # the first file is in
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()[1][-3000:]
        time.sleep(0.2)
    run.send_signal(signal.SIGINT)
    interrupted = time.monotonic()
    stdout, stderr = run.communicate(timeout=60)
    exit_s = time.monotonic() - interrupted
    assert run.returncode == 130, stderr[-3000:]
    assert exit_s < EXIT_WITHIN_S, exit_s
    assert "cancelled" in stderr and "run the same command again" in stderr

    first = read_manifest(out).set_index("relative_path")
    ok = first.index[first["status"] == "ok"]
    assert 1 <= len(ok) < FILES and set(first["status"]) <= {"ok", "cancelled"}
    assert len(first) < FILES  # queued files got no row: they never started
    assert all((out / first.loc[key, "txt_path"]).is_file() for key in ok)
    assert pd.read_csv(out / "manifest.csv").shape[0] == len(first)  # the view was written too

    again = subprocess.run(cli, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    second = read_manifest(out).set_index("relative_path")
    assert len(second) == FILES and set(second["status"]) == {"ok"}
    # Files finished before Ctrl-C were not transcribed again: their rows keep the first run's times.
    assert (second.loc[ok, "finished_at"] == first.loc[ok, "finished_at"]).all()
    print(f"\nCtrl-C: exit {exit_s:.1f} s after SIGINT; {len(ok)} of {FILES} ok, {len(first) - len(ok)} cancelled")
