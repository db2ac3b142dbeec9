"""The batch flow: stage -> extract audio -> transcribe -> export subtitles -> manifest, per file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.futures import PrefectFuture, as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from batchscribe import progress, storage
from batchscribe.locks import locked_cache_policy
from batchscribe.options import BatchRequest, TranscribeOptions
from tasks.audio import AudioFile, NoAudioError, audio_cache_key, extract_audio
from tasks.fetch import InputItem, StagedFile, read_input_list, resolve_inputs, stage_input
from tasks.manifest import (
    KEY,
    STATUS_FAILED,
    STATUS_NO_AUDIO,
    STATUS_OK,
    ManifestWriter,
    normalize,
    options_json,
)
from tasks.subtitles import export_subtitles
from tasks.transcribe import TranscribeResult, transcribe_audio, transcribe_cache_key

ARTIFACT_ROWS = 500  # the table artifact is a view; the parquet manifest holds every row


class BatchFailed(Exception):
    """Some files did not end ok. Raised after the manifest is written, so the flow run ends Failed."""

    def __init__(self, manifest: pd.DataFrame) -> None:
        bad = manifest[manifest["status"] != STATUS_OK]
        super().__init__(f"{len(bad)} of {len(manifest)} files did not transcribe: " + ", ".join(bad[KEY][:10]))
        self.manifest = manifest


@dataclass
class FileJob:
    item: InputItem
    staged: PrefectFuture[StagedFile]
    audio: PrefectFuture[AudioFile]
    result: PrefectFuture[TranscribeResult]


@flow(name="transcribe-batch", task_runner=ThreadPoolTaskRunner(max_workers=4))
def transcribe_batch(request: BatchRequest) -> pd.DataFrame:
    """Transcribe every input of `request` and return this batch's manifest rows.

    Files run concurrently; the model runs one file at a time. Each file ends as one manifest row
    (`<output>/manifest.parquet` and `.csv`, merged in atomically as files finish: see ManifestWriter). The run ends
    Failed, after everything that could finish has, when any file did not end ok.
    """
    logger = get_run_logger()
    options = request.transcribe.resolved()
    cache_dir = request.cache_path()
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
    results = cache_dir / "results"
    # One worker at a time per cache key, across processes sharing the cache (the others wait, then hit).
    extract = extract_audio.with_options(
        result_storage=results, cache_policy=locked_cache_policy(audio_cache_key, cache_dir)
    )
    transcribe = transcribe_audio.with_options(
        result_storage=results, cache_policy=locked_cache_policy(transcribe_cache_key, cache_dir)
    )
    jobs: dict[Any, FileJob] = {}
    for item in items:
        staged = stage_input.submit(item, str(cache_dir), request.storage_options, request.max_input_bytes)
        audio = extract.submit(staged, str(cache_dir))
        result = transcribe.submit(staged, audio, options, str(cache_dir))
        jobs[result.task_run_id] = FileJob(item, staged, audio, result)

    progress_id = create_progress_artifact(progress=0.0, key="batchscribe-progress", description=f"{len(items)} files")
    rows: list[dict[str, Any]] = []
    with ManifestWriter(output_root, request.storage_options) as manifest:
        for done in as_completed([job.result for job in jobs.values()]):
            row = _finish_file(jobs[done.task_run_id], options, request, output_root)
            rows.append(row)
            progress.file_finished(row)
            if manifest.add(row) or len(rows) == len(items):  # the UI's progress moves with the manifest
                update_progress_artifact(artifact_id=progress_id, progress=100.0 * len(rows) / len(items))

    batch = normalize(rows).sort_values(KEY, kind="stable").reset_index(drop=True)
    create_table_artifact(
        key="batchscribe-manifest",
        table=_artifact_records(batch),
        description=f"{(batch['status'] == STATUS_OK).sum()} of {len(batch)} files ok; manifest in {output_root}",
    )
    if (batch["status"] != STATUS_OK).any():
        raise BatchFailed(batch)
    return batch


def all_inputs(request: BatchRequest) -> list[str]:
    """The request's inputs followed by those its input lists name."""
    listed = [entry for location in request.input_lists for entry in read_input_list(location, request.storage_options)]
    return [*request.inputs, *listed]


def _finish_file(job: FileJob, options: TranscribeOptions, request: BatchRequest, output_root: str) -> dict:
    """Export a transcribed file and build its manifest row; a failure anywhere becomes the row's error."""
    row: dict[str, Any] = {
        "source": storage.redact(job.item.source),
        "relative_path": job.item.relative_path,
        "engine": options.engine,
        "model": options.model,
        "compute_type": options.compute_type,
        "options_hash": options.cache_hash(),
        "options": options_json(options),
    }
    for future in (job.staged, job.audio, job.result):
        future.wait()  # sets the future's final state locally; `.state` alone may ask the API and lag
        if not future.state.is_completed():
            error = future.state.result(raise_on_failure=False)
            row.update(_error_columns(error), attempts=_run_count(future))
            break
    staged = _completed_result(job.staged)
    if isinstance(staged, StagedFile):
        row.update(sha256=staged.sha256, size_bytes=staged.size_bytes)
    audio = _completed_result(job.audio)
    if isinstance(audio, AudioFile):
        row.update(duration_s=audio.duration_s, decode_s=audio.decode_s, warning=audio.warning)
    if "status" in row:
        return row

    result: TranscribeResult = job.result.result()
    exported = export_subtitles(
        result.transcript,
        job.item.relative_path,
        output_root,
        request.outputs,
        request.storage_options,
        return_state=True,
    )
    if not exported.is_completed():
        row.update(_error_columns(exported.result(raise_on_failure=False)))
        return row
    transcript = result.transcript
    wall_s = audio.decode_s + result.transcribe_s
    row.update(
        status=STATUS_OK,
        error="",
        language=transcript.language,
        language_probability=transcript.language_probability,
        engine=result.engine,
        model=result.model,
        compute_type=result.compute_type,
        options_hash=result.options_hash,
        started_at=result.started_at,
        finished_at=result.finished_at,
        transcribe_s=result.transcribe_s,
        wall_s=wall_s,
        realtime_factor=audio.duration_s / wall_s if wall_s > 0 else None,
        attempts=max(result.attempts, job.staged.result().attempts),
        warning="; ".join(w for w in (audio.warning, result.warning) if w),
        **{f"{fmt}_path": path for fmt, path in exported.result().items()},
    )
    return row


def _completed_result(future: PrefectFuture) -> Any:
    return future.result() if future.state.is_completed() else None


def _error_columns(error: Any) -> dict[str, str]:
    if isinstance(error, NoAudioError):
        return {"status": STATUS_NO_AUDIO, "error": str(error)}
    if isinstance(error, BaseException):
        known = type(error).__module__.startswith(("tasks.", "batchscribe."))
        message = str(error) if known else f"{type(error).__name__}: {error}"
        return {"status": STATUS_FAILED, "error": message}
    return {"status": STATUS_FAILED, "error": f"did not finish: {error!r}"}


def _run_count(future: PrefectFuture) -> int:
    """How many times Prefect ran the task (1 + retries); 1 when the API cannot say."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            return max(1, client.read_task_run(future.task_run_id).run_count)
    except Exception:  # noqa: BLE001 - a count is not worth failing a file for
        return 1


def _artifact_records(batch: pd.DataFrame) -> list[dict[str, Any]]:
    view = batch[["relative_path", "status", "error", "language", "duration_s", "realtime_factor", "srt_path"]]
    view = view.head(ARTIFACT_ROWS).astype(object).where(view.head(ARTIFACT_ROWS).notna(), None)
    return view.to_dict("records")
