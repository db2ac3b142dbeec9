"""The batch flow end to end on a real Prefect server: real ffmpeg, real weights, real speech."""

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from batchscribe.engines.faster import FasterWhisperEngine
from batchscribe.options import BatchRequest
from flows.transcribe_batch import BatchFailed, transcribe_batch
from tasks import audio as audio_module
from tasks.manifest import COLUMNS, read_manifest

SPEECH = Path(__file__).resolve().parents[1] / "fixtures" / "speech"
RUN_SPECIFIC = ["attempts"]  # everything else in a row must come back identical from the cache


@pytest.fixture
def counters(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count real transcriptions and real decodes (the real functions still run)."""
    counts = {"transcribe": 0, "decode": 0}
    real_transcribe, real_decode = FasterWhisperEngine.transcribe_file, audio_module.decode_audio

    def transcribe(self, *args, **kwargs):
        counts["transcribe"] += 1
        return real_transcribe(self, *args, **kwargs)

    def decode(*args, **kwargs):
        counts["decode"] += 1
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(FasterWhisperEngine, "transcribe_file", transcribe)
    monkeypatch.setattr(audio_module, "decode_audio", decode)
    return counts


def run(request: BatchRequest) -> tuple[str, pd.DataFrame]:
    state = transcribe_batch(request, return_state=True)
    result = state.result(raise_on_failure=False)
    return state.type.value, result.manifest if isinstance(result, BatchFailed) else result


def test_batch_with_bad_inputs(prefect_server, bad_media, cache_dir, tmp_path, clips) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "talks").mkdir(parents=True)
    shutil.copy(SPEECH / "en.wav", inbox / "talks" / "en.wav")
    shutil.copy(SPEECH / "es.mp3", inbox / "es.mp3")
    for path in bad_media.values():
        shutil.copy(path, inbox / path.name)
    out = tmp_path / "out"
    request = BatchRequest(
        inputs=[str(inbox), str(tmp_path / "missing.mp3")], output=str(out), cache_dir=str(cache_dir)
    )

    state, batch = run(request)

    assert state == "FAILED"  # some files failed; everything that could finish did
    rows = batch.set_index("relative_path")
    assert len(rows) == len(bad_media) + 3
    assert rows.loc["inbox/talks/en.wav", "status"] == "ok"
    assert rows.loc["inbox/talks/en.wav", "language"] == "en"
    assert rows.loc["inbox/es.mp3", "language"] == "es"
    assert rows.loc["missing.mp3", "error"].startswith("file not found")
    assert "empty (0 bytes)" in rows.loc["inbox/empty.mp3", "error"]
    assert "not an audio or video file" in rows.loc["inbox/notes.mp3", "error"]
    assert rows.loc["inbox/silent_film.mp4", "status"] == "no_audio"
    assert rows.loc["inbox/truncated.mp3", "status"] == "ok"
    assert "truncated" in rows.loc["inbox/truncated.mp3", "warning"]
    assert rows.loc["inbox/silence.wav", "status"] == "ok"
    assert len(Path(rows.loc["inbox/silence.wav", "txt_path"]).read_text().split()) <= 1
    assert rows.loc["inbox/-dash 'quoted' ünïcödé talk.mp3", "status"] == "ok"
    for name in ("zero_bytes", "text_as_mp3"):
        assert rows.loc[f"inbox/{bad_media[name].name}", "status"] == "failed"

    ok = rows[rows["status"] == "ok"]
    for relative_path, row in ok.iterrows():
        for fmt in ("txt", "vtt", "srt", "tsv", "json"):
            path = Path(row[f"{fmt}_path"])
            assert path.is_file() and path.is_relative_to(out), path
            assert path.name == f"{Path(relative_path).name}.{fmt}"
        assert row["realtime_factor"] > 0 and row["duration_s"] > 0 and row["attempts"] >= 1
    on_disk = read_manifest(out)
    assert list(on_disk.columns) == list(COLUMNS)
    assert sorted(on_disk["relative_path"]) == sorted(rows.index)


def test_rerun_transcribes_nothing_and_a_changed_file_only_itself(
    prefect_server, cache_dir, tmp_path, counters
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name in ("en.wav", "en2.mp3", "es.mp3"):
        shutil.copy(SPEECH / name, inbox / name)
    request = BatchRequest(inputs=[str(inbox)], output=str(tmp_path / "out"), cache_dir=str(cache_dir))

    state, first = run(request)
    assert state == "COMPLETED" and (first["status"] == "ok").all()
    assert counters == {"transcribe": 3, "decode": 3}

    state, second = run(request)
    assert state == "COMPLETED"
    assert counters == {"transcribe": 3, "decode": 3}  # no audio decoded, no transcription body ran
    pd.testing.assert_frame_equal(first.drop(columns=RUN_SPECIFIC), second.drop(columns=RUN_SPECIFIC))

    shutil.copy(SPEECH / "fr.mp3", inbox / "es.mp3")  # same name, new content
    state, third = run(request)
    assert counters == {"transcribe": 4, "decode": 4}
    changed = third.set_index("relative_path").loc["es.mp3"]
    assert changed["language"] == "fr" and changed["sha256"] != first.set_index("relative_path").loc["es.mp3", "sha256"]


def test_cli_exit_codes_and_summary(prefect_server, bad_media, cache_dir, tmp_path) -> None:
    cli = [sys.executable, "-m", "batchscribe.cli", "run", "--no-progress", "--cache-dir", str(cache_dir)]
    good = subprocess.run(
        [*cli, str(SPEECH / "en2.mp3"), "--output", str(tmp_path / "a"), "-f", "srt,txt"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert good.returncode == 0, good.stderr
    assert "en2.mp3" in good.stdout and "manifest:" in good.stdout
    assert sorted(p.name for p in (tmp_path / "a").glob("en2*")) == ["en2.mp3.srt", "en2.mp3.txt"]

    bad = subprocess.run(
        [*cli, str(SPEECH / "en2.mp3"), str(bad_media["text_as_mp3"]), "--output", str(tmp_path / "b")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert bad.returncode == 1
    assert "not an audio or video file" in bad.stdout and "1 of 2 files did not transcribe" in bad.stderr

    usage = subprocess.run(
        [*cli, "x.mp3", "--output", str(tmp_path / "c"), "--beam-size", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert usage.returncode == 2 and "beam_size" in usage.stderr
