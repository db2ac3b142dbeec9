"""Shared test setup: a real Prefect server on 127.0.0.1, started when a test first needs it; real ffmpeg, real weights.

Prefect reads its settings once, at import, so `pytest_configure` points PREFECT_API_URL at a free port
before any test module imports Prefect; the server itself starts only when a test asks for the
`prefect_server` fixture, so a run of logic tests (`make test-fast`) starts none.

Tests are marked by what they need, from their fixtures: `server` (a Prefect server) and `model` (the
assembled Whisper weights); `make test-fast` runs the rest.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from batchscribe.server import OFFLINE_ENV, free_port, start_server, wait_healthy

ROOT = Path(__file__).resolve().parents[1]
SPEECH = ROOT / "tests" / "fixtures" / "speech"
SERVER_STARTUP_S = 180  # ~17 s on an idle 2-core machine; far more while other tests load models
NEEDS = {"prefect_server": "server", "session_cache": "model", "cache_dir": "model"}  # fixture -> marker

_session_dir = Path(tempfile.mkdtemp(prefix="batchscribe-tests-"))
_server: subprocess.Popen | None = None
_server_log = _session_dir / "prefect-server.log"


def pytest_configure(config: pytest.Config) -> None:
    os.environ.update(
        PREFECT_HOME=str(_session_dir / "prefect-home"),
        PREFECT_API_URL=f"http://127.0.0.1:{free_port()}/api",
        PREFECT_LOGGING_LEVEL="WARNING",
        # Weights are assembled (and converted for openai-whisper) once per run, here.
        BATCHSCRIBE_CACHE_DIR=str(_session_dir / "cache"),
        **OFFLINE_ENV,
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for marker in {NEEDS[name] for name in getattr(item, "fixturenames", ()) if name in NEEDS}:
            item.add_marker(marker)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _server is not None:
        _server.terminate()
        try:
            _server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            _server.kill()
    shutil.rmtree(_session_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def prefect_server() -> str:
    """The API URL of the session's Prefect server, started on first use, once it answers."""
    global _server
    url = os.environ["PREFECT_API_URL"]
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    _server = start_server(port, dict(os.environ), _server_log.open("wb"))
    if not wait_healthy(url, _server, SERVER_STARTUP_S):
        pytest.fail(f"Prefect server did not start in {SERVER_STARTUP_S} s:\n{_server_log.read_text()[-3000:]}")
    return url


@pytest.fixture(scope="session")
def session_cache() -> Path:
    return Path(os.environ["BATCHSCRIBE_CACHE_DIR"])


@pytest.fixture
def cache_dir(tmp_path: Path, session_cache: Path) -> Path:
    """A fresh result cache for one test that still shares the session's assembled weights."""
    (session_cache / "models").mkdir(parents=True, exist_ok=True)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "models").symlink_to(session_cache / "models", target_is_directory=True)
    return cache


@pytest.fixture(scope="session")
def clips() -> dict[str, dict[str, str]]:
    """Known text and language per committed speech clip."""
    return json.loads((SPEECH / "clips.json").read_text())


def ffmpeg(*args: str) -> None:
    from batchscribe.audio import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-y", *args], check=True, capture_output=True)


@pytest.fixture(scope="session")
def bad_media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One file per kind of bad input, made from the committed clips with real ffmpeg."""
    d = tmp_path_factory.mktemp("bad")
    files = {
        "zero_bytes": d / "empty.mp3",
        "text_as_mp3": d / "notes.mp3",
        "truncated_mp3": d / "truncated.mp3",
        "video_no_audio": d / "silent_film.mp4",
        "silence": d / "silence.wav",
        "odd_name": d / "-dash 'quoted' ünïcödé talk.mp3",
    }
    files["zero_bytes"].write_bytes(b"")
    files["text_as_mp3"].write_text("These are meeting notes, not audio.\n")
    data = (SPEECH / "en2.mp3").read_bytes()
    files["truncated_mp3"].write_bytes(data[: len(data) // 2 + 7])  # cut mid-frame
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x48:rate=5:duration=2",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        f"file:{files['video_no_audio']}",
    )
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "4", f"file:{files['silence']}")
    shutil.copy(SPEECH / "en2.mp3", files["odd_name"])
    return files
