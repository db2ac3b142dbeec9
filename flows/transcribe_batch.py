"""The batch flow: files in groups per task run, each file staged -> decoded -> transcribed -> exported -> one row."""

from __future__ import annotations

import math
import queue
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import copy_context
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.utilities.annotations import quote

from batchscribe import progress, storage
from batchscribe.errors import STATUS_OK
from batchscribe.inputs import read_input_list, resolve_inputs
from batchscribe.locks import locked_cache_policy
from batchscribe.malloc import limit_malloc_arenas
from batchscribe.manifest import KEY, ManifestWriter, artifact_records, normalize, read_manifest
from batchscribe.media import InputItem
from batchscribe.options import BatchRequest, TranscribeOptions
from batchscribe.result_cache import ResultCache
from batchscribe.writers import sidecar_collisions
from flows.file_pipeline import FileGroup, FilePipeline, transcribe_files
from tasks.diarize import diarize_audio, diarize_cache_key

limit_malloc_arenas()  # at import, before the worker and event-loop threads allocate: see batchscribe/malloc.py

ARTIFACT_ROWS = 500  # the table artifact is a view; the parquet manifest holds every row
# Files per task run: about this many groups per worker balance the workers' loads at the end of a batch,
# and no group holds more than MAX_GROUP_FILES, so the UI still shows progress task run by task run.
GROUPS_PER_WORKER = 4
MAX_GROUP_FILES = 64


class BatchFailed(Exception):
    """Some files did not end ok. Raised after the manifest is written, so the flow run ends Failed."""

    def __init__(self, manifest: pd.DataFrame) -> None:
        bad = manifest[manifest["status"] != STATUS_OK]
        super().__init__(f"{len(bad)} of {len(manifest)} files did not transcribe: " + ", ".join(bad[KEY][:10]))
        self.manifest = manifest


@flow(name="transcribe-batch")
def transcribe_batch(request: BatchRequest) -> pd.DataFrame:
    """Transcribe every input of `request` and return this batch's manifest rows.

    `request.max_workers` files are in flight at once, each carried through stage -> extract ->
    transcribe -> export by one worker thread; their speech windows share the model's batches (the
    window scheduler, `batchscribe.scheduler`). Files go through task runs in groups (`file_groups`): a
    task run costs more than a short file's own work, and a file whose transcript is cached costs a hash
    and a read. Each file ends as one manifest row (`<output>/manifest.parquet` and `.csv`, merged in
    atomically as files finish: see ManifestWriter), with its own error and retries.
    The run ends Failed, after everything that could finish has, when any file did not end ok.
    """
    logger = get_run_logger()
    options = request.transcribe.resolved()
    output_root = storage.output_root(request.output)
    items = resolve_inputs(all_inputs(request), request.relative_paths, request.storage_options)
    logger.info(
        "Transcribing %d files with %s %s (%s) into %s",
        len(items),
        options.engine,
        options.model,
        options.compute_type,
        output_root,
    )

    progress.batch_started(len(items))
    pipeline = file_pipeline(request, options, output_root, [item.relative_path for item in items])
    progress_id = create_progress_artifact(progress=0.0, key="batchscribe-progress", description=f"{len(items)} files")
    rows: list[dict[str, Any]] = []
    finished: queue.Queue[dict[str, Any]] = queue.Queue()
    pool = ThreadPoolExecutor(request.max_workers, thread_name_prefix="batchscribe-files")
    try:
        with ManifestWriter(output_root, request.storage_options) as manifest:
            # Each worker runs in a copy of this context, so its task runs belong to this flow run.
            groups = file_groups(items, request.max_workers)
            futures = [pool.submit(copy_context().run, run_group, group, pipeline, finished.put) for group in groups]
            while len(rows) < len(items):
                row = _next_row(finished, futures)
                if row is None:  # pragma: no cover - every group reports each of its files
                    break
                rows.append(row)
                progress.file_finished(row)
                if manifest.add(row) or len(rows) == len(items):  # the UI's progress moves with the manifest
                    update_progress_artifact(artifact_id=progress_id, progress=100.0 * len(rows) / len(items))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)

    batch = normalize(rows).sort_values(KEY, kind="stable").reset_index(drop=True)
    create_table_artifact(
        key="batchscribe-manifest",
        table=artifact_records(batch, ARTIFACT_ROWS),
        description=f"{(batch['status'] == STATUS_OK).sum()} of {len(batch)} files ok; manifest in {output_root}",
    )
    if (batch["status"] != STATUS_OK).any():
        raise BatchFailed(batch)
    return batch


def file_pipeline(request: BatchRequest, options: TranscribeOptions, output_root: str, keys: list[str]) -> FilePipeline:
    """The batch's per-file pipeline, its transcripts cached under `<cache-dir>/results`.

    One worker at a time computes a cache key, across processes sharing the cache (the others wait, then hit).
    """
    cache_dir = request.cache_path()
    diarize = None
    if request.diarize.enabled:
        policy = locked_cache_policy(diarize_cache_key, cache_dir)
        diarize = diarize_audio.with_options(result_storage=cache_dir / "results", cache_policy=policy)
    return FilePipeline(
        request,
        options,
        output_root,
        str(cache_dir),
        ResultCache(cache_dir),
        full_names=sidecar_full_names(request, keys, output_root),
        diarize=diarize,
    )


def file_groups(items: list[InputItem], workers: int) -> list[FileGroup]:
    """`items` in groups of consecutive files, one task run each (see GROUPS_PER_WORKER)."""
    size = max(1, min(MAX_GROUP_FILES, math.ceil(len(items) / (workers * GROUPS_PER_WORKER))))
    return [FileGroup(tuple(items[i : i + size])) for i in range(0, len(items), size)]


def run_group(group: FileGroup, pipeline: FilePipeline, emit: Any) -> None:
    """One group's task run; every file of it reaches `emit` as a row, also when the task run itself fails."""
    reported: set[str] = set()

    def on_row(row: dict[str, Any]) -> None:
        reported.add(row[KEY])
        emit(row)

    error: BaseException | None = None
    try:
        state = transcribe_files(group, quote(pipeline), quote(on_row), return_state=True)
        if not state.is_completed():
            failure = state.result(raise_on_failure=False)
            error = failure if isinstance(failure, BaseException) else RuntimeError(repr(failure))
    except Exception as crash:  # noqa: BLE001 - a lost API connection: the files left still get their rows
        error = crash
    for item in group.items:
        if item.relative_path not in reported:
            emit(pipeline.unfinished_row(item, error))


def _next_row(finished: queue.Queue, futures: list[Future]) -> dict[str, Any] | None:
    while True:
        try:
            return finished.get(timeout=1.0)
        except queue.Empty:
            if all(f.done() for f in futures) and finished.empty():
                return None


def sidecar_full_names(request: BatchRequest, keys: list[str], output_root: str) -> frozenset[str]:
    """With the sidecar layout, the inputs whose names would collide (with the batch or the manifest's rows)."""
    if request.outputs.layout != "sidecar":
        return frozenset()
    earlier = read_manifest(output_root, request.storage_options)[KEY]
    return frozenset(sidecar_collisions([*keys, *earlier]))


def all_inputs(request: BatchRequest) -> list[str]:
    """The request's inputs followed by those its input lists name."""
    listed = [entry for location in request.input_lists for entry in read_input_list(location, request.storage_options)]
    return [*request.inputs, *listed]
