"""The CLI's argument handling, and `rerun` and `status` run as a user runs them (`run` also in tests/flows/)."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from batchscribe.manifest import read_manifest
from batchscribe.options import BatchRequest, TranscribeOptions
from flows.cli_args import build_parser, parse_size, request_from_args

SPEECH = Path(__file__).resolve().parents[1] / "fixtures" / "speech"
CLI = [sys.executable, "-m", "flows.cli"]


def test_cli_defaults_are_the_options_defaults() -> None:
    request = request_from_args(build_parser().parse_args(["run", "talk.mp3", "-o", "out"]))
    assert request.transcribe == TranscribeOptions()
    assert request.max_workers == BatchRequest.model_fields["max_workers"].default
    assert request.max_input_bytes is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1000", 1000), ("500M", 500 << 20), ("2G", 2 << 30), ("2gb", 2 << 30), ("1.5GiB", 3 << 29), ("64k", 65536)],
)
def test_sizes_parse_in_binary_units(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "-5M", "0", "2X"])
def test_bad_sizes_are_usage_errors(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_size(text)


def test_size_cap_reaches_the_request() -> None:
    args = build_parser().parse_args(["run", "s3://media/", "-o", "out", "--max-input-size", "2G"])
    assert request_from_args(args).max_input_bytes == 2 << 30


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600)


def test_status_and_rerun_of_the_failed_files_with_their_recorded_options(prefect_server, cache_dir, tmp_path) -> None:
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    (inbox / "talks").mkdir(parents=True)
    shutil.copy(SPEECH / "en2.mp3", inbox / "en2.mp3")
    (inbox / "talks" / "notes.mp3").write_text("meeting notes, not audio\n")
    common = ["--no-progress", "--cache-dir", str(cache_dir)]
    first = _cli(
        "run", str(inbox), "-o", str(out), "-f", "srt,txt", "--max-line-width", "30", "--beam-size", "2", *common
    )
    assert first.returncode == 1, first.stderr[-2000:]
    before = read_manifest(out).set_index("relative_path")

    status = _cli("status", str(out))
    assert status.returncode == 1  # not every file is ok
    assert "files: 2" in status.stdout and "ok: 1" in status.stdout and "failed: 1" in status.stdout
    assert "en: 1" in status.stdout and "audio transcribed: 0.00 h" in status.stdout
    assert "talks/notes.mp3" in status.stdout and "not an audio or video file" in status.stdout

    shutil.copy(SPEECH / "es.mp3", inbox / "talks" / "notes.mp3")  # fixed: real speech under the old name
    rerun = _cli("rerun", str(out), "--max-line-count", "1", *common)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "talks/notes.mp3" in rerun.stdout and "en2.mp3" not in rerun.stdout  # only the failed file ran
    after = read_manifest(out).set_index("relative_path")
    fixed = after.loc["talks/notes.mp3"]
    assert fixed["status"] == "ok" and fixed["language"] == "es"
    assert fixed["srt_path"] == "talks/notes.mp3.srt" and (out / fixed["srt_path"]).is_file()  # same relative path
    # The options the failed row recorded, plus the one override.
    assert fixed["options_hash"] == before.loc["talks/notes.mp3", "options_hash"]
    assert json.loads(fixed["options"])["beam_size"] == 2
    assert (fixed["formats"], fixed["max_line_width"], fixed["max_line_count"]) == ("srt,txt", 30, 1)
    assert after.loc["en2.mp3", "finished_at"] == before.loc["en2.mp3", "finished_at"]  # kept as it was

    status = _cli("status", str(out))
    assert status.returncode == 0 and "ok: 2" in status.stdout and "failed" not in status.stdout
    again = _cli("rerun", str(out), *common)
    assert again.returncode == 0 and "nothing to rerun" in again.stdout
    assert _cli("status", str(tmp_path / "nowhere")).returncode == 2
