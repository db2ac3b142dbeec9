"""SIGKILL a running batch midway, run it again: nothing finished is redone, lost or torn."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from batchscribe.manifest import read_manifest

SPEECH = Path(__file__).resolve().parents[1] / "fixtures" / "speech"
CLIPS = ("en.wav", "en2.mp3", "es.mp3", "fr.mp3", "de.mp3")


def cli(inbox: Path, out: Path, cache: Path) -> list[str]:
    return [sys.executable, "-m", "flows.cli", "run", str(inbox), "--output", str(out),
            "--cache-dir", str(cache), "--no-progress", "--workers", "1"]  # fmt: skip


def test_killed_batch_resumes_without_redoing_finished_files(prefect_server, cache_dir, tmp_path) -> None:
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    for name in CLIPS:
        shutil.copy(SPEECH / name, inbox / name)

    batch = subprocess.Popen(cli(inbox, out, cache_dir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and batch.poll() is None:
        if 1 <= len(read_manifest(out)) < len(CLIPS) - 1:  # the manifest dataset holds the first rows
            break
        time.sleep(0.1)
    assert batch.poll() is None, "the batch finished before it could be killed"
    os.killpg(batch.pid, signal.SIGKILL)
    batch.wait()

    before = read_manifest(out)  # readable: never torn
    assert 1 <= len(before) < len(CLIPS) and (before["status"] == "ok").all()

    resumed = subprocess.run(cli(inbox, out, cache_dir), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = read_manifest(out)
    assert sorted(after["relative_path"]) == sorted(CLIPS) and after["relative_path"].is_unique
    kept = after.set_index("relative_path").loc[before["relative_path"]]
    # Finished files came from the cache: the same transcription run, not a new one.
    pd.testing.assert_series_equal(kept["finished_at"], before.set_index("relative_path")["finished_at"])

    fresh_cache = tmp_path / "fresh-cache"
    fresh_cache.mkdir()
    (fresh_cache / "models").symlink_to(cache_dir / "models")
    clean = subprocess.run(cli(inbox, tmp_path / "clean", fresh_cache), capture_output=True, text=True, timeout=600)
    assert clean.returncode == 0, clean.stderr[-2000:]
    for name in CLIPS:  # the interrupted-then-resumed outputs equal an uninterrupted run's
        for fmt in ("txt", "srt", "json"):
            assert (out / f"{name}.{fmt}").read_text() == (tmp_path / "clean" / f"{name}.{fmt}").read_text()
