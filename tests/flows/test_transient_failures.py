"""Transient failures are retried with backoff and counted in the manifest; permanent ones fail at once.

Real HTTP on 127.0.0.1 (tests/http_fixtures.py), real ffmpeg, real Whisper weights, real Prefect server.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from batchscribe.audio import ffmpeg_exe
from batchscribe.options import BatchRequest
from flows.transcribe_batch import BatchFailed, transcribe_batch
from tests.http_fixtures import RangeHandler, serve_folder

SPEECH = Path(__file__).resolve().parents[1] / "fixtures" / "speech"


@pytest.fixture
def www(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    root.mkdir()
    clip = ["-t", "4", "-i", f"file:{SPEECH / 'en2.mp3'}", "-c:a", "copy"]
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", *clip, f"file:{root / 'talk.mp3'}"], check=True)
    (root / "notes.mp3").write_text("These are meeting notes, not audio.\n")
    (root / "big.mp3").write_bytes(b"\0" * 300_000)
    return root


def test_flaky_fetch_is_retried_and_counted_permanent_errors_are_not(
    prefect_server, cache_dir, tmp_path, www, clips
) -> None:
    with serve_folder(www) as url:
        # flaky/ answers 503 four times: two tries (fsspec asks by HEAD, then by GET) fail, the third works.
        RangeHandler.flaky_left = 4
        request = BatchRequest(
            inputs=[f"{url}/flaky/talk.mp3", f"{url}/notes.mp3", f"{url}/forbidden/talk.mp3", f"{url}/big.mp3"],
            output=str(tmp_path / "out"),
            cache_dir=str(cache_dir),
            max_input_bytes=200_000,
        )
        failed = transcribe_batch(request, return_state=True).result(raise_on_failure=False)
        hits = list(RangeHandler.hits)

    assert isinstance(failed, BatchFailed), failed
    rows = failed.manifest.set_index(failed.manifest["relative_path"].str.rsplit("/", n=2).str[-2:].str.join("/"))
    flaky = rows.loc["flaky/talk.mp3"]
    assert flaky["status"] == "ok", flaky["error"]
    assert flaky["attempts"] == 3  # failed, failed, worked: two retries, recorded
    assert "sister" in (tmp_path / "out" / flaky["txt_path"]).read_text().lower()  # relative to the manifest
    assert sum(path == "/flaky/talk.mp3" and not rng for path, rng in hits) >= 3  # each try asked again

    notes = rows.loc[[k for k in rows.index if k.endswith("notes.mp3")][0]]
    assert notes["status"] == "failed" and "not an audio or video file" in notes["error"]
    assert notes["attempts"] == 1  # corrupt media is permanent: never retried
    forbidden = rows.loc["forbidden/talk.mp3"]
    assert forbidden["status"] == "failed" and "HTTP 403" in forbidden["error"] and forbidden["attempts"] == 1
    big = rows.loc[[k for k in rows.index if k.endswith("big.mp3")][0]]
    assert big["status"] == "failed" and "300,000 bytes, larger than the size cap" in big["error"]
    assert big["attempts"] == 1
    assert not any(path == "/big.mp3" and rng for path, rng in hits)  # refused before any byte was fetched
