"""Split one large batch over the workers of a pool: one `transcribe-batch` deployment run per chunk."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from pydantic import BaseModel, ConfigDict, Field

from batchscribe import storage
from batchscribe.errors import STATUS_OK
from batchscribe.inputs import resolve_inputs
from batchscribe.manifest import KEY, artifact_records, known_keys, read_manifest
from batchscribe.media import InputItem
from batchscribe.options import BatchRequest
from flows.transcribe_batch import ARTIFACT_ROWS, inputs_and_file_options

POLL_S = 5.0


class FanOutRequest(BaseModel):
    """A batch, the deployment that runs its chunks, and how many chunks to cut it into."""

    model_config = ConfigDict(extra="forbid")

    batch: BatchRequest
    deployment: str = Field(
        "transcribe-batch/gpu", description="The `flow/deployment` each chunk runs as; its pool's workers share them."
    )
    chunks: int = Field(
        2, ge=1, le=1000, description="Deployment runs to split the files into: at least one per worker."
    )
    timeout_s: float | None = Field(None, gt=0, description="Give up waiting for the chunks after this; none: wait.")


class FanOutFailed(Exception):
    """A chunk run did not complete (its files' rows say why). Raised after the summary artifact is written."""


def split(items: list[InputItem], chunks: int) -> list[list[InputItem]]:
    """At most `chunks` non-empty chunks, dealt round-robin in key order so big folders spread over all."""
    ordered = sorted(items, key=lambda item: item.relative_path)
    n = max(1, min(chunks, len(ordered)))
    return [ordered[i::n] for i in range(n)] if ordered else []


def chunk_request(batch: BatchRequest, part: list[InputItem]) -> dict[str, Any]:
    """The batch's options over `part` only, with every manifest key pinned as the whole batch would give it."""
    pinned = batch.model_copy(
        update={
            "inputs": [item.source for item in part],
            "input_lists": [],
            "relative_paths": {item.source: item.relative_path for item in part},
        }
    )
    return pinned.model_dump(mode="json")


@flow(name="transcribe-fan-out")
def transcribe_fan_out(request: FanOutRequest) -> pd.DataFrame:
    """Resolve the batch's inputs, run each chunk as a `request.deployment` run, wait for all; return the rows.

    Every chunk writes into the same output (a local or shared folder, or an object-store URL): each
    appends its own part files to the manifest dataset, so the output ends with one row per file, no lock.
    The run ends Failed when any chunk did not.
    """
    logger = get_run_logger()
    batch = request.batch
    output_root = storage.output_root(batch.output)
    known = known_keys(output_root, batch.storage_options)
    inputs, file_options = inputs_and_file_options(batch)  # chunks drop the input lists: keep their options
    items = resolve_inputs(inputs, batch.relative_paths, batch.storage_options, known)
    batch = batch.model_copy(update={"file_options": file_options})
    parts = split(items, request.chunks)
    logger.info("Splitting %d files into %d runs of %s", len(items), len(parts), request.deployment)

    started = [
        run_deployment(
            request.deployment,
            parameters={"request": chunk_request(batch, part)},
            flow_run_name=f"chunk-{i + 1}-of-{len(parts)}",
            timeout=0,  # trigger all, then wait
        )
        for i, part in enumerate(parts)
    ]
    finished = wait_for_runs([run.id for run in started], request.timeout_s)

    keys = {item.relative_path for item in items}
    manifest = read_manifest(output_root, batch.storage_options)
    rows = manifest[manifest[KEY].isin(keys)].sort_values(KEY, kind="stable").reset_index(drop=True)
    create_table_artifact(
        key="batchscribe-manifest",
        table=artifact_records(rows, ARTIFACT_ROWS),
        description=f"{(rows['status'] == STATUS_OK).sum()} of {len(items)} files ok over {len(parts)} runs; "
        f"manifest in {output_root}",
    )
    bad = [f"{run.name}: {run.state_name}" for run in finished if not (run.state and run.state.is_completed())]
    if bad:
        raise FanOutFailed(f"{len(bad)} of {len(finished)} chunk runs did not complete: " + ", ".join(bad))
    return rows


def wait_for_runs(ids: list[Any], timeout_s: float | None) -> list[FlowRun]:
    """Poll the API until every run is final (or `timeout_s` passes: TimeoutError); return them in order."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            runs = [client.read_flow_run(run_id) for run_id in ids]
            if all(run.state and run.state.is_final() for run in runs):
                return runs
            if deadline is not None and time.monotonic() > deadline:
                pending = [run.name for run in runs if not (run.state and run.state.is_final())]
                raise TimeoutError(f"chunk runs still not finished after {timeout_s} s: {', '.join(pending)}")
            time.sleep(POLL_S)
