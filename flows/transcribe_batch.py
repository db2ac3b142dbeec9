"""The batch flow: files in groups per task run, each file staged -> decoded -> transcribed -> exported -> one row."""

from __future__ import annotations

import math
import queue
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import copy_context
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.utilities.annotations import quote

from batchscribe import cancel, progress, storage, urls
from batchscribe.errors import STATUS_OK, FileCancelledError, row_error
from batchscribe.inputs import read_input_rows, resolve_inputs
from batchscribe.locks import locked_cache_policy
from batchscribe.malloc import limit_malloc_arenas
from batchscribe.manifest import KEY, ManifestWriter, artifact_records, known_keys, read_manifest
from batchscribe.media import InputItem
from batchscribe.options import BatchRequest, TranscribeOptions
from batchscribe.result_cache import ResultCache
from batchscribe.run_state import RunStateWriter
from batchscribe.segment_table import SegmentsWriter
from batchscribe.writers import sidecar_collisions
from flows.file_pipeline import FileGroup, FilePipeline, source_key, transcribe_files
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
    known = known_keys(output_root, request.storage_options)  # a source already in the manifest keeps its key
    inputs, file_options = inputs_and_file_options(request)
    items = resolve_inputs(inputs, request.relative_paths, request.storage_options, known)
    logger.info(
        "Transcribing %d files with %s %s (%s) into %s",
        len(items),
        options.engine,
        options.model,
        options.compute_type,
        output_root,
    )

    progress.batch_started(len(items))
    pipeline = file_pipeline(request, options, output_root, [item.relative_path for item in items], file_options)
    progress_id = create_progress_artifact(progress=0.0, key="batchscribe-progress", description=f"{len(items)} files")
    done = 0  # files reported; their rows live in the manifest (the writer keeps their keys), not here
    run_state = RunStateWriter(output_root, len(items), request.storage_options)  # `batchscribe status` reads it
    finished: queue.Queue[dict[str, Any]] = queue.Queue()
    in_flight: dict[str, InputItem] = {}  # files a group has started and not yet reported, by key
    pool = ThreadPoolExecutor(request.max_workers, thread_name_prefix="batchscribe-files")
    try:
        with ManifestWriter(output_root, request.storage_options) as manifest, pipeline.segments:
            # Each worker runs in a copy of this context, so its task runs belong to this flow run.
            groups = file_groups(items, request.max_workers)
            futures = [
                pool.submit(copy_context().run, run_group, group, pipeline, finished.put, in_flight) for group in groups
            ]
            while done < len(items):
                row = _next_row(finished, futures, in_flight)
                if row is None:  # every group reported each of its files, or the batch was cancelled
                    break
                done += 1
                progress.file_finished(row)
                flushed = manifest.add(row) or done == len(items)
                audio_s = row.get("duration_s") if row.get("status") == STATUS_OK else None
                run_state.file_finished(audio_s, write=flushed)
                if flushed:  # the UI's progress moves with the manifest
                    update_progress_artifact(artifact_id=progress_id, progress=100.0 * done / len(items))
    finally:
        pool.shutdown(wait=not cancel.requested(), cancel_futures=True)
        run_state.finish()

    batch = manifest.written()  # sorted by key
    create_table_artifact(
        key="batchscribe-manifest",
        table=artifact_records(batch, ARTIFACT_ROWS),
        description=f"{(batch['status'] == STATUS_OK).sum()} of {len(batch)} files ok; manifest in {output_root}",
    )
    if cancel.requested():
        raise BatchCancelled(batch)
    if (batch["status"] != STATUS_OK).any():
        raise BatchFailed(batch)
    return batch


class BatchCancelled(BatchFailed):
    """The batch was cancelled: finished files have their rows, in-flight ones `cancelled` rows, queued ones none."""


def cancelled_row(item: InputItem) -> dict[str, Any]:
    """The row of a file still running when a cancelled batch stopped waiting for it."""
    error = FileCancelledError("cancelled while in flight: run the batch again to finish it")
    return {"source": urls.redact(item.source), "relative_path": item.relative_path, **row_error(error)}


def file_pipeline(
    request: BatchRequest,
    options: TranscribeOptions,
    output_root: str,
    keys: list[str],
    file_options: dict[str, dict[str, Any]] | None = None,
) -> FilePipeline:
    """The batch's per-file pipeline, its transcripts cached under `<cache-dir>/results`.

    One worker at a time computes a cache key, across processes sharing the cache (the others wait, then hit).
    """
    cache_dir = request.cache_path()
    diarize = None
    if request.diarize.enabled or any("num_speakers" in o for o in (file_options or {}).values()):
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
        file_options=file_options or {},
        segments=SegmentsWriter(output_root, request.storage_options),
    )


def file_groups(items: list[InputItem], workers: int) -> list[FileGroup]:
    """`items` in groups of consecutive files, one task run each (see GROUPS_PER_WORKER)."""
    size = max(1, min(MAX_GROUP_FILES, math.ceil(len(items) / (workers * GROUPS_PER_WORKER))))
    return [FileGroup(tuple(items[i : i + size])) for i in range(0, len(items), size)]


def run_group(group: FileGroup, pipeline: FilePipeline, emit: Any, in_flight: dict[str, InputItem]) -> None:
    """One group's task run; every file of it reaches `emit` as a row, also when the task run itself fails.

    A cancel stops it before its next file (queued files get no row: the next run does them).
    """
    reported: set[str] = set()

    def on_row(row: dict[str, Any]) -> None:
        reported.add(row[KEY])
        in_flight.pop(row[KEY], None)
        emit(row)

    def on_start(item: InputItem) -> bool:
        if cancel.requested():
            return False
        in_flight[item.relative_path] = item
        return True

    error: BaseException | None = None
    try:
        state = transcribe_files(group, quote(pipeline), quote(on_row), quote(on_start), return_state=True)
        if not state.is_completed():
            failure = state.result(raise_on_failure=False)
            error = failure if isinstance(failure, BaseException) else RuntimeError(repr(failure))
    except Exception as crash:  # noqa: BLE001 - a lost API connection: the files left still get their rows
        error = crash
    if cancel.requested():
        return  # the files left get no row, or a `cancelled` one from the flow: the next run does them
    for item in group.items:
        if item.relative_path not in reported:
            emit(pipeline.unfinished_row(item, error))


def _next_row(finished: queue.Queue, futures: list[Future], in_flight: dict[str, InputItem]) -> dict[str, Any] | None:
    """The next file's row; after a cancel, files still in flight past the grace get `cancelled` rows."""
    grace_ends: float | None = None
    while True:
        try:
            return finished.get(timeout=cancel.POLL_S)
        except queue.Empty:
            if all(f.done() for f in futures) and finished.empty() and not cancel.requested():
                return None
        if cancel.requested():
            for future in futures:
                future.cancel()  # groups not started yet
            grace_ends = grace_ends or time.monotonic() + cancel.GRACE_S
            if time.monotonic() > grace_ends or all(f.done() for f in futures):
                if not in_flight:
                    return None
                key, item = next(iter(in_flight.items()))
                in_flight.pop(key, None)
                return cancelled_row(item)


def inputs_and_file_options(request: BatchRequest) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """The request's inputs followed by those its input lists name, and the per-file options by source:
    the request's own `file_options`, then those the lists' rows carry."""
    listed = [row for location in request.input_lists for row in read_input_rows(location, request.storage_options)]
    options = {source_key(source): dict(o) for source, o in request.file_options.items()}
    for source, row in listed:
        if row:
            options.setdefault(source_key(source), {}).update(row)
    return [*request.inputs, *(source for source, _ in listed)], options


def sidecar_full_names(request: BatchRequest, keys: list[str], output_root: str) -> frozenset[str]:
    """With the sidecar layout, the inputs whose names would collide (with the batch or the manifest's rows)."""
    if request.outputs.layout != "sidecar":
        return frozenset()
    earlier = read_manifest(output_root, request.storage_options)[KEY]
    return frozenset(sidecar_collisions([*keys, *earlier]))
