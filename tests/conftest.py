"""Shared test setup: a real Prefect server on 127.0.0.1 for the whole run, real ffmpeg, real weights.

The server is started in `pytest_configure`, before any test module imports Prefect (Prefect reads its
settings once, at import), and waited for only by the tests that run flows.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEECH = ROOT / "tests" / "fixtures" / "speech"
SERVER_STARTUP_S = 180  # ~17 s on an idle 2-core machine; far more while other tests load models

_session_dir = Path(tempfile.mkdtemp(prefix="batchscribe-tests-"))
_server: subprocess.Popen | None = None
_server_log = _session_dir / "prefect-server.log"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pytest_configure(config: pytest.Config) -> None:
    global _server
    port = _free_port()
    os.environ.update(
        PREFECT_HOME=str(_session_dir / "prefect-home"),
        PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        PREFECT_LOGGING_LEVEL="WARNING",
        # Weights are assembled (and converted for openai-whisper) once per run, here.
        BATCHSCRIBE_CACHE_DIR=str(_session_dir / "cache"),
    )
    _server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        stdout=_server_log.open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


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
    """The API URL of the session's Prefect server, once it answers."""
    url = os.environ["PREFECT_API_URL"]
    deadline = time.monotonic() + SERVER_STARTUP_S
    while time.monotonic() < deadline:
        assert _server is not None and _server.poll() is None, _server_log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return url
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"Prefect server did not start in {SERVER_STARTUP_S} s:\n{_server_log.read_text()[-3000:]}")


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
