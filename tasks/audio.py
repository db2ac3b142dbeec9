"""The extract step: one staged file decoded to 16 kHz mono PCM under the cache (see `batchscribe.decode`)."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import CachePolicy

from batchscribe.audio import AudioFile
from batchscribe.decode import AUDIO_DIR, decode_media
from batchscribe.media import StagedFile


def audio_cache_key(context: object, parameters: dict) -> str:
    return f"audio-{parameters['staged'].sha256}"


@task(
    task_run_name="extract-{staged.relative_path}",
    cache_policy=CachePolicy.from_cache_key_fn(audio_cache_key),  # the flow adds the lock: locked_cache_policy
    persist_result=True,
)
def extract_audio(staged: StagedFile, work_dir: str) -> AudioFile:
    """Decode one staged file into `work_dir/audio/<sha256>.s16le`.

    The AudioFile's path is relative to `work_dir`, so a cached entry holds on a host that mounts the cache
    elsewhere (read it with `pcm_path`). In this process when PyAV reads the file cleanly, else through ffmpeg.
    """
    relative = Path(AUDIO_DIR) / f"{staged.sha256}.s16le"
    audio = decode_media(Path(staged.local_path), Path(work_dir) / relative, staged.data)
    return AudioFile(relative.as_posix(), audio.duration_s, audio.decode_s, audio.warning)
