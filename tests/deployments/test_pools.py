"""The GPU pool templates render, through the workers' own code, into a GPU request (no Docker engine or cluster)."""

import asyncio
import json
from pathlib import Path
from unittest import mock

POOLS = Path(__file__).resolve().parents[2] / "deployments" / "pools"
ENGINE = mock.Mock(**{"version.return_value": {"Version": "27.3.1"}})  # stands in for a Docker engine's client


def render(configuration_class, template: str, values: dict):
    """The worker's job configuration for a run with these job variables, as the worker would build it."""
    base = json.loads((POOLS / template).read_text())
    return asyncio.run(configuration_class.from_template_and_values(base, values))


def test_docker_template_requests_a_gpu() -> None:
    from docker.models.containers import _create_container_args
    from prefect_docker.worker import DockerWorker, DockerWorkerJobConfiguration

    config = render(DockerWorkerJobConfiguration, "docker-gpu.json", {"env": {"CUDA_VISIBLE_DEVICES": "0"}})
    assert config.image == "batchscribe:latest"
    settings = DockerWorker._build_container_settings(mock.Mock(), ENGINE, config)
    # docker-py turns the create() kwargs into the Engine API body: the same as `docker run --gpus 1`.
    host_config = _create_container_args({**settings, "version": "1.44"})["host_config"]
    assert host_config["DeviceRequests"] == [
        {"Driver": "nvidia", "Count": 1, "DeviceIDs": [], "Capabilities": [["gpu"]], "Options": {}}
    ]
    assert host_config["ShmSize"] == 2 * 1024**3

    pinned = {"container_create_kwargs": {"device_requests": [{"device_ids": ["1"], "capabilities": [["gpu"]]}]}}
    settings = DockerWorker._build_container_settings(
        mock.Mock(), ENGINE, render(DockerWorkerJobConfiguration, "docker-gpu.json", pinned)
    )
    request = _create_container_args({**settings, "version": "1.44"})["host_config"]["DeviceRequests"][0]
    assert request["DeviceIDs"] == ["1"]


def test_kubernetes_template_requests_gpus_on_gpu_nodes() -> None:
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    pod = render(KubernetesWorkerJobConfiguration, "kubernetes-gpu.json", {})
    spec = pod.job_manifest["spec"]["template"]["spec"]
    assert spec["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": 1}
    assert spec["containers"][0]["image"] == "batchscribe:latest"
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]

    two = render(KubernetesWorkerJobConfiguration, "kubernetes-gpu.json", {"gpu_count": 2, "memory_limit": "16Gi"})
    limits = two.job_manifest["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {"nvidia.com/gpu": 2, "memory": "16Gi"}


def test_docker_template_mounts_the_shared_cache_and_outputs() -> None:
    from prefect_docker.worker import DockerWorker, DockerWorkerJobConfiguration

    config = render(DockerWorkerJobConfiguration, "docker-gpu.json", {})
    settings = DockerWorker._build_container_settings(mock.Mock(), ENGINE, config)
    assert sorted(settings["volumes"]) == ["batchscribe-cache:/cache", "batchscribe-outputs:/outputs"]
    mine = render(DockerWorkerJobConfiguration, "docker-gpu.json", {"volumes": ["/srv/cache:/cache"]})
    assert DockerWorker._build_container_settings(mock.Mock(), ENGINE, mine)["volumes"] == ["/srv/cache:/cache"]


def test_kubernetes_template_mounts_the_shared_cache_and_outputs() -> None:
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    pod = render(KubernetesWorkerJobConfiguration, "kubernetes-gpu.json", {"output_claim": "corpus-out"})
    spec = pod.job_manifest["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"]}
    assert mounts == {"cache": "/cache", "outputs": "/outputs"}
    assert claims == {"cache": "batchscribe-cache", "outputs": "corpus-out"}
