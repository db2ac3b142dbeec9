"""The UI page of a finished batch renders in headless Chromium and the run has its manifest artifact."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPEECH = ROOT / "tests" / "fixtures" / "speech"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [  # offline and quiet; without the virtual time budget the SPA is captured before it renders
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=15000",
    "--window-size=1400,1000",
]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no chromium (make test installs it)")


def render(url: str, tmp_path: Path, screenshot: Path | None = None) -> str:
    """The DOM of `url` after the page's scripts ran (and a screenshot of it, if asked)."""
    extra = [f"--screenshot={screenshot}"] if screenshot else []
    profile = tmp_path / f"chromium-{len(list(tmp_path.glob('chromium-*')))}"
    result = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra, "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    return result.stdout


def test_finished_run_page_renders_with_its_manifest(prefect_server: str, cache_dir: Path, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client

    from batchscribe.options import BatchRequest
    from flows.transcribe_batch import transcribe_batch

    out = tmp_path / "out"
    request = BatchRequest(inputs=[str(SPEECH / "en2.mp3")], output=str(out), cache_dir=str(cache_dir))
    state = transcribe_batch(request, return_state=True)
    assert state.is_completed(), state
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)

    query = {"artifacts": {"flow_run_id": {"any_": [str(run_id)]}, "key": {"any_": ["batchscribe-manifest"]}}}
    post = urllib.request.Request(
        f"{prefect_server}/artifacts/filter",
        data=json.dumps(query).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(post, timeout=30) as response:
        (artifact,) = json.load(response)
    assert artifact["type"] == "table" and "en2.mp3" in json.dumps(artifact["data"])

    ui = prefect_server.removesuffix("/api")
    screenshot = tmp_path / "flow-run.png"
    page = render(f"{ui}/runs/flow-run/{run_id}", tmp_path, screenshot)  # the V1 link the CLI prints
    assert run.name in page and "Completed" in page
    assert screenshot.stat().st_size > 20_000, "a blank page"
    # The run page draws its artifacts on a canvas; the artifact's own page has the key and the table as text.
    artifact_page = render(f"{ui}/artifacts/artifact/{artifact['id']}", tmp_path)
    assert "batchscribe-manifest" in artifact_page and "en2.mp3" in artifact_page
    print(f"screenshot: {screenshot}")
