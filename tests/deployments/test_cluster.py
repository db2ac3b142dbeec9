"""docs/cluster.md's steps, run as written against a real Prefect server, then each flow run's container
rendered the way the Docker and Kubernetes workers render it (no Docker engine or cluster): the image, the
command, the environment, the volumes and the GPU request the steps rely on are there and agree with them."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path, PurePosixPath
from unittest import mock

import pytest
import tomllib

from batchscribe import urls
from batchscribe.malloc import HUGEPAGE_TUNABLE
from batchscribe.server import OFFLINE_ENV

ROOT = Path(__file__).resolve().parents[2]
STEPS = ROOT / "docs" / "cluster.md"
ENGINE = mock.Mock(**{"version.return_value": {"Version": "27.3.1"}})  # stands in for a Docker engine's client


def commands() -> list[list[str]]:
    """Every shell command in the page's ```sh blocks, as argv (comments dropped, quoted line breaks kept)."""
    found, pending = [], ""
    for block in re.findall(r"```sh\n(.*?)```", STEPS.read_text(), flags=re.DOTALL):
        for line in block.splitlines():
            pending += line + "\n"
            try:
                argv = shlex.split(pending, comments=True)
            except ValueError:  # an open quote: the command goes on on the next line
                continue
            if argv:
                found.append(argv)
            pending = ""
    return found


def pool_steps() -> dict[str, tuple[list[str], list[str]]]:
    """Pool type -> (its pools.sh command, its deploy.py command), in the page's order."""
    steps, pools = {}, None
    for argv in commands():
        if any(a.endswith("deployments/pools.sh") for a in argv):
            pools = argv
        elif "deployments/deploy.py" in argv:
            steps[argv[argv.index("--gpu-pool-type") + 1]] = (pools, argv)
    return steps


def built_image() -> str:
    (build,) = [a for a in commands() if a[:2] == ["docker", "build"]]
    assert build[-1] == "." and (ROOT / "Dockerfile").exists()  # the repository's Dockerfile
    return build[build.index("-t") + 1]


def fan_out_request():
    from flows.fan_out import FanOutRequest

    (run,) = [a for a in commands() if a[:3] == ["prefect", "deployment", "run"]]
    assert run[3] == "transcribe-fan-out/fan-out"
    name, _, value = run[run.index("--param") + 1].partition("=")
    assert name == "request"
    return FanOutRequest.model_validate(json.loads(value))


def dockerfile() -> tuple[dict[str, str], list[str]]:
    """The image's environment and its declared volumes."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(re.findall(r"^ENV (.*)$", text, flags=re.MULTILINE))))
    (volumes,) = re.findall(r"^VOLUME (.*)$", text, flags=re.MULTILINE)
    return env, json.loads(volumes)


def run_step(argv: list[str]) -> None:
    """One command of the page, run as a user would, against the session's server."""
    assignments = [a for a in argv if re.fullmatch(r"[A-Z_]+=.*", a)]
    rest = argv[len(assignments) :]
    env = {**os.environ, **dict(a.split("=", 1) for a in assignments)}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]])  # prefect, as on the page
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    if rest[0] == "python":
        rest = [sys.executable, *rest[1:]]
    done = subprocess.run(rest, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


async def rendered(configuration_class, request: dict):
    """A flow run of transcribe-batch/gpu with `request`, and its job configuration as the pool's worker builds it."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        deployment = await client.read_deployment_by_name("transcribe-batch/gpu")
        pool = await client.read_work_pool("gpu")
        flow_run = await client.create_flow_run_from_deployment(deployment.id, parameters={"request": request})
        config = await configuration_class.resolve_for_flow_run(
            flow_run, client=client, work_pool=pool, worker_name="gpu-0"
        )
        return deployment, pool, flow_run, config


def under(path: str, mounts: list[str]) -> bool:
    return any(PurePosixPath(path).is_relative_to(m) for m in mounts)


@pytest.fixture
def clean_pools(prefect_server):
    """The page recreates the cpu and gpu pools; other tests expect plain process pools, so they go after."""
    yield
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for name in ("gpu", "cpu"):
            client.delete_work_pool(name)


def test_the_page_names_both_container_pools_and_one_image() -> None:
    steps = pool_steps()
    assert set(steps) == {"docker", "kubernetes"}
    for kind, (pools, deploy) in steps.items():
        assert f"GPU_POOL_TYPE={kind}" in pools
        assert deploy[deploy.index("--image") + 1] == built_image()  # what was built is what runs
    assert [a for a in commands() if a[:2] == ["docker", "push"]] == [["docker", "push", built_image()]]


@pytest.mark.parametrize("kind", ["kubernetes", "docker"])
def test_the_steps_render_containers_that_run(kind: str, clean_pools) -> None:
    pools, deploy = pool_steps()[kind]
    run_step(pools)
    run_step(deploy)
    batch = fan_out_request().batch
    request = batch.model_dump(mode="json")  # what one chunk of the fan-out runs
    if kind == "kubernetes":
        from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

        deployment, pool, flow_run, config = asyncio.run(rendered(KubernetesWorkerJobConfiguration, request))
        pod = config.job_manifest["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        image, command = container["image"], container["args"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        mounts = [m["mountPath"] for m in container["volumeMounts"]]
        claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
        assert claims == {"batchscribe-cache", "batchscribe-outputs"}  # the claims the page says to create
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    else:
        from docker.models.containers import _create_container_args
        from prefect_docker.worker import DockerWorker, DockerWorkerJobConfiguration

        deployment, pool, flow_run, config = asyncio.run(rendered(DockerWorkerJobConfiguration, request))
        settings = DockerWorker._build_container_settings(mock.Mock(), ENGINE, config)
        image, command, env = settings["image"], shlex.split(settings["command"]), settings["environment"]
        env = dict(e.split("=", 1) for e in env) if isinstance(env, list) else env
        mounts = [v.split(":")[1] for v in settings["volumes"]]
        assert {v.split(":")[0] for v in settings["volumes"]} == {"batchscribe-cache", "batchscribe-outputs"}
        host_config = _create_container_args({**settings, "version": "1.44"})["host_config"]
        assert host_config["DeviceRequests"][0]["Count"] == 1

    slots = int(next(a.split("=", 1)[1] for a in pools if a.startswith("GPU_SLOTS=")))
    assert (pool.type, pool.concurrency_limit) == (kind, slots)
    assert image == built_image()
    # The command: the worker's `prefect flow-run execute`, inside the image, which installs prefect and imports
    # the flow by module path from a package the image copies and installs.
    assert command[:3] == ["prefect", "flow-run", "execute"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(re.match(r"prefect\b", d) for d in project["dependencies"])
    package = deployment.entrypoint.split(".")[0]
    assert deployment.entrypoint == "flows.transcribe_batch.transcribe_batch"
    assert f"COPY {package} ./{package}" in (ROOT / "Dockerfile").read_text()
    assert env["PREFECT__FLOW_RUN_ID"] == str(flow_run.id)
    assert {k: env[k] for k in OFFLINE_ENV} == OFFLINE_ENV and env["GLIBC_TUNABLES"] == HUGEPAGE_TUNABLE
    # Every path the steps and the image name lies on a mounted volume, and the image declares those volumes.
    image_env, image_volumes = dockerfile()
    assert image_env["GLIBC_TUNABLES"] == HUGEPAGE_TUNABLE
    assert sorted(mounts) == sorted(image_volumes) == ["/cache", "/outputs"]
    assert under(image_env["BATCHSCRIBE_CACHE_DIR"], mounts) and under(batch.cache_dir, mounts)
    for location in (batch.output, *batch.inputs):
        assert urls.is_url(location) or under(location, mounts), location
    assert under("/outputs/corpus", mounts)  # the page's example of an output on the volume
    # The fan-out that cuts the chunks runs from this checkout on the cpu process pool (step 4's worker).
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        fan_out = client.read_deployment_by_name("transcribe-fan-out/fan-out")
        assert client.read_work_pool(fan_out.work_pool_name).type == "process"
    (step,) = fan_out.pull_steps
    assert step["prefect.deployments.steps.set_working_directory"]["directory"] == str(ROOT)
    assert fan_out_request().deployment == "transcribe-batch/gpu"
