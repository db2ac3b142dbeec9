"""The batch flow end to end on a real Prefect server: real ffmpeg, real weights, real speech."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from batchscribe.engines import load_engine
from batchscribe.engines.faster import FasterWhisperEngine
from batchscribe.manifest import COLUMNS, read_manifest
from batchscribe.options import BatchRequest, OutputOptions, TranscribeOptions
from flows.transcribe_batch import BatchFailed, transcribe_batch
from tasks import audio as audio_module
from tests.http_fixtures import RangeHandler, serve_folder

SPEECH = Path(__file__).resolve().parents[1] / "fixtures" / "speech"
SAMPLES = Path(__file__).resolve().parents[2] / "samples"
RUN_SPECIFIC = ["attempts"]  # everything else in a row must come back identical from the cache


@pytest.fixture
def counters(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count real transcriptions and real decodes (the real functions still run)."""
    counts = {"transcribe": 0, "decode": 0}
    real_transcribe, real_decode = FasterWhisperEngine.transcribe_file, audio_module.decode_media

    def transcribe(self, *args, **kwargs):
        counts["transcribe"] += 1
        return real_transcribe(self, *args, **kwargs)

    def decode(*args, **kwargs):
        counts["decode"] += 1
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(FasterWhisperEngine, "transcribe_file", transcribe)
    monkeypatch.setattr(audio_module, "decode_media", decode)
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
    assert len((out / rows.loc["inbox/silence.wav", "txt_path"]).read_text().split()) <= 1
    assert rows.loc["inbox/-dash 'quoted' ünïcödé talk.mp3", "status"] == "ok"
    for name in ("zero_bytes", "text_as_mp3"):
        assert rows.loc[f"inbox/{bad_media[name].name}", "status"] == "failed"

    ok = rows[rows["status"] == "ok"]
    for relative_path, row in ok.iterrows():
        for fmt in ("txt", "vtt", "srt", "tsv", "json"):
            assert row[f"{fmt}_path"] == f"{relative_path}.{fmt}"  # relative to the manifest's folder
            path = out / row[f"{fmt}_path"]
            assert path.is_file(), path
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

    # Performance knobs and the word-timing switch (words are aligned anyway) re-transcribe nothing.
    faster = request.model_copy(
        update={"max_workers": 2, "transcribe": request.transcribe.model_copy(update={"batch_size": 4})}
    )
    state, knobs = run(faster)
    assert state == "COMPLETED" and counters == {"transcribe": 3, "decode": 3}
    pd.testing.assert_series_equal(knobs["finished_at"], first["finished_at"])  # the same transcription runs
    worded = request.model_copy(update={"transcribe": request.transcribe.model_copy(update={"word_timestamps": True})})
    state, _ = run(worded)
    assert state == "COMPLETED" and counters == {"transcribe": 3, "decode": 3}
    assert json.loads((tmp_path / "out" / "en.wav.json").read_text())["segments"][0]["words"]  # asked for: written

    shutil.copy(SPEECH / "fr.mp3", inbox / "es.mp3")  # same name, new content
    state, third = run(request)
    assert counters == {"transcribe": 4, "decode": 4}
    changed = third.set_index("relative_path").loc["es.mp3"]
    assert changed["language"] == "fr" and changed["sha256"] != first.set_index("relative_path").loc["es.mp3", "sha256"]


def _cached_files(cache_dir: Path, folder: str) -> list[Path]:
    return [p for p in (cache_dir / folder).rglob("*") if p.is_file()] if (cache_dir / folder).exists() else []


def test_downloads_and_decoded_audio_are_evicted_once_each_file_has_its_row(
    prefect_server, bad_media, cache_dir, tmp_path, counters
) -> None:
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(SPEECH / "en2.mp3", served / "en2.mp3")
    shutil.copy(bad_media["text_as_mp3"], served / "notes.mp3")
    shutil.copy(bad_media["truncated_mp3"], tmp_path / "truncated.mp3")
    with serve_folder(served) as url:
        inputs = [f"{url}/en2.mp3", f"{url}/notes.mp3", str(tmp_path / "truncated.mp3"), str(SPEECH / "es.mp3")]
        request = BatchRequest(inputs=inputs, output=str(tmp_path / "out"), cache_dir=str(cache_dir))

        state, first = run(request)
        statuses = dict(zip(first["relative_path"].str.rsplit("/", n=1).str[-1], first["status"]))
        assert state == "FAILED"
        assert statuses == {"en2.mp3": "ok", "notes.mp3": "failed", "truncated.mp3": "ok", "es.mp3": "ok"}
        # Finished or failed, nothing of these files is left but the two downloads' hash records.
        assert _cached_files(cache_dir, "downloads") == [] and _cached_files(cache_dir, "audio") == []
        assert len(_cached_files(cache_dir, "download-hashes")) == 2
        assert counters == {"transcribe": 3, "decode": 4}

        # The rerun: the finished remote file is known by its recorded hash (a metadata request, no
        # download); the failed one downloads again and fails the same way; both are evicted again.
        RangeHandler.hits.clear()
        state, second = run(request)
        assert state == "FAILED" and list(second["status"]) == list(first["status"])
        assert counters == {"transcribe": 3, "decode": 5}
        assert {path for path, _ in RangeHandler.hits} == {"/en2.mp3", "/notes.mp3"}
        bodies = [path for path, byte_range in RangeHandler.hits if byte_range]
        assert "/en2.mp3" not in bodies and "/notes.mp3" in bodies, RangeHandler.hits
        assert _cached_files(cache_dir, "downloads") == [] and _cached_files(cache_dir, "audio") == []


def test_two_devices_in_one_worker_share_the_batch(prefect_server, cache_dir, tmp_path, clips) -> None:
    names = ("en.wav", "en2.mp3", "es.mp3", "fr.mp3")
    options = TranscribeOptions(device="cpu", device_index=(0, 1))
    request = BatchRequest(
        inputs=[str(SPEECH / name) for name in names], output=str(tmp_path / "out"), cache_dir=str(cache_dir)
    )
    state, batch = run(request.model_copy(update={"transcribe": options}))

    assert state == "COMPLETED" and sorted(batch["relative_path"].str.rsplit("/", n=1).str[-1]) == sorted(names)
    engine = load_engine(options, cache_dir)  # the worker's engine: a model copy and a scheduler per device
    assert engine.pool.dealt == [2, 2] and all(engine.pool.scheduler(slot).batch_sizes for slot in (0, 1))
    languages = dict(zip(batch["relative_path"].str.rsplit("/", n=1).str[-1], batch["language"]))
    assert languages == {name: clips[name]["language"] for name in names}


def test_cli_exit_codes_and_summary(prefect_server, bad_media, cache_dir, tmp_path) -> None:
    cli = [sys.executable, "-m", "flows.cli", "run", "--no-progress", "--cache-dir", str(cache_dir)]
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


def test_rows_say_what_ran_how_long_it_took_and_where_the_sidecars_are(prefect_server, cache_dir, tmp_path) -> None:
    import duckdb
    import webvtt

    from batchscribe.manifest import MANIFEST_CSV, MANIFEST_PARQUET, absolute_paths

    inbox = tmp_path / "inbox"
    (inbox / "apollo").mkdir(parents=True)
    shutil.copy(SAMPLES / "apollo" / "moon_landing.mp4", inbox / "apollo" / "moon_landing.mp4")
    shutil.copy(SPEECH / "en2.mp3", inbox / "talk.mp3")  # talk.mp3 and talk.wav: one sidecar name
    shutil.copy(SPEECH / "en.wav", inbox / "talk.wav")
    (inbox / "notes.mp3").write_text("meeting notes, not audio\n")
    out = tmp_path / "out"
    outputs = OutputOptions(max_line_width=42, max_line_count=2, layout="sidecar")
    request = BatchRequest(inputs=[str(inbox)], output=str(out), cache_dir=str(cache_dir), outputs=outputs)

    state, batch = run(request)

    assert state == "FAILED"  # notes.mp3
    rows = batch.set_index("relative_path")
    ok = rows[rows["status"] == "ok"]
    assert sorted(ok.index) == ["apollo/moon_landing.mp4", "talk.mp3", "talk.wav"]
    # Options as they ran: the window scheduler decodes windows independently.
    ran = json.loads(ok.loc["talk.mp3", "options"])
    # Scheduled windows are independent (no conditioning); the coverage guard's fallback uses every temperature.
    assert ran["condition_on_previous_text"] is False and len(ran["temperatures"]) == 6 and ran["batch_size"] == 8
    asked = json.loads(rows.loc["notes.mp3", "options"])  # never reached the model: what was asked for
    assert asked["condition_on_previous_text"] is True and len(asked["temperatures"]) == 6
    # Output options, on every row.
    assert (rows["formats"] == "txt,vtt,srt,tsv,json").all() and (rows["layout"] == "sidecar").all()
    assert (rows["max_line_width"] == 42).all() and (rows["max_line_count"] == 2).all()
    # wall_s is the file's whole way through; realtime_factor is derived from it.
    for _, row in ok.iterrows():
        elapsed_s = (row["finished_at"] - row["started_at"]).total_seconds()
        assert row["wall_s"] == pytest.approx(elapsed_s, abs=0.05)
        assert row["wall_s"] >= row["decode_s"] + row["transcribe_s"]
        assert row["realtime_factor"] == pytest.approx(row["duration_s"] / row["wall_s"])
    # NULL for "none"; a failed row has its error and no outputs.
    assert ok["error"].isna().all() and ok.loc["apollo/moon_landing.mp4", "warning"] is pd.NA
    assert "not an audio or video file" in rows.loc["notes.mp3", "error"] and pd.isna(rows.loc["notes.mp3", "srt_path"])

    # Sidecars beside the mirrored path, as players look for them; the full name only where two would collide.
    assert ok.loc["apollo/moon_landing.mp4", "srt_path"] == "apollo/moon_landing.en.srt"
    assert (ok.loc["talk.mp3", "srt_path"], ok.loc["talk.wav", "srt_path"]) == ("talk.mp3.en.srt", "talk.wav.en.srt")
    for key in ("talk.mp3", "talk.wav"):
        assert "kept the full name" in ok.loc[key, "warning"]
    paths = absolute_paths(read_manifest(out), out).set_index("relative_path")
    for fmt in ("txt", "vtt", "srt", "tsv", "json"):
        assert all(Path(p).is_file() and Path(p).is_relative_to(out) for p in paths.loc[list(ok.index), f"{fmt}_path"])
    # The apollo clip's last cue ends with the clip, not after it (read by a WebVTT parser).
    cues = webvtt.read(paths.loc["apollo/moon_landing.mp4", "vtt_path"])
    last_end_s = sum(float(x) * 60**i for i, x in enumerate(reversed(cues[-1].end.split(":"))))
    assert 0 < last_end_s <= ok.loc["apollo/moon_landing.mp4", "duration_s"] + 0.0005

    # Both manifest files read back alike: pandas through read_manifest, and duckdb.
    pd.testing.assert_frame_equal(read_manifest(out / MANIFEST_CSV), read_manifest(out / MANIFEST_PARQUET))
    query = "SELECT relative_path, error IS NULL, warning IS NULL, wall_s FROM {} ORDER BY relative_path"
    from_parquet = duckdb.sql(query.format(f"read_parquet('{out / MANIFEST_PARQUET}')")).fetchall()
    assert from_parquet == duckdb.sql(query.format(f"read_csv('{out / MANIFEST_CSV}', header=true)")).fetchall()
    assert [r[1] for r in from_parquet] == [True, False, True, True]  # apollo, notes.mp3 (failed), talk.mp3, talk.wav
