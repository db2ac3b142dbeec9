"""Transcription: decoded audio to a typed Transcript, with the model loaded once per process."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from prefect import task
from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext

from batchscribe.engines import load_engine
from batchscribe.longform import transcribe_pcm
from batchscribe.options import TranscribeOptions
from batchscribe.retries import retry_when
from batchscribe.transcript import Transcript
from tasks.audio import AudioFile, decode_audio
from tasks.fetch import StagedFile

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
    # When the file's way through (staging) began in the run that transcribed it; a cached row keeps it.
    file_started_at: datetime | None = None
    effective_options: str = ""  # JSON of the options as they ran (Engine.effective_options); "": not known


def fallbacks(options: TranscribeOptions) -> list[TranscribeOptions]:
    """What to try after a GPU out-of-memory: halve faster-whisper's batch down to 1, then the CPU."""
    if options.device != "cuda":
        return []
    smaller = []
    if options.engine == "faster-whisper":
        batch = options.batch_size
        while batch > 1:
            batch //= 2
            smaller.append(options.model_copy(update={"batch_size": batch}))
    cpu = options.model_copy(update={"device": "cpu", "compute_type": "auto"}).resolved()
    return [*smaller, cpu]


def transcribe_with_fallback(
    path: Path, options: TranscribeOptions, cache_dir: Path
) -> tuple[Transcript, TranscribeOptions, str, float]:
    """Transcribe with `options`; on a GPU out-of-memory, retry with `fallbacks(options)` in order.

    Returns the transcript, the options that produced it, a warning naming the fallback ("" if none) and
    the model's seconds on it.
    """
    tried = [options, *fallbacks(options)]
    for attempt, opts in enumerate(tried):
        engine = load_engine(opts, cache_dir)
        try:
            with engine.lock:  # timed inside the lock: waiting for other files is not this file's model time
                t0 = time.perf_counter()
                transcript = transcribe_pcm(engine, path, opts)
                seconds = time.perf_counter() - t0
        except Exception as error:
            if attempt + 1 == len(tried) or not is_transient_engine_error(error):
                raise
            _free_gpu_memory()
            logger.warning("GPU out of memory (%s); retrying with %s", error, _describe(tried[attempt + 1]))
            continue
        warning = f"GPU out of memory; transcribed with {_describe(opts)}" if attempt else ""
        return transcript, opts, warning, seconds
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
    """Content hash + resolved options: the same bytes with the same options never transcribe twice."""
    options: TranscribeOptions = parameters["options"]
    return f"transcribe-{parameters['staged'].sha256}-{options.cache_hash()}"


def is_transient_engine_error(error: BaseException) -> bool:
    """A GPU out-of-memory or a CUDA hiccup may pass on retry; anything else will fail the same way."""
    text = str(error).lower()
    return "out of memory" in text or "cuda error" in text or "cublas" in text


retry_if_engine_transient = retry_when(is_transient_engine_error)


@task(
    task_run_name="transcribe-{staged.relative_path}",
    cache_policy=CachePolicy.from_cache_key_fn(transcribe_cache_key),  # the flow adds the lock
    persist_result=True,
    retries=2,
    retry_delay_seconds=[5, 15],
    retry_condition_fn=retry_if_engine_transient,
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
    the manifest's wall time is the producing run's also when the result comes from the cache.
    """
    options = options.resolved()
    path = Path(audio.path)
    if not path.exists():  # the decoded copy was cleaned up since it was cached: decode again
        decode_audio(Path(staged.local_path), path)
    started_at = datetime.now(timezone.utc)
    transcript, used, warning, transcribe_s = transcribe_with_fallback(path, options, Path(cache_dir))
    path.unlink(missing_ok=True)  # the transcript is cached now; decoded PCM is 115 MB per hour
    effective = load_engine(used, Path(cache_dir)).effective_options(used)  # loaded already: a dict lookup
    context = TaskRunContext.get()
    return TranscribeResult(
        transcript=transcript,
        engine=used.engine,
        model=used.model,
        compute_type=used.compute_type,
        options_hash=options.cache_hash(),
        started_at=started_at,
        finished_at=datetime.now(timezone.utc),
        transcribe_s=transcribe_s,
        attempts=context.task_run.run_count if context else 1,
        warning=warning,
        effective_options=json.dumps(effective, sort_keys=True),
        file_started_at=file_started_at or started_at,
    )
