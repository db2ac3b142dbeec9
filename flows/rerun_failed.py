"""Rerun the files of a manifest that did not end ok, plus new inputs, and merge them back into it."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pandas as pd
from prefect import flow, get_run_logger
from pydantic import BaseModel, ConfigDict, Field

from batchscribe.inputs import resolve_inputs
from batchscribe.manifest import KEY, MANIFEST_PARQUET, read_manifest
from batchscribe.options import BatchRequest, OutputOptions, TranscribeOptions
from batchscribe.urls import is_url
from flows.transcribe_batch import transcribe_batch

RowStatus = Literal["failed", "no_audio", "ok"]


class RerunRequest(BaseModel):
    """Which manifest, which of its rows to redo, and the options to redo them with."""

    model_config = ConfigDict(extra="forbid")

    manifest: str = Field(
        ...,
        description="The manifest to repair: its output folder or its manifest.parquet, as a local path or an "
        "fsspec URL (s3://bucket/out, file:///data/out).",
    )
    statuses: list[RowStatus] = Field(
        default_factory=lambda: ["failed"], min_length=1, description="Rerun the rows whose status is one of these."
    )
    extra_inputs: list[str] = Field(
        default_factory=list, description="Files, folders or globs to add; only those with no row yet are run."
    )
    transcribe: TranscribeOptions = Field(default_factory=TranscribeOptions)
    outputs: OutputOptions = Field(default_factory=OutputOptions)
    cache_dir: str | None = Field(None, description="Cached task results and weights; default ~/.cache/batchscribe.")
    max_workers: int = Field(4, ge=1, le=64, description="Files fetched and decoded concurrently.")
    storage_options: dict[str, dict] = Field(
        default_factory=dict,
        description="fsspec options per URL protocol, as in the batch request; prefer environment credentials.",
        repr=False,
    )

    def output_root(self) -> str:
        """The folder holding the manifest (where the batch wrote its outputs): an absolute path or a URL."""
        location = self.manifest.removeprefix("file://")
        if is_url(location):
            location = location.rstrip("/")
            return location.rsplit("/", 1)[0] if location.endswith((f"/{MANIFEST_PARQUET}", ".csv")) else location
        path = Path(location).expanduser().absolute()
        return str(path.parent if path.name == MANIFEST_PARQUET or path.suffix == ".csv" else path)


def select_reruns(manifest: pd.DataFrame, request: RerunRequest) -> dict[str, str]:
    """Source -> relative path of every file to run again: rows with a selected status, then new extra inputs."""
    chosen = manifest[manifest["status"].isin(request.statuses)]
    reruns = dict(zip(chosen["source"], chosen[KEY]))
    known_sources, known_keys = set(manifest["source"]), set(manifest[KEY])
    if request.extra_inputs:
        for item in resolve_inputs(request.extra_inputs, storage_options=request.storage_options):
            if item.source not in known_sources and item.relative_path not in known_keys:
                reruns.setdefault(item.source, item.relative_path)
    return reruns


@flow(name="rerun-failed")
def rerun_failed(request: RerunRequest) -> pd.DataFrame:
    """Redo the rows of `request.manifest` that did not end ok (and extra inputs with no row) in place.

    The files run through `transcribe-batch` as a subflow with their manifest keys pinned, so outputs
    land where they were meant to and every other row is kept. Returns the whole merged manifest; the
    run ends Failed, like the batch, when a rerun file still fails.
    """
    logger = get_run_logger()
    output_root = request.output_root()
    manifest = read_manifest(output_root, request.storage_options)
    reruns = select_reruns(manifest, request)
    if not reruns:
        logger.info(
            "Nothing to rerun in %s (%d rows, none with status %s)", output_root, len(manifest), request.statuses
        )
        return manifest
    logger.info("Rerunning %d of %d files in %s", len(reruns), len(manifest), output_root)
    batch = BatchRequest(
        inputs=list(reruns),
        relative_paths=reruns,
        output=output_root,
        transcribe=request.transcribe,
        outputs=request.outputs,
        cache_dir=request.cache_dir,
        max_workers=request.max_workers,
        storage_options=request.storage_options,
    )
    transcribe_batch(batch)  # raises BatchFailed (after merging its rows) when a file still fails
    return read_manifest(output_root, request.storage_options)
