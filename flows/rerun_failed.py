"""Rerun the files of a manifest that did not end ok, plus new inputs, and merge them back into it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from prefect import flow, get_run_logger
from pydantic import BaseModel, ConfigDict, Field

from batchscribe.inputs import resolve_inputs
from batchscribe.manifest import KEY, MANIFEST_PARQUET, read_manifest
from batchscribe.options import ALL_FORMATS, BatchRequest, DiarizeOptions, OutputOptions, TranscribeOptions
from batchscribe.urls import is_url
from flows.transcribe_batch import BatchFailed, transcribe_batch

RowStatus = Literal["failed", "cancelled", "no_audio", "ok"]


class RerunRequest(BaseModel):
    """Which manifest, which of its rows to redo, and the options to redo them with."""

    model_config = ConfigDict(extra="forbid")

    manifest: str = Field(
        ...,
        description="The manifest to repair: its output folder or its manifest.parquet, as a local path or an "
        "fsspec URL (s3://bucket/out, file:///data/out).",
    )
    statuses: list[RowStatus] = Field(
        default_factory=lambda: ["failed", "cancelled"],
        min_length=1,
        description="Rerun the rows whose status is one of these.",
    )
    extra_inputs: list[str] = Field(
        default_factory=list, description="Files, folders or globs to add; only those with no row yet are run."
    )
    transcribe: dict[str, Any] = Field(
        default_factory=dict,
        description="Transcription options (TranscribeOptions fields) to change; every other one is what each "
        "row recorded.",
    )
    outputs: dict[str, Any] = Field(
        default_factory=dict, description="Output options (OutputOptions fields) to change; the rest as recorded."
    )
    diarize: DiarizeOptions | None = Field(None, description="Speaker labels for every rerun file; None: as recorded.")
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
    groups = rerun_batches(manifest, reruns, request)
    logger.info("Rerunning %d of %d files in %s, in %d batches", len(reruns), len(manifest), output_root, len(groups))
    failed = None
    for batch in groups:
        try:
            transcribe_batch(batch)  # raises BatchFailed (after merging its rows) when a file still fails
        except BatchFailed as error:
            failed = error
    if failed is not None:
        rows = read_manifest(output_root, request.storage_options)
        raise BatchFailed(rows[rows[KEY].isin(set(reruns.values()))].reset_index(drop=True))
    return read_manifest(output_root, request.storage_options)


def rerun_batches(manifest: pd.DataFrame, reruns: dict[str, str], request: RerunRequest) -> list[BatchRequest]:
    """One batch per set of options: each file runs with what its own row recorded (transcription, outputs,
    diarization), changed only where the request says; a new input takes the defaults."""
    rows = manifest.set_index(KEY)
    groups: dict[str, tuple[TranscribeOptions, OutputOptions, DiarizeOptions, dict[str, str]]] = {}
    for source, key in reruns.items():
        row = rows.loc[key] if key in rows.index else None
        transcribe = TranscribeOptions(**{**recorded_transcribe_options(row), **request.transcribe})
        outputs = OutputOptions(**{**recorded_output_options(row), **request.outputs})
        diarize = request.diarize or recorded_diarize_options(row)
        group = "|".join(m.model_dump_json() for m in (transcribe, outputs, diarize))
        groups.setdefault(group, (transcribe, outputs, diarize, {}))[3][source] = key
    return [
        BatchRequest(
            inputs=list(keys),
            relative_paths=keys,
            output=request.output_root(),
            transcribe=transcribe,
            outputs=outputs,
            diarize=diarize,
            cache_dir=request.cache_dir,
            max_workers=request.max_workers,
            storage_options=request.storage_options,
        )
        for transcribe, outputs, diarize, keys in groups.values()
    ]


def recorded_transcribe_options(row: pd.Series | None) -> dict[str, Any]:
    """The transcription options a row recorded (its `options` JSON), as TranscribeOptions fields."""
    if row is None or not isinstance(row["options"], str):
        return {}
    recorded = json.loads(row["options"])
    # The devices are the host's: a rerun uses its own (every visible GPU) unless told.
    return {k: v for k, v in recorded.items() if k in TranscribeOptions.model_fields and k != "device_index"}


def recorded_output_options(row: pd.Series | None) -> dict[str, Any]:
    """The output options a row recorded: formats, line width and count, layout, subtitle style."""
    if row is None:
        return {}
    recorded: dict[str, Any] = {}
    if isinstance(row["formats"], str):
        recorded["formats"] = output_formats(row["formats"])
    for name in ("max_line_width", "max_line_count"):
        if not pd.isna(row[name]):
            recorded[name] = int(row[name])
    for name in ("layout", "subtitle_style"):
        if isinstance(row.get(name), str):
            recorded[name] = row[name]
    return recorded


def recorded_diarize_options(row: pd.Series | None) -> DiarizeOptions:
    """The diarization a row recorded; a row written before the `diarize` column: on when it has an RTTM file."""
    if row is None:
        return DiarizeOptions()
    if isinstance(row["diarize"], str):
        return DiarizeOptions.model_validate_json(row["diarize"])
    return DiarizeOptions(enabled=isinstance(row["rttm_path"], str))


def output_formats(text: str) -> tuple[str, ...]:
    """`srt,txt` or `all` as a tuple of format names."""
    return ALL_FORMATS if text == "all" else tuple(f.strip() for f in text.split(",") if f.strip())
