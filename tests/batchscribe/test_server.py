"""Without PREFECT_API_URL the CLI starts one local Prefect server, later runs reuse it, and its UI works."""

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.chromium import CHROMIUM, render

SPEECH = Path(__file__).resolve().parents[1] / "fixtures" / "speech"


def test_cli_starts_a_local_server_once_and_reuses_it(cache_dir: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_HOME")}
    env.update(BATCHSCRIBE_CACHE_DIR=str(cache_dir), PREFECT_HOME=str(tmp_path / "user-prefect-home"))
    cli = [sys.executable, "-m", "flows.cli"]
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
        ui = state["api_url"].removesuffix("/api")
        assert f"UI {ui}," in status.stdout and state["api_url"] in status.stdout
        check_ui_shows_the_run(state["api_url"], ui, tmp_path)
    finally:
        stop = subprocess.run([*cli, "server", "stop"], env=env, capture_output=True, text=True, timeout=60)
    assert stop.stdout.strip() == "stopped"
    status = subprocess.run([*cli, "server", "status"], env=env, capture_output=True, text=True)
    assert status.stdout.strip() == "not running"


def _post(url: str, body: dict) -> list[dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def check_ui_shows_the_run(api_url: str, ui: str, tmp_path: Path) -> None:
    """The UI at the address `server status` prints reaches its own API and shows the CLI's run and manifest."""
    with urllib.request.urlopen(f"{ui}/ui-settings", timeout=10) as response:
        assert json.load(response)["api_url"] == api_url  # what the browser calls: this server, not port 4200
    if not Path(CHROMIUM).exists():
        return  # make test installs chromium; without it the settings check above is what runs
    runs = _post(f"{api_url}/flow_runs/filter", {"sort": "START_TIME_DESC", "limit": 1})
    (artifact,) = _post(
        f"{api_url}/artifacts/filter",
        {"artifacts": {"flow_run_id": {"any_": [runs[0]["id"]]}, "key": {"any_": ["batchscribe-manifest"]}}},
    )
    page = render(f"{ui}/runs/flow-run/{runs[0]['id']}", tmp_path)
    assert runs[0]["name"] in page and "Completed" in page and "Can't connect" not in page
    artifact_page = render(f"{ui}/artifacts/artifact/{artifact['id']}", tmp_path)
    assert "batchscribe-manifest" in artifact_page and "en2.mp3" in artifact_page
