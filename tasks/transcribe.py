"""Transcription: decoded audio to a typed Transcript, with the model loaded once per process."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from prefect import task
from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext

from batchscribe.audio import AudioFile
from batchscribe.cache_keys import transcript_key
from batchscribe.decode import decode_media, pcm_path
from batchscribe.engines import load_engine
from batchscribe.engines.base import FileTranscription
from batchscribe.errors import GpuError
from batchscribe.media import StagedFile
from batchscribe.options import TranscribeOptions
from batchscribe.retries import retry_if_transient
from batchscribe.transcript import Transcript

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TranscribeResult:
    """A transcript with when and how it was made (what the manifest records, cached with it)."""

    transcript: Transcript
    engine: str
    model: str
    compute_type: str
    options_hash: str
    started_at: datetime
    finished_at: datetime
    transcribe_s: float
    attempts: int
    warning: str = ""  # e.g. the GPU ran out of memory and a smaller batch or the CPU finished the file
    windows: int = 0  # speech windows decoded (0 for engines that cut no windows of their own)
    redecoded_windows: int = 0  # windows the guard decoded again as two shorter rows
    guard_s: float = 0.0  # model seconds those second decodes took
    shared_windows: int = 0  # short windows decoded in rows shared with other files
    used_options: TranscribeOptions | None = None  # the options as the engine really ran them
    # When the file's way through (staging) began in the run that transcribed it; a cached row keeps it.
    file_started_at: datetime | None = None
    duration_s: float | None = None  # the decoded audio's length, its decoding time and any decoder warning:
    decode_s: float | None = None  # kept with the transcript, so a cached row needs no decoding
    audio_warning: str = ""


def fallbacks(options: TranscribeOptions) -> list[TranscribeOptions]:
    """What to try after a GPU out-of-memory.

    The window scheduler halves its own batch on an out-of-memory, so a scheduled file only falls back to
    the CPU; the sequential decoders have no batch to halve either.
    """
    if options.device != "cuda":
        return []
    return [options.model_copy(update={"device": "cpu", "compute_type": "auto", "device_index": ()}).resolved()]


def transcribe_with_fallback(
    path: Path, options: TranscribeOptions, cache_dir: Path
) -> tuple[FileTranscription, TranscribeOptions, str]:
    """Transcribe with `options`; on a GPU out-of-memory, retry with `fallbacks(options)` in order.

    Returns the engine's result, the options that produced it (as the engine ran them) and a warning
    naming the fallback and any batch the scheduler had to shrink ("" if none).
    """
    tried = [options, *fallbacks(options)]
    for attempt, opts in enumerate(tried):
        engine = load_engine(opts, cache_dir)
        try:
            result = engine.transcribe_file(path, opts)
        except GpuError as error:
            if attempt + 1 == len(tried):
                raise
            _free_gpu_memory()
            logger.warning("GPU out of memory (%s); retrying with %s", error, _describe(tried[attempt + 1]))
            continue
        warnings = [f"GPU out of memory; transcribed with {_describe(opts)}"] if attempt else []
        warning = "; ".join(w for w in [*warnings, result.warning] if w)
        return result, engine.effective_options(opts), warning
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def _describe(options: TranscribeOptions) -> str:
    batch = f", batch {options.batch_size}" if options.engine == "faster-whisper" else ""
    return f"{options.engine} on {options.device} ({options.compute_type}{batch})"


def _free_gpu_memory() -> None:
    try:
        import torch

        torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - best effort
        pass


def transcribe_cache_key(context: object, parameters: dict) -> str:
    """What decides the words (`batchscribe.cache_keys`): the same bytes, weights, engine and word-deciding
    options never transcribe twice; batch size, workers and device change nothing."""
    return transcript_key(parameters["staged"].sha256, parameters["options"], Path(parameters["cache_dir"]))


@task(
    task_run_name="transcribe-{staged.relative_path}",
    cache_policy=CachePolicy.from_cache_key_fn(transcribe_cache_key),  # the flow adds the lock
    persist_result=True,
    retries=2,
    retry_delay_seconds=[5, 15],
    retry_condition_fn=retry_if_transient,  # only GPU errors (GpuError) are transient here
)
def transcribe_audio(
    staged: StagedFile,
    audio: AudioFile,
    options: TranscribeOptions,
    cache_dir: str,
    file_started_at: datetime | None = None,
) -> TranscribeResult:
    """Transcribe one decoded file with the process-wide engine for `options`.

    `file_started_at` (when the file's staging began; not part of the cache key) is kept in the result, so
    the manifest's wall time is the producing run's also when the result comes from the cache. On the
    window scheduler's path the words are aligned anyway: they are kept, whatever `word_timestamps` says,
    so one cached transcript serves both (the flow drops them from the outputs when not asked for).
    """
    options = options.resolved()
    path = pcm_path(cache_dir, audio)
    if not path.exists():  # the decoded copy was cleaned up since it was cached: decode again
        decode_media(Path(staged.local_path), path, staged.data)
    started_at = datetime.now(timezone.utc)
    run = options.model_copy(update={"word_timestamps": True}) if options.scheduled() else options
    result, used, warning = transcribe_with_fallback(path, run, Path(cache_dir))
    path.unlink(missing_ok=True)  # the transcript is cached now; decoded PCM is 115 MB per hour
    context = TaskRunContext.get()
    return TranscribeResult(
        transcript=result.transcript,
        engine=used.engine,
        model=used.model,
        compute_type=used.compute_type,
        options_hash=options.cache_hash(),
        started_at=started_at,
        finished_at=datetime.now(timezone.utc),
        transcribe_s=result.model_s,
        attempts=context.task_run.run_count if context else 1,
        warning=warning,
        windows=result.windows,
        redecoded_windows=result.redecoded_windows,
        guard_s=result.guard_s,
        shared_windows=result.shared_windows,
        used_options=used.model_copy(update={"word_timestamps": options.word_timestamps}),
        file_started_at=file_started_at or started_at,
        duration_s=audio.duration_s,
        decode_s=audio.decode_s,
        audio_warning=audio.warning,
    )
