"""The extract task: one staged file decoded to 16 kHz mono PCM (see `batchscribe.audio`), cached by content."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import CachePolicy

from batchscribe.audio import AudioFile, decode_audio
from batchscribe.media import StagedFile


def audio_cache_key(context: object, parameters: dict) -> str:
    return f"audio-{parameters['staged'].sha256}"


@task(
    task_run_name="extract-{staged.relative_path}",
    cache_policy=CachePolicy.from_cache_key_fn(audio_cache_key),  # the flow adds the lock: locked_cache_policy
    persist_result=True,
)
def extract_audio(staged: StagedFile, work_dir: str) -> AudioFile:
    """Decode one staged file into `work_dir/audio/<sha256>.s16le`."""
    return decode_audio(Path(staged.local_path), Path(work_dir) / "audio" / f"{staged.sha256}.s16le")
