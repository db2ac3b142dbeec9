"""Without PREFECT_API_URL the CLI starts one local Prefect server, and later runs reuse it."""

import json
import os
import subprocess
import sys
from pathlib import Path

SPEECH = Path(__file__).resolve().parents[1] / "fixtures" / "speech"


def test_cli_starts_a_local_server_once_and_reuses_it(cache_dir: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_HOME")}
    env.update(BATCHSCRIBE_CACHE_DIR=str(cache_dir), PREFECT_HOME=str(tmp_path / "user-prefect-home"))
    cli = [sys.executable, "-m", "batchscribe.cli"]
    run = [*cli, "run", str(SPEECH / "en2.mp3"), "--output", str(tmp_path / "out"), "--no-progress", "-f", "txt"]
    try:
        first = subprocess.run(run, env=env, capture_output=True, text=True, timeout=600)
        assert first.returncode == 0, first.stderr[-3000:]
        assert "starting the local Prefect server" in first.stderr
        state = json.loads((cache_dir / "prefect" / "server.json").read_text())

        second = subprocess.run(run, env=env, capture_output=True, text=True, timeout=600)
        assert second.returncode == 0, second.stderr[-3000:]
        assert "starting the local Prefect server" not in second.stderr
        assert json.loads((cache_dir / "prefect" / "server.json").read_text()) == state

        status = subprocess.run([*cli, "server", "status"], env=env, capture_output=True, text=True)
        assert state["api_url"] in status.stdout
    finally:
        stop = subprocess.run([*cli, "server", "stop"], env=env, capture_output=True, text=True, timeout=60)
    assert stop.stdout.strip() == "stopped"
    status = subprocess.run([*cli, "server", "status"], env=env, capture_output=True, text=True)
    assert status.stdout.strip() == "not running"
