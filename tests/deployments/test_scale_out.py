"""Two real process workers on one pool share a fan-out batch: every file transcribed once, by one of them."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchscribe.manifest import read_manifest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("batchscribe_deploy", ROOT / "deployments" / "deploy.py")
deploy = sys.modules["batchscribe_deploy"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(deploy)  # deployments/ is a folder of declarations, not an installed package
SPEECH = ROOT / "tests" / "fixtures" / "speech"
POOL = "scale-out"
WORKERS = ("scale-1", "scale-2")
CLIPS = ("de.mp3", "en2.mp3", "es.mp3", "fr.mp3")
RUN_TIMEOUT_S = 480  # two chunk runs side by side on a loaded 2-core machine: start, model load, two clips each


@pytest.fixture
def two_workers(prefect_server: str, tmp_path: Path) -> Iterator[dict[str, Path]]:
    """A process pool with no limit and two `prefect worker start --limit 1` subprocesses on it, both online."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=POOL, type="process"), overwrite=True)
    env = {**os.environ, "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_LOGGING_LEVEL": "INFO"}
    logs = {name: tmp_path / f"{name}.log" for name in WORKERS}
    cmd = [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--limit", "1", "--name"]
    processes = [
        subprocess.Popen(
            [*cmd, name], stdout=log.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
        for name, log in logs.items()
    ]
    try:
        deadline = time.monotonic() + 120
        with get_client(sync_client=True) as client:
            while {w.name for w in client.read_workers_for_work_pool(POOL)} < set(WORKERS):
                assert time.monotonic() < deadline, "\n".join(log.read_text()[-2000:] for log in logs.values())
                time.sleep(0.5)
        yield logs
    finally:  # SIGINT before the session server stops, or a worker can hang
        for process in processes:
            process.send_signal(signal.SIGINT)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_fan_out_registers_on_the_cpu_pool(prefect_server: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name="cpu", type="process"))
        except ObjectAlreadyExists:
            pass
        deployment = client.read_deployment(deploy.deploy_spec(deploy.FAN_OUT))
    assert deployment.work_pool_name == "cpu"
    assert deployment.entrypoint == "flows/fan_out.py:transcribe_fan_out"
    assert "FanOutRequest" in deployment.parameter_openapi_schema["definitions"]


def test_two_workers_split_a_batch_once(two_workers: dict[str, Path], cache_dir: Path, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId

    from batchscribe.options import BatchRequest
    from flows.fan_out import FanOutRequest, transcribe_fan_out

    (cpu,) = (spec for spec in deploy.SPECS if spec.name == "cpu")
    deploy.deploy_spec(dataclasses.replace(cpu, name=POOL), work_pool_name=POOL)
    out = tmp_path / "out"
    batch = BatchRequest(
        inputs=[str(SPEECH / clip) for clip in CLIPS],
        output=str(out),
        cache_dir=str(cache_dir),
        outputs={"formats": ["srt"]},
    )
    request = FanOutRequest(batch=batch, deployment=f"transcribe-batch/{POOL}", chunks=2, timeout_s=RUN_TIMEOUT_S)

    state = transcribe_fan_out(request, return_state=True)

    worker_logs = {name: log.read_text() for name, log in two_workers.items()}
    assert state.is_completed(), f"{state}\n" + "\n".join(text[-3000:] for text in worker_logs.values())
    rows = state.result()
    assert sorted(rows["relative_path"]) == list(CLIPS) and set(rows["status"]) == {"ok"}
    manifest = read_manifest(out)
    assert sorted(manifest["relative_path"]) == list(CLIPS) and set(manifest["status"]) == {"ok"}
    assert sorted(p.name for p in out.glob("*.srt")) == [f"{clip}.srt" for clip in CLIPS]

    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[state.state_details.flow_run_id])
            )
        )
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id for run in children]))
        )
    # Two chunk runs, disjoint halves of the batch, each picked up by a different worker.
    assert len(children) == 2 and all(run.state.is_completed() for run in children)
    chunks = [run.parameters["request"]["inputs"] for run in children]
    assert sorted(Path(source).name for chunk in chunks for source in chunk) == list(CLIPS)
    assert all(len(chunk) == 2 for chunk in chunks)
    # Both workers may claim a run; the server lets one move it to Pending and the other aborts.
    ran_by = {
        run.name: [name for name, text in worker_logs.items() if f"'{run.name}' submitted to infrastructure" in text]
        for run in children
    }
    assert sorted(ran_by.values()) == [[WORKERS[0]], [WORKERS[1]]], ran_by
    assert len({run.infrastructure_pid for run in children}) == 2
    # Each chunk's files went through task runs of its own (files travel in groups, one task run a group).
    groups = [t for t in tasks if t.name.startswith("files-") and t.state.is_completed()]
    assert {t.flow_run_id for t in groups} == {run.id for run in children}
    assert len(groups) <= len(CLIPS)
