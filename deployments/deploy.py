"""Every batchscribe deployment, declared once. Run from any folder, against the server in PREFECT_API_URL:

    python deployments/deploy.py                      # all deployments (create the pools first: pools.sh)
    python deployments/deploy.py --only cpu rerun-failed fan-out
    python deployments/deploy.py --gpu-pool-type docker --image registry.example/batchscribe:0.1.0

Process pools run the flows from this checkout (`from_source`: the worker host needs the same checkout
at the same path and the project's venv). Docker and Kubernetes pools run them from the image built by
the repo's Dockerfile, which has the project installed: the run imports `flows.<module>.<flow>`.
"""

from __future__ import annotations

import argparse
import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

from batchscribe.malloc import HUGEPAGE_TUNABLE
from batchscribe.server import OFFLINE_ENV

PROJECT_DIR = Path(__file__).resolve().parents[1]
BATCH_ENTRYPOINT = "flows/transcribe_batch.py:transcribe_batch"
RERUN_ENTRYPOINT = "flows/rerun_failed.py:rerun_failed"
FAN_OUT_ENTRYPOINT = "flows/fan_out.py:transcribe_fan_out"
DEFAULT_IMAGE = "batchscribe:latest"
INBOX = os.environ.get("BATCHSCRIBE_INBOX", "/srv/batchscribe/inbox")
NIGHTLY_OUTPUT = os.environ.get("BATCHSCRIBE_NIGHTLY_OUTPUT", "/srv/batchscribe/transcripts")
# Offline and quiet on every worker, whatever its host sets; malloc on huge pages (batchscribe/malloc.py).
BASE_ENV = {**OFFLINE_ENV, "GLIBC_TUNABLES": HUGEPAGE_TUNABLE}

PoolType = Literal["process", "docker", "kubernetes"]


@dataclass(frozen=True)
class Spec:
    """One deployment: which flow, on which pool, with which defaults."""

    name: str
    entrypoint: str
    pool: Literal["gpu", "cpu"]
    description: str
    parameters: dict[str, Any] = field(default_factory=dict)  # defaults a run can override
    env: dict[str, str] = field(default_factory=dict)
    cron: str | None = None  # UTC
    schedule_active: bool = False
    tags: tuple[str, ...] = ()


SPECS: tuple[Spec, ...] = (
    Spec(
        "gpu",
        BATCH_ENTRYPOINT,
        "gpu",
        "Transcribe a batch on a GPU worker (openai-whisper fp16 on CUDA).",
        tags=("batchscribe", "gpu"),
    ),
    Spec(
        "cpu",
        BATCH_ENTRYPOINT,
        "cpu",
        "Transcribe a batch on a CPU worker (faster-whisper int8).",
        env={"CUDA_VISIBLE_DEVICES": ""},
        tags=("batchscribe", "cpu"),
    ),
    Spec(
        "rerun-failed",
        RERUN_ENTRYPOINT,
        "gpu",
        "Rerun the rows of a manifest that did not end ok, in place.",
        tags=("batchscribe", "gpu"),
    ),
    Spec(
        "nightly-inbox",
        BATCH_ENTRYPOINT,
        "gpu",
        "Every night at 02:00 UTC, transcribe the inbox; the content-hash cache skips files already done.",
        parameters={"request": {"inputs": [INBOX], "output": NIGHTLY_OUTPUT}},
        cron="0 2 * * *",
        schedule_active=False,  # an example: switch it on in the UI or here
        tags=("batchscribe", "gpu", "scheduled"),
    ),
)
# Kept out of SPECS (the transcription deployments): it only triggers and waits, so it takes a cpu worker slot,
# never a GPU one, while its chunks run as `transcribe-batch/gpu` (or the deployment its request names).
FAN_OUT = Spec(
    "fan-out",
    FAN_OUT_ENTRYPOINT,
    "cpu",
    "Split a large batch into chunks and run each as a transcribe-batch deployment run, so the workers of a "
    "pool share it; waits for all and shows the merged manifest.",
    tags=("batchscribe", "fan-out"),
)
ALL_SPECS: tuple[Spec, ...] = (*SPECS, FAN_OUT)


def deploy_spec(
    spec: Spec,
    *,
    work_pool_name: str | None = None,
    pool_type: PoolType = "process",
    image: str = DEFAULT_IMAGE,
) -> UUID:
    """Create or update one deployment on `work_pool_name` (default: the spec's pool) and return its id."""
    from prefect import flow
    from prefect.deployments.runner import EntrypointType, deploy
    from prefect.schedules import Schedule

    schedules = [Schedule(cron=spec.cron, timezone="UTC", active=spec.schedule_active)] if spec.cron else None
    options: dict[str, Any] = dict(
        name=spec.name,
        description=spec.description,
        parameters=spec.parameters,
        job_variables={"env": {**BASE_ENV, **spec.env}},
        schedules=schedules,
        tags=list(spec.tags),
    )
    pool = work_pool_name or spec.pool
    if pool_type == "process":  # the worker runs the flow from this checkout (a set_working_directory pull step)
        loaded = flow.from_source(source=str(PROJECT_DIR), entrypoint=spec.entrypoint)
        return loaded.deploy(work_pool_name=pool, print_next_steps=False, ignore_warnings=True, **options)
    # Container pools: the image has the project installed, so the run imports the flow by module path.
    path, _, name = spec.entrypoint.partition(":")
    imported = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)
    deployment = imported.to_deployment(entrypoint_type=EntrypointType.MODULE_PATH, **options)
    (deployment_id,) = deploy(
        deployment,
        work_pool_name=pool,
        image=image,
        build=False,
        push=False,
        print_next_steps_message=False,
        ignore_warnings=True,
    )
    return deployment_id


def main(argv: list[str] | None = None) -> None:
    """Deploy every spec (or `--only` some) to the pools named in them."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=[s.name for s in ALL_SPECS], help="deploy only these")
    parser.add_argument("--gpu-pool-type", default="process", choices=["process", "docker", "kubernetes"])
    parser.add_argument("--image", default=DEFAULT_IMAGE, help="image for docker/kubernetes gpu pools")
    args = parser.parse_args(argv)
    for spec in ALL_SPECS:
        if args.only and spec.name not in args.only:
            continue
        pool_type = args.gpu_pool_type if spec.pool == "gpu" else "process"
        deployment_id = deploy_spec(spec, pool_type=pool_type, image=args.image)
        print(f"{spec.entrypoint.rsplit(':', 1)[1].replace('_', '-')}/{spec.name} on pool {spec.pool}: {deployment_id}")


if __name__ == "__main__":
    main()
