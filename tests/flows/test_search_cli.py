"""`batchscribe search` over the segments dataset a real run writes, as a user runs it."""

from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

from batchscribe.segment_table import SEGMENTS_DIR

SPEECH = Path(__file__).resolve().parents[1] / "fixtures" / "speech"
CLI = [sys.executable, "-m", "flows.cli"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=900)


def test_a_run_writes_the_segments_dataset_and_search_finds_file_time_and_line(
    prefect_server, cache_dir, tmp_path
) -> None:
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    (inbox / "talks").mkdir(parents=True)
    for name in ("en.wav", "es.mp3"):
        shutil.copy(SPEECH / name, inbox / name)
    shutil.copy(SPEECH / "en2.mp3", inbox / "talks" / "en2.mp3")
    run = [str(inbox), "-o", str(out), "-f", "txt", "--no-progress", "--cache-dir", str(cache_dir)]
    assert _cli("run", *run).returncode == 0

    segments = pd.read_parquet(out / SEGMENTS_DIR)
    assert set(segments["relative_path"]) == {"en.wav", "es.mp3", "talks/en2.mp3"}
    for key, rows in segments.groupby("relative_path"):
        text = (out / f"{key}.txt").read_text(encoding="utf-8")
        assert " ".join(rows.sort_values("segment")["text"]) == " ".join(text.split())  # every segment, in order
    assert segments["confidence"].between(0, 1).all() and (segments["end_s"] >= segments["start_s"]).all()

    found = _cli("search", str(out), "BAKERY")
    assert found.returncode == 0, found.stderr
    (line,) = found.stdout.splitlines()
    assert re.fullmatch(r"talks/en2\.mp3  00:00:0\d\.\d{3}  .*bakery.*", line, flags=re.IGNORECASE)

    assert _cli("run", *run).returncode == 0  # the same files again (from the cache): appended, read once
    as_csv = _cli("search", str(out), "the", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert list(rows[0]) == ["relative_path", "start_s", "end_s", "speaker", "text", "confidence"]
    assert {r["relative_path"] for r in rows} == {"en.wav", "talks/en2.mp3"}
    assert len(rows) == len({(r["relative_path"], r["start_s"]) for r in rows})  # no file's rows twice
    assert all("the" in r["text"].lower() for r in rows)

    nothing = _cli("search", str(out), "zeppelin")
    assert nothing.returncode == 1 and nothing.stdout == ""
