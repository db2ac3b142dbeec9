"""A corpus of bad inputs, made here with real ffmpeg, through the real flow in one batch.

Every input ends as exactly one manifest row with its cause in words, and the rest of the batch finishes.
Most bad files never reach the model; the ones that do are cut to a few seconds of two committed clips.
A directory entry named `..` in an IPFS listing is refused in
`tests/batchscribe/test_ipfs.py::test_unsafe_directory_entry_names_are_rejected`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterFlowRunId

from batchscribe.audio import ffmpeg_exe
from batchscribe.manifest import MANIFEST_CSV, read_manifest
from batchscribe.options import BatchRequest
from flows.transcribe_batch import BatchFailed, transcribe_batch

SPEECH = Path(__file__).resolve().parents[1] / "fixtures" / "speech"
ODD_NAMES = ("talk with spaces.mp3", "-dash 'single' \"double\" ünïcödé 说话.mp3", "-i.mp3")


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-y", *args], check=True, capture_output=True)


def cut(src: str, seconds: float) -> list[str]:
    """ffmpeg input args for the first `seconds` of a committed clip."""
    return ["-t", str(seconds), "-i", f"file:{SPEECH / src}"]


@pytest.fixture
def not_found_url() -> Iterator[str]:
    """A URL on a real HTTP server on 127.0.0.1 that answers 404."""
    handler = partial(SimpleHTTPRequestHandler, directory=os.devnull)  # serves nothing
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/talks/gone.mp3"
    finally:
        server.shutdown()
        server.server_close()


def make_corpus(inbox: Path) -> list[str]:
    """Write one file per kind of bad input under `inbox`; return the batch's extra inputs."""
    (inbox / "a").mkdir(parents=True)
    (inbox / "b").mkdir()
    (inbox / "empty.mp3").write_bytes(b"")
    (inbox / "notes.mp3").write_text("These are meeting notes, not audio.\n")
    data = (SPEECH / "en2.mp3").read_bytes()
    (inbox / "truncated.mp3").write_bytes(data[: len(data) // 2 + 7])  # cut mid-frame
    ffmpeg(*cut("en2.mp3", 3), "-c:a", "aac", f"file:{inbox / 'whole.mp4'}")  # moov atom written last
    mp4 = (inbox / "whole.mp4").read_bytes()
    (inbox / "whole.mp4").unlink()
    (inbox / "no_moov.mp4").write_bytes(mp4[: len(mp4) // 2])
    lavfi = ["-f", "lavfi", "-i"]
    ffmpeg(*lavfi, "testsrc2=size=64x48:rate=5:duration=2", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           f"file:{inbox / 'silent_film.mp4'}")  # fmt: skip
    # Two audio tracks, Spanish first and English second, flagged default: ffmpeg decodes the default one.
    for name, codec in (("two_tracks.mka", "pcm_s16le"), ("two_tracks.mp4", "aac")):
        ffmpeg(*cut("es.mp3", 4), *cut("en2.mp3", 4), "-map", "0:a", "-map", "1:a", "-c:a", codec,
               "-disposition:a:0", "0", "-disposition:a:1", "default", f"file:{inbox / name}")  # fmt: skip
    ffmpeg(*lavfi, "anullsrc=r=16000:cl=mono", "-t", "4", f"file:{inbox / 'silence.wav'}")
    ffmpeg(*lavfi, "anoisesrc=r=16000:a=0.3:d=1", f"file:{inbox / 'noise.wav'}")
    ffmpeg(*cut("en2.mp3", 0.3), f"file:{inbox / 'short.wav'}")
    ffmpeg(*cut("en2.mp3", 4), "-ar", "8000", "-ac", "2", f"file:{inbox / '8k_stereo.wav'}")
    ffmpeg(*cut("en2.mp3", 4), "-ar", "48000", "-ac", "6", f"file:{inbox / '48k_6ch.flac'}")
    ffmpeg(*cut("en2.mp3", 4), "-c:a", "copy", f"file:{inbox / 'a' / 'talk.mp3'}")
    ffmpeg(*cut("es.mp3", 4), "-c:a", "copy", f"file:{inbox / 'b' / 'talk.mp3'}")
    for name in ODD_NAMES:  # same bytes as a/talk.mp3: the cache lock makes one of them transcribe, the rest hit
        shutil.copy(inbox / "a" / "talk.mp3", inbox / name)
    (inbox / "loop").symlink_to(".", target_is_directory=True)  # a folder symlink loop: never followed
    (inbox / "loop.mp3").symlink_to("loop.mp3")  # a file symlink loop
    os.mkfifo(inbox / "stream.mp3")  # would block a reader forever (root reads any file, so no chmod 000 case)
    (inbox / "folder.mp3").mkdir()  # a folder named like a media file, given as an input of its own
    return [str(inbox / "folder.mp3")]


def test_every_bad_input_is_one_clear_row_and_the_rest_finish(
    prefect_server, cache_dir, tmp_path, not_found_url
) -> None:
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    extra = make_corpus(inbox)
    inputs = [str(inbox), str(tmp_path / "missing.mp3"), not_found_url, *extra]
    request = BatchRequest(inputs=inputs, output=str(out), cache_dir=str(cache_dir))

    state = transcribe_batch(request, return_state=True)
    failed = state.result(raise_on_failure=False)
    assert isinstance(failed, BatchFailed), failed
    rows = failed.manifest.set_index("relative_path")
    assert rows.index.is_unique
    on_disk = read_manifest(out).set_index("relative_path")
    pd.testing.assert_series_equal(on_disk["status"].sort_index(), rows["status"].sort_index())

    def row(name: str) -> pd.Series:
        (key,) = [k for k in rows.index if k == name or k.endswith(f"/{name}")]  # inbox/..., 127.0.0.1_port/...
        return rows.loc[key]

    def failed_with(name: str, *phrases: str) -> None:
        r = row(name)
        assert r["status"] == "failed", (name, r["error"])
        for phrase in phrases:
            assert phrase in r["error"], (name, r["error"])

    def ok(name: str) -> pd.Series:
        r = row(name)
        assert r["status"] == "ok", (name, r["error"])
        assert (out / r["txt_path"]).is_file() and not Path(r["txt_path"]).is_absolute()  # relative to the manifest
        return r

    def words(r: pd.Series) -> list[str]:
        return (out / r["txt_path"]).read_text().split()

    failed_with("missing.mp3", "file not found", str(tmp_path / "missing.mp3"))
    failed_with("empty.mp3", "file is empty (0 bytes)")
    failed_with("notes.mp3", "not an audio or video file ffmpeg can read")
    failed_with("no_moov.mp4", "incomplete MP4/MOV (moov atom not found)", "truncated")
    failed_with("gone.mp3", "not found", not_found_url)
    failed_with("loop.mp3", "broken or looping symlink", str(inbox / "loop.mp3"))
    failed_with("stream.mp3", "not a regular file", str(inbox / "stream.mp3"))  # a FIFO: fails at once, no blocking
    failed_with("folder.mp3", "no media files found in", "folder.mp3")
    assert row("silent_film.mp4")["status"] == "no_audio"
    assert "no audio stream" in row("silent_film.mp4")["error"]

    truncated = ok("truncated.mp3")
    assert "truncated" in truncated["warning"] and len(words(truncated)) >= 3
    for name in ("two_tracks.mka", "two_tracks.mp4"):  # the default-flagged (English) track, not the first
        assert ok(name)["language"] == "en", name
    assert len(words(ok("silence.wav"))) <= 1  # VAD: no invented words
    assert len(words(ok("noise.wav"))) <= 3
    short = ok("short.wav")  # 0.3 s decodes and transcribes: ok, with at most a word or two
    assert 0.2 < short["duration_s"] < 0.4 and len(words(short)) <= 2
    for name in ("8k_stereo.wav", "48k_6ch.flac"):
        r = ok(name)
        assert abs(r["duration_s"] - 4) < 0.1 and len(words(r)) >= 3, name
    a, b = ok("a/talk.mp3"), ok("b/talk.mp3")
    assert (a["language"], b["language"]) == ("en", "es") and a["txt_path"] != b["txt_path"]
    for name in ODD_NAMES:
        assert words(ok(name)) == words(a), name

    expected = {
        *("missing.mp3", "gone.mp3", "folder.mp3", "empty.mp3", "notes.mp3", "truncated.mp3", "no_moov.mp4"),
        *("silent_film.mp4", "two_tracks.mka", "two_tracks.mp4", "silence.wav", "noise.wav", "short.wav"),
        *("8k_stereo.wav", "48k_6ch.flac", "a/talk.mp3", "b/talk.mp3", "loop.mp3", "stream.mp3", *ODD_NAMES),
    }
    assert len(rows) == len(expected) and all(row(name) is not None for name in expected)
    assert not list((cache_dir / "locks").glob("*.lock"))  # failed tasks released their cache locks too


def test_credentials_in_storage_options_never_reach_the_manifest_logs_or_artifact(
    prefect_server, cache_dir, tmp_path, not_found_url, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-live-7f3e9a51c0ffee"
    (tmp_path / "notes.mp3").write_text("not audio\n")
    options = {"http": {"headers": {"Authorization": f"Bearer {secret}"}}, "s3": {"key": "AKIA", "secret": secret}}
    request = BatchRequest(
        inputs=[not_found_url, str(tmp_path / "notes.mp3")],
        output=str(tmp_path / "out"),
        cache_dir=str(cache_dir),
        storage_options=options,
    )
    prefect_logger = logging.getLogger("prefect")
    prefect_logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.DEBUG), caplog.at_level(logging.DEBUG, logger="prefect"):
            state = transcribe_batch(request, return_state=True)
    finally:
        prefect_logger.removeHandler(caplog.handler)

    failed = state.result(raise_on_failure=False)
    assert isinstance(failed, BatchFailed) and len(failed.manifest) == 2
    assert "not found" in failed.manifest.set_index("relative_path").filter(like="gone", axis=0)["error"].iloc[0]
    assert caplog.records and secret not in caplog.text
    assert secret not in (tmp_path / "out" / MANIFEST_CSV).read_text()
    assert secret not in failed.manifest.to_csv()
    with get_client(sync_client=True) as client:
        flow_run = state.state_details.flow_run_id
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run]))
        )
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run])))
    table = [a for a in artifacts if a.key == "batchscribe-manifest"]
    assert table and all(secret not in json.dumps(a.data) for a in table)
    assert all(secret not in log.message for log in logs)
