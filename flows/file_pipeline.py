"""A file's way through the tasks, and the task run that carries a group of files along it: stage, decode,
transcribe, export, one row each.

A Prefect task run costs tens of milliseconds of CPU (client and server) and tens of KB of the server's
database, more than everything else a short file needs (docs/pipeline.md). So the flow hands each task run
a group of files. Each file still ends as its own manifest row with its own error; its stage and
transcription retry on their own with those tasks' retry policies (`Attempts`); its transcript is cached by
what decides its words (`batchscribe.cache_keys`, `ResultCache`), so a cached file costs a hash and a read.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prefect import Task, task
from prefect.cache_policies import NO_CACHE

from batchscribe import cancel, urls
from batchscribe.audio import AudioFile
from batchscribe.cache_keys import transcript_key
from batchscribe.decode import AUDIO_DIR
from batchscribe.diarization import assign_speakers
from batchscribe.downloads import DOWNLOADS_DIR, evict
from batchscribe.errors import STATUS_FAILED, STATUS_OK, row_error
from batchscribe.manifest import options_json, relative_to_root
from batchscribe.media import InputItem, StagedFile
from batchscribe.options import SPEAKER_FORMATS, BatchRequest, TranscribeOptions
from batchscribe.result_cache import ResultCache
from batchscribe.retries import Attempts
from batchscribe.segment_table import SegmentsWriter
from batchscribe.transcript import Transcript
from tasks.audio import extract_audio
from tasks.diarize import DiarizeResult
from tasks.fetch import stage_input
from tasks.subtitles import export_subtitles
from tasks.transcribe import TranscribeResult, transcribe_audio

LAYOUT_WARNING = "sidecar name shared with another input (same folder and stem): kept the full name"


@dataclass(frozen=True)
class FileGroup:
    """Files that share one task run, carried through one after another."""

    items: tuple[InputItem, ...]

    @property
    def name(self) -> str:
        first = self.items[0].relative_path
        return first if len(self.items) == 1 else f"{first} and {len(self.items) - 1} more"


@task(task_run_name="files-{group.name}", cache_policy=NO_CACHE)
def transcribe_files(
    group: FileGroup,
    pipeline: FilePipeline,
    on_row: Callable[[dict[str, Any]], None],
    on_start: Callable[[InputItem], bool] = lambda item: True,
) -> int:
    """Carry each file of `group` through `pipeline`, handing its manifest row to `on_row` as soon as it is ready.

    `on_start` is told of each file before it starts; False stops the group there (a cancelled batch).
    """
    done = 0
    for item in group.items:
        if not on_start(item):
            break
        on_row(pipeline.run(item))
        done += 1
    return done


@dataclass(frozen=True)
class FilePipeline:
    """One file's way, called in a worker thread inside a group's task run; every failure becomes its row's error."""

    request: BatchRequest
    options: TranscribeOptions
    output_root: str
    cache_dir: str
    results: ResultCache
    full_names: frozenset[str] = frozenset()  # sidecar layout: inputs that keep their full name (collisions)
    diarize: Task | None = None  # None: no speaker labels
    file_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-file options by source key
    segments: SegmentsWriter | None = None  # the segments dataset beside the manifest; None: not written

    def for_item(self, item: InputItem) -> FilePipeline:
        """This pipeline with `item`'s own options (language, initial_prompt, num_speakers) applied."""
        key, found = source_key(item.location), {}
        sep = "/" if item.location.is_remote else os.sep
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

    def first_columns(self, item: InputItem) -> dict[str, Any]:
        """What a row says before the file is read: where it is from and what was asked for."""
        options, outputs = self.options, self.request.outputs
        return {
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

    def unfinished_row(self, item: InputItem, error: BaseException | None) -> dict[str, Any]:
        """The row of a file whose group's task run ended before the file did (a crash, a lost API)."""
        reason = row_error(error) if error else {"status": STATUS_FAILED, "error": "did not finish"}
        now = datetime.now(timezone.utc)
        return {**self.first_columns(item), **reason, "attempts": 1, "finished_at": now, "wall_s": 0.0}

    def run(self, item: InputItem) -> dict[str, Any]:
        """The manifest row for `item`, with its own options when the batch has per-file options."""
        pipeline = self.for_item(item) if self.file_options else self
        return pipeline.run_as_is(item)

    def run_as_is(self, item: InputItem) -> dict[str, Any]:
        """The manifest row for `item`, with this pipeline's options.

        Whatever staging downloaded for it is evicted once the row is ready (its outputs written, or its
        error known); a retry or a rerun stages it again (see `batchscribe.downloads`).
        """
        row = self.first_columns(item)
        started = time.monotonic()
        stage, transcribe = Attempts(), Attempts()
        staged: list[StagedFile] = []
        try:
            row = self._through(item, row, stage, transcribe, staged)
        except Exception as error:  # noqa: BLE001 - a bad file or a bug: still this file's row
            row = {**row, **row_error(error), "attempts": max(stage.count, transcribe.count, 1)}
        finally:
            for copy in staged:
                evict(copy, Path(self.cache_dir) / DOWNLOADS_DIR)
        if "finished_at" not in row:
            row.update(finished_at=datetime.now(timezone.utc), wall_s=time.monotonic() - started)
        return row

    def _through(
        self, item: InputItem, row: dict[str, Any], stage: Attempts, transcribe: Attempts, staged_so_far: list
    ) -> dict[str, Any]:
        request, options, cache_dir = self.request, self.options, self.cache_dir
        stage_args = (item, cache_dir, request.storage_options, request.max_input_bytes)
        cancel.check("staging")
        staged: StagedFile = stage.call(stage_input, *stage_args, fetch=False)  # a recorded hash is enough here
        staged_so_far.append(staged)
        row.update(sha256=staged.sha256, size_bytes=staged.size_bytes)

        key = transcript_key(staged.sha256, options, Path(cache_dir))
        result: TranscribeResult | None = self.results.get(key)
        if not staged.present and (result is None or self._diarizing()):  # the bytes are needed after all
            staged = stage.call(stage_input, *stage_args)
            staged_so_far.append(staged)
        audio = AudioFile(f"{AUDIO_DIR}/{staged.sha256}.s16le", 0.0, 0.0)  # decoded only when needed
        try:
            if result is None:
                cancel.check("decoding")
                audio = extract_audio.fn(staged, cache_dir)
            # Before transcription, which removes the decoded audio.
            diarized, diarize_warning = self._diarize(staged, audio)
            if result is None:
                cancel.check("transcription")
                args = (staged, audio, options, cache_dir, row["started_at"])
                compute = lambda: replace(transcribe.call(transcribe_audio, *args), attempts=transcribe.count)  # noqa: E731
                result, _ = self.results.get_or_compute(key, compute)
        finally:
            (Path(cache_dir) / audio.path).unlink(missing_ok=True)
        row.update(duration_s=result.duration_s, decode_s=result.decode_s)

        transcript = result.transcript  # with its aligned words: the subtitle cues are laid out from them
        if diarized is not None:
            transcript = assign_speakers(transcript, diarized.turns)
            row.update(
                speakers=diarized.speakers, diarize_s=diarized.diarize_s, num_speakers=request.diarize.num_speakers
            )
        formats = tuple(f for f in request.outputs.formats if diarized or f not in SPEAKER_FORMATS)  # turns or none
        outputs = request.outputs.model_copy(update={"formats": formats})
        full_name = item.relative_path in self.full_names
        paths = export_subtitles.fn(
            transcript, item.relative_path, self.output_root, outputs, request.storage_options, full_name
        )
        if self.segments is not None:
            self.segments.add(item.relative_path, transcript)
        warnings = (result.audio_warning, result.warning, diarize_warning, full_name and LAYOUT_WARNING)
        row.update(
            status=STATUS_OK,
            error=None,
            **_transcribed_columns(result, transcript, max(stage.count, transcribe.count, 1)),
            options=_ran_json(result, options),
            warning="; ".join(w for w in warnings if w) or None,
            **{f"{fmt}_path": relative_to_root(path, self.output_root) for fmt, path in paths.items()},
        )
        return row

    def _diarizing(self) -> bool:
        return self.diarize is not None and self.request.diarize.enabled

    def _diarize(self, staged: StagedFile, audio: AudioFile) -> tuple[DiarizeResult | None, str]:
        """The file's speaker turns, or None and a warning saying why not: a failure here fails only this stage."""
        if not self._diarizing():
            return None, ""
        state = self.diarize(staged, audio, self.request.diarize, self.cache_dir, return_state=True)
        if state.is_completed():
            return state.result(), ""
        error = state.result(raise_on_failure=False)
        reason = row_error(error)["error"] if isinstance(error, BaseException) else repr(error)
        return None, f"diarization failed, transcript written without speakers: {reason}"


def _ran_json(result: TranscribeResult, asked: TranscribeOptions) -> str:
    """The options as they ran; word timing as asked (a cached transcript keeps its words either way)."""
    if result.used_options is None:
        return options_json(asked)
    return options_json(result.used_options.model_copy(update={"word_timestamps": asked.word_timestamps}))


def _transcribed_columns(result: TranscribeResult, transcript: Transcript, attempts: int) -> dict[str, Any]:
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
        realtime_factor=result.duration_s / wall_s if wall_s > 0 and result.duration_s else None,
        attempts=max(result.attempts, attempts),
    )


def source_key(source: str | urls.Location) -> str:
    """A source as per-file options name it: a URL as is, a local path made absolute and real."""
    location = source if isinstance(source, urls.Location) else urls.parse(source)
    return location.source if location.is_remote else os.path.realpath(os.path.expanduser(location.source))
