"""Decoding an input to 16 kHz mono PCM in this process with PyAV, and through an ffmpeg process otherwise.

An ffmpeg process per file costs tens of milliseconds of process start and probing, more than decoding a
short clip takes; PyAV (installed with faster-whisper) links FFmpeg's own libraries and decodes in this
process, with the GIL released. Only a clean decode is kept: a file PyAV cannot open, or that fails
anywhere in its decoding, goes to the ffmpeg process (`batchscribe.audio.decode_audio`), whose errors and
warnings say what is wrong with it. So a bad input's row reads the same whichever path met it first.
"""

from __future__ import annotations

import io
import logging
import time
from pathlib import Path

from batchscribe.atomic import atomic_path
from batchscribe.audio import BYTES_PER_SECOND, SAMPLE_RATE, AudioFile, decode_audio, length_warning

logger = logging.getLogger(__name__)

AUDIO_DIR = "audio"  # under the cache folder: <sha256>.s16le, removed once the file's transcript is cached


def pcm_path(cache_dir: str | Path, audio: AudioFile) -> Path:
    """Where `audio`'s samples are: its path is relative to the cache folder (absolute in older entries)."""
    return Path(cache_dir) / audio.path


class _NotClean(Exception):
    """PyAV did not decode the file cleanly: the ffmpeg process decodes it instead."""


def decode_media(src: Path, dst: Path, data: bytes | None = None) -> AudioFile:
    """Decode `src` (or `data`, its bytes when already read) to raw s16le 16 kHz mono PCM at `dst`.

    In this process when PyAV reads the file cleanly, else through ffmpeg. Raises MediaError or NoAudioError
    (from the ffmpeg path) with a readable cause.
    """
    try:
        return decode_in_process(io.BytesIO(data) if data is not None else src, dst)
    except _NotClean as reason:
        logger.debug("decoding %s through ffmpeg: %s", src, reason)
        return decode_audio(src, dst)


def decode_in_process(source: Path | io.BytesIO, dst: Path) -> AudioFile:
    """Decode the first audio stream of `source` to `dst` (atomically) with PyAV; raises _NotClean otherwise."""
    import av

    started = time.perf_counter()
    try:
        with av.open(source if isinstance(source, io.BytesIO) else str(source), metadata_errors="ignore") as media:
            if not media.streams.audio:
                raise _NotClean("no audio stream")
            declared_s = _declared_s(media)
            resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            with atomic_path(dst, durable=False) as tmp, open(tmp, "wb") as out:  # a cache file, rebuilt if lost
                for frame in media.decode(_chosen_stream(media)):
                    for pcm in resampler.resample(frame):
                        out.write(pcm.to_ndarray().tobytes())
                for pcm in resampler.resample(None):  # what the resampler still holds
                    out.write(pcm.to_ndarray().tobytes())
                size = out.tell()
                if size < BYTES_PER_SECOND // 100:  # under 10 ms: let ffmpeg say why
                    raise _NotClean("no samples")
    except (av.FFmpegError, ValueError, OSError) as error:
        raise _NotClean(f"{type(error).__name__}: {error}") from error
    duration_s = size / BYTES_PER_SECOND
    return AudioFile(str(dst), duration_s, time.perf_counter() - started, length_warning(duration_s, declared_s))


def _chosen_stream(media):  # noqa: ANN001, ANN202 - av containers and streams
    """The audio stream the ffmpeg command decodes: the default-flagged one first, then the most channels."""
    import av

    def score(stream) -> tuple[bool, int]:  # noqa: ANN001
        return bool(stream.disposition & av.stream.Disposition.default), stream.codec_context.channels

    return max(media.streams.audio, key=score)  # the first of equals, as ffmpeg takes it


def _declared_s(media) -> float | None:  # noqa: ANN001 - av.container.InputContainer
    """What the container declares, as `declared_duration_s` reads it: None with a video stream (not a cover)."""
    import av

    videos = [s for s in media.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    if videos or media.duration is None:
        return None
    return media.duration / av.time_base
