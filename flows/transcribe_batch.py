"""The batch flow: stage -> extract audio -> transcribe -> export subtitles -> manifest, per file."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

import pandas as pd
from prefect import Task, flow, get_run_logger
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.states import State

from batchscribe import cancel, progress, storage, urls
from batchscribe.audio import AudioFile
from batchscribe.diarization import assign_speakers
from batchscribe.errors import STATUS_FAILED, STATUS_OK, FileCancelledError, row_error
from batchscribe.inputs import read_input_rows, resolve_inputs
from batchscribe.locks import locked_cache_policy
from batchscribe.malloc import limit_malloc_arenas
from batchscribe.manifest import (
    KEY,
    ManifestWriter,
    artifact_records,
    known_keys,
    normalize,
    options_json,
    read_manifest,
    relative_to_root,
)
from batchscribe.media import InputItem, StagedFile
from batchscribe.options import SPEAKER_FORMATS, BatchRequest, TranscribeOptions
from batchscribe.run_state import RunStateWriter
from batchscribe.segment_table import SegmentsWriter
from batchscribe.transcript import Transcript
from batchscribe.writers import sidecar_collisions
from tasks.audio import audio_cache_key, extract_audio
from tasks.diarize import DiarizeResult, diarize_audio, diarize_cache_key
from tasks.fetch import stage_input
from tasks.subtitles import export_subtitles
from tasks.transcribe import TranscribeResult, transcribe_audio, transcribe_cache_key

limit_malloc_arenas()  # at import, before the worker and event-loop threads allocate: see batchscribe/malloc.py

ARTIFACT_ROWS = 500  # the table artifact is a view; the parquet manifest holds every row


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
    window scheduler, `batchscribe.scheduler`). Each file ends as one manifest row
    (`<output>/manifest.parquet` and `.csv`, merged in atomically as files finish: see ManifestWriter).
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
    rows: list[dict[str, Any]] = []
    run_state = RunStateWriter(output_root, len(items), request.storage_options)  # `batchscribe status` reads it
    pool = ThreadPoolExecutor(request.max_workers, thread_name_prefix="batchscribe-file")
    try:
        with ManifestWriter(output_root, request.storage_options) as manifest, pipeline.segments:
            # Each worker runs in a copy of this context, so its task runs belong to this flow run.
            futures = {pool.submit(copy_context().run, pipeline.run, item): item for item in items}
            for item, done in cancel.as_finished(futures):  # Ctrl-C: queued files stop, see batchscribe.cancel
                row = done.result() if done is not None else cancelled_row(item)
                rows.append(row)
                progress.file_finished(row)
                flushed = manifest.add(row) or len(rows) == len(items)
                audio_s = row.get("duration_s") if row.get("status") == STATUS_OK else None
                run_state.file_finished(audio_s, write=flushed)
                if flushed:  # the UI's progress moves with the manifest
                    update_progress_artifact(artifact_id=progress_id, progress=100.0 * len(rows) / len(items))
    finally:
        pool.shutdown(wait=not cancel.requested(), cancel_futures=True)
        run_state.finish()

    batch = normalize(rows).sort_values(KEY, kind="stable").reset_index(drop=True)
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
    """The batch's per-file pipeline, its cached tasks storing results under `<cache-dir>/results`.

    One worker at a time computes a cache key, across processes sharing the cache (the others wait, then hit).
    """
    cache_dir = request.cache_path()
    results = cache_dir / "results"
    diarizes = request.diarize.enabled or any("num_speakers" in o for o in (file_options or {}).values())

    def cached(task: Task, key_fn: Any) -> Task:
        return task.with_options(result_storage=results, cache_policy=locked_cache_policy(key_fn, cache_dir))

    return FilePipeline(
        request,
        options,
        output_root,
        str(cache_dir),
        extract=cached(extract_audio, audio_cache_key),
        transcribe=cached(transcribe_audio, transcribe_cache_key),
        full_names=sidecar_full_names(request, keys, output_root),
        diarize=cached(diarize_audio, diarize_cache_key) if diarizes else None,
        file_options=file_options or {},
        segments=SegmentsWriter(output_root, request.storage_options),
    )


def sidecar_full_names(request: BatchRequest, keys: list[str], output_root: str) -> frozenset[str]:
    """With the sidecar layout, the inputs whose names would collide (with the batch or the manifest's rows)."""
    if request.outputs.layout != "sidecar":
        return frozenset()
    earlier = read_manifest(output_root, request.storage_options)[KEY]
    return frozenset(sidecar_collisions([*keys, *earlier]))


def inputs_and_file_options(request: BatchRequest) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """The request's inputs followed by those its input lists name, and the per-file options by source:
    the request's own `file_options`, then those the lists' rows carry."""
    listed = [row for location in request.input_lists for row in read_input_rows(location, request.storage_options)]
    options = {_source_key(source): dict(o) for source, o in request.file_options.items()}
    for source, row in listed:
        if row:
            options.setdefault(_source_key(source), {}).update(row)
    return [*request.inputs, *(source for source, _ in listed)], options


def _source_key(source: str) -> str:
    return source if urls.is_url(source) else os.path.realpath(os.path.expanduser(source))


@dataclass(frozen=True)
class FilePipeline:
    """One file's way through the tasks, called in a worker thread; every failure becomes its row's error.

    The tasks are called, not submitted: each gets its upstream result as a plain value, so no task has to
    ask the API for an upstream future's state (which cost a round trip per task on a cached re-run).
    """

    request: BatchRequest
    options: TranscribeOptions
    output_root: str
    cache_dir: str
    extract: Task
    transcribe: Task
    full_names: frozenset[str] = frozenset()  # sidecar layout: inputs that keep their full name (collisions)
    diarize: Task | None = None  # None: no speaker labels
    file_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-file options by source key
    segments: SegmentsWriter | None = None  # the segments dataset beside the manifest; None: not written

    def for_item(self, item: InputItem) -> FilePipeline:
        """This pipeline with `item`'s own options (language, initial_prompt, num_speakers) applied."""
        key, found = _source_key(item.source), {}
        sep = "/" if urls.is_url(key) else os.sep
        parts = key.split(sep)
        for depth in range(1, len(parts) + 1):  # a folder's options, then a deeper one's, then the file's
            found.update(self.file_options.get(sep.join(parts[:depth]), {}))
        if not found:
            return self
        transcribe = {k: v for k, v in found.items() if k in ("language", "initial_prompt")}
        options = TranscribeOptions.model_validate({**self.options.model_dump(), **transcribe}).resolved()
        request = self.request
        if "num_speakers" in found:
            diarize = request.diarize.model_copy(update={"enabled": True, "num_speakers": int(found["num_speakers"])})
            request = request.model_copy(update={"diarize": diarize})
        return replace(self, options=options, request=request)

    def run(self, item: InputItem) -> dict[str, Any]:
        """The manifest row for `item`."""
        if self.file_options:
            pipeline = self.for_item(item)
            if pipeline is not self:
                return pipeline.run_as_is(item)
        return self.run_as_is(item)

    def run_as_is(self, item: InputItem) -> dict[str, Any]:
        """The manifest row for `item`, with this pipeline's options."""
        options, outputs = self.options, self.request.outputs
        row: dict[str, Any] = {
            "source": urls.redact(item.source),
            "relative_path": item.relative_path,
            "engine": options.engine,
            "model": options.model,
            "compute_type": options.compute_type,
            "options_hash": options.cache_hash(),
            "options": options_json(options),  # what was asked for, until the engine says what ran
            "diarize": options_json(self.request.diarize) if self.request.diarize.enabled else None,
            "formats": ",".join(outputs.formats),
            "subtitle_style": outputs.subtitle_style,
            "max_line_width": outputs.max_line_width,
            "max_line_count": outputs.max_line_count,
            "layout": outputs.layout,
            "started_at": datetime.now(timezone.utc),
        }
        started = time.monotonic()
        try:
            row = self._through_tasks(item, row)
        except Exception as error:  # noqa: BLE001 - a bug or a lost API connection: still this file's row
            row = {**row, **_error_columns(error), "attempts": 1}
        if "finished_at" not in row:
            row.update(finished_at=datetime.now(timezone.utc), wall_s=time.monotonic() - started)
        return row

    def _through_tasks(self, item: InputItem, row: dict[str, Any]) -> dict[str, Any]:
        request, options, cache_dir = self.request, self.options, self.cache_dir
        cancel.check("staging")
        state = stage_input(item, cache_dir, request.storage_options, request.max_input_bytes, return_state=True)
        if not state.is_completed():
            return _failed(row, state)
        staged: StagedFile = state.result()
        row.update(sha256=staged.sha256, size_bytes=staged.size_bytes)

        cancel.check("decoding")
        state = self.extract(staged, cache_dir, return_state=True)
        if not state.is_completed():
            return _failed(row, state)
        audio: AudioFile = state.result()
        row.update(duration_s=audio.duration_s, decode_s=audio.decode_s, warning=audio.warning)

        # Before transcription, which removes the decoded audio; the model meanwhile works on other files.
        diarized, diarize_warning = self._diarize(staged, audio)

        cancel.check("transcription")
        state = self.transcribe(staged, audio, options, cache_dir, row["started_at"], return_state=True)
        if not state.is_completed():
            return _failed(row, state)
        result: TranscribeResult = state.result()
        transcript = result.transcript
        if diarized is not None:
            transcript = assign_speakers(transcript, diarized.turns)
            row.update(
                speakers=diarized.speakers, diarize_s=diarized.diarize_s, num_speakers=request.diarize.num_speakers
            )

        formats = tuple(f for f in request.outputs.formats if diarized or f not in SPEAKER_FORMATS)  # turns or none
        outputs = request.outputs.model_copy(update={"formats": formats})
        full_name = item.relative_path in self.full_names
        state = export_subtitles(
            transcript, item.relative_path, self.output_root, outputs, request.storage_options, full_name,
            return_state=True,
        )  # fmt: skip
        if not state.is_completed():
            return _failed(row, state)
        if self.segments is not None:
            self.segments.add(item.relative_path, transcript)
        layout_warning = "sidecar name shared with another input (same folder and stem): kept the full name"
        warnings = (audio.warning, result.warning, diarize_warning, full_name and layout_warning)
        row.update(
            status=STATUS_OK,
            error=None,
            **_transcribed_columns(result, transcript, audio.duration_s, staged.attempts),
            options=options_json(result.used_options) if result.used_options else row["options"],
            warning="; ".join(w for w in warnings if w) or None,
            **{f"{fmt}_path": relative_to_root(path, self.output_root) for fmt, path in state.result().items()},
        )
        return row

    def _diarize(self, staged: StagedFile, audio: AudioFile) -> tuple[DiarizeResult | None, str]:
        """The file's speaker turns, or None and a warning saying why not: a failure here fails only this stage."""
        if self.diarize is None or not self.request.diarize.enabled:
            return None, ""
        state = self.diarize(staged, audio, self.request.diarize, self.cache_dir, return_state=True)
        if state.is_completed():
            return state.result(), ""
        error = _error_columns(state.result(raise_on_failure=False))["error"]
        return None, f"diarization failed, transcript written without speakers: {error}"


def _transcribed_columns(
    result: TranscribeResult, transcript: Transcript, duration_s: float, stage_attempts: int
) -> dict[str, Any]:
    """What a row says of its transcription: language, engine, counts and times.

    The times are the producing run's (cached with the transcript), so a cached re-run reports no cache
    read as speed.
    """
    started_at = result.file_started_at or result.started_at
    wall_s = (result.finished_at - started_at).total_seconds()
    return dict(
        language=transcript.language,
        language_probability=transcript.language_probability,
        engine=result.engine,
        model=result.model,
        compute_type=result.compute_type,
        options_hash=result.options_hash,
        windows=result.windows,
        redecoded_windows=result.redecoded_windows,
        guard_s=result.guard_s,
        unsure_s=transcript.unsure_s,
        shared_windows=result.shared_windows,
        started_at=started_at,
        finished_at=result.finished_at,
        transcribe_s=result.transcribe_s,
        wall_s=wall_s,
        realtime_factor=duration_s / wall_s if wall_s > 0 else None,
        attempts=max(result.attempts, stage_attempts),
    )


def _failed(row: dict[str, Any], state: State) -> dict[str, Any]:
    return {**row, **_error_columns(state.result(raise_on_failure=False)), "attempts": _run_count(state)}


def _error_columns(error: Any) -> dict[str, str]:
    if isinstance(error, BaseException):
        return row_error(error)
    return {"status": STATUS_FAILED, "error": f"did not finish: {error!r}"}


def _run_count(state: State) -> int:
    """How many times Prefect ran the task (1 + retries); 1 when the API cannot say. Asked for failures only:
    a completed file's count travels in its results."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            return max(1, client.read_task_run(state.state_details.task_run_id).run_count)
    except Exception:  # noqa: BLE001 - a count is not worth failing a file for
        return 1
