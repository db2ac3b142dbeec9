"""Audio extraction: any audio or video container to 16 kHz mono PCM, through ffmpeg."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import ffmpeg
import numpy as np
from prefect import task
from prefect.cache_policies import CachePolicy

from tasks.fetch import StagedFile

SAMPLE_RATE = 16_000  # Hz, what Whisper expects
BYTES_PER_SECOND = SAMPLE_RATE * 2  # 32,000 bytes per second of s16le mono


_CODEC_PREFIX = re.compile(r"^\[[^\]]+ @ 0x[0-9a-f]+\]\s*")  # "[mp3float @ 0x55ce...] " in ffmpeg's messages


class MediaError(Exception):
    """ffmpeg could not decode the file: permanent, never retried."""


class NoAudioError(MediaError):
    """The file decodes but holds no audio to transcribe."""


@dataclass(frozen=True)
class AudioFile:
    """Decoded audio: raw s16le, 16 kHz, mono, no header."""

    path: str
    duration_s: float
    decode_s: float
    warning: str = ""  # decoder errors ffmpeg recovered from (a truncated file, say)


@cache
def ffmpeg_exe() -> str:
    """`$BATCHSCRIBE_FFMPEG`, else `ffmpeg` on PATH, else the binary imageio-ffmpeg ships."""
    if env := os.environ.get("BATCHSCRIBE_FFMPEG"):
        return env
    if found := shutil.which("ffmpeg"):
        return found
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def decode_command(src: Path, dst: Path) -> list[str]:
    """The ffmpeg argv (never a shell string) that decodes `src` into raw 16 kHz mono PCM at `dst`."""
    # `file:` plus an absolute path: a name starting with '-' or holding 'http:'/'concat:' stays a file name.
    stream = ffmpeg.input(f"file:{src.resolve()}")
    stream = stream.output(
        f"file:{dst.resolve()}", format="s16le", acodec="pcm_s16le", ac=1, ar=SAMPLE_RATE, vn=None, sn=None, dn=None
    )
    stream = stream.global_args("-nostdin", "-hide_banner", "-nostats", "-v", "error", "-threads", "0")
    return stream.overwrite_output().compile(cmd=ffmpeg_exe())


def decode_audio(src: Path, dst: Path) -> AudioFile:
    """Decode `src` to `dst` (written atomically). Raises MediaError or NoAudioError with a readable cause."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    started = time.perf_counter()
    try:
        proc = subprocess.run(decode_command(src, tmp), capture_output=True, stdin=subprocess.DEVNULL)
        stderr = proc.stderr.decode("utf-8", "replace").strip()
        if proc.returncode != 0:
            raise _media_error(stderr)
        size = tmp.stat().st_size
        if size < BYTES_PER_SECOND // 100:  # under 10 ms of samples
            raise NoAudioError("the audio stream holds no samples")
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    warning = ""
    if stderr:
        warning = "decoded with errors, the file may be truncated or damaged: " + _last_line(stderr)
    return AudioFile(str(dst), size / BYTES_PER_SECOND, time.perf_counter() - started, warning)


def load_audio(path: str | Path) -> np.ndarray:
    """Raw s16le PCM to float32 in [-1, 1]."""
    return np.fromfile(path, dtype="<i2").astype(np.float32) / 32768.0


def _media_error(stderr: str) -> MediaError:
    lowered = stderr.lower()
    if "does not contain any stream" in lowered or "matches no streams" in lowered:
        return NoAudioError("no audio stream in the file (video or data only)")
    if "moov atom not found" in lowered:
        return MediaError("incomplete MP4/MOV (moov atom not found): the file is truncated or still being written")
    if "invalid data found when processing input" in lowered:
        return MediaError("not an audio or video file ffmpeg can read (invalid data found when processing input)")
    return MediaError(f"ffmpeg could not decode the file: {_last_line(stderr) or 'no reason given'}")


def _last_line(text: str) -> str:
    lines = [_CODEC_PREFIX.sub("", line).strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


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
