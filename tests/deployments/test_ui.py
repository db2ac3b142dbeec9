"""The UI page of a finished batch renders in headless Chromium and the run has its manifest artifact."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from tests.chromium import needs_chromium, render

ROOT = Path(__file__).resolve().parents[2]
SPEECH = ROOT / "tests" / "fixtures" / "speech"

pytestmark = needs_chromium


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
