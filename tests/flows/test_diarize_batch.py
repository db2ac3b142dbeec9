"""`--diarize` end to end: real voices, real ffmpeg, senko and Whisper, on the session's Prefect server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import webvtt

from batchscribe import diarization
from batchscribe.audio import ffmpeg_exe
from batchscribe.manifest import absolute_paths, read_manifest
from batchscribe.options import BatchRequest, DiarizeOptions, OutputOptions
from flows.transcribe_batch import transcribe_batch
from tests import voices

pytestmark = pytest.mark.skipif(
    bool(voices.missing_voices()),
    reason=f"Debian voice packages not installed: {' '.join(voices.missing_voices())} (make test installs them)",
)


@pytest.fixture(scope="module")
def meeting(tmp_path_factory) -> tuple[Path, list[voices.Turn]]:
    """About a minute of three real voices taking turns, as an mp3 in a folder of its own."""
    samples, reference = voices.conversation(("armelle", "paola", "july"), turns=10, seed=3, first_prompt=60)
    folder = tmp_path_factory.mktemp("inbox")
    wav = voices.write_wav(samples, folder.parent / "meeting.wav")
    mp3 = folder / "meeting.mp3"
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(wav), "-b:a", "64k", str(mp3)], check=True)
    return folder, reference


def test_cli_diarize_writes_labelled_outputs(prefect_server, cache_dir, tmp_path, meeting) -> None:
    folder, reference = meeting
    out = tmp_path / "out"
    cli = [sys.executable, "-m", "flows.cli", "run", "--no-progress", "--cache-dir", str(cache_dir)]
    done = subprocess.run(
        [*cli, str(folder), "-o", str(out), "--diarize", "--word-timestamps"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr

    row = absolute_paths(read_manifest(out), out).set_index("relative_path").loc["meeting.mp3"]
    assert row["status"] == "ok" and row["speakers"] == 3 and row["diarize_s"] > 0
    rttm = [line.split() for line in Path(row["rttm_path"]).read_text().splitlines()]
    hypothesis = [(float(r[3]), float(r[3]) + float(r[4]), r[7]) for r in rttm]
    assert voices.der(reference, hypothesis) <= 0.08
    assert {r[7] for r in rttm} == {"SPEAKER_00", "SPEAKER_01", "SPEAKER_02"} and rttm[0][7] == "SPEAKER_00"

    voices_in_vtt = {c.voice for c in webvtt.read(row["vtt_path"]).captions}
    assert voices_in_vtt <= {"SPEAKER_00", "SPEAKER_01", "SPEAKER_02"} and len(voices_in_vtt) >= 2
    assert all(line.startswith("[SPEAKER_0") for line in Path(row["txt_path"]).read_text().splitlines())
    segments = json.loads(Path(row["json_path"]).read_text())["segments"]
    assert all(w["speaker"] == s["speaker"] for s in segments for w in s.get("words", []))
    ass = tmp_path / "meeting.ass"
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-i", row["srt_path"], str(ass)], check=True)
    dialogue = [line for line in ass.read_text().splitlines() if line.startswith("Dialogue:")]
    assert dialogue and all(",,[SPEAKER_0" in line for line in dialogue)  # ffmpeg reads every labelled cue


def test_diarization_failure_fails_only_that_stage(prefect_server, cache_dir, tmp_path, meeting, monkeypatch) -> None:
    folder, _ = meeting

    def broken(*args, **kwargs):
        raise RuntimeError("speaker model unavailable")

    monkeypatch.setattr(diarization, "diarize_file", broken)
    request = BatchRequest(
        inputs=[str(folder)],
        output=str(tmp_path / "out"),
        cache_dir=str(cache_dir),
        diarize=DiarizeOptions(enabled=True),
        outputs=OutputOptions(formats=("txt", "rttm")),
    )
    # Transcribed first without speakers; the later --diarize decodes the audio again for its speakers only.
    transcribe_batch(request.model_copy(update={"diarize": DiarizeOptions(), "outputs": OutputOptions()}))
    batch = absolute_paths(transcribe_batch(request), tmp_path / "out")
    row = batch.set_index("relative_path").loc["meeting.mp3"]
    assert row["status"] == "ok"
    assert not [p for p in (cache_dir / "audio").rglob("*") if p.is_file()]  # no decoded audio kept after either
    assert "diarization failed" in row["warning"] and "speaker model unavailable" in row["warning"]
    assert pd.isna(row["speakers"]) and pd.isna(row["rttm_path"])
    text = Path(row["txt_path"]).read_text()
    assert text.strip() and "SPEAKER" not in text
