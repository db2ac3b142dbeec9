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

from batchscribe.atomic import atomic_path
from batchscribe.errors import MediaError, NoAudioError

SAMPLE_RATE = 16_000  # Hz, what Whisper expects
BYTES_PER_SECOND = SAMPLE_RATE * 2  # 32,000 bytes per second of s16le mono


# The decoded length may differ from what the container declares by this much before it is a warning:
# encoder delay and padding are tens of milliseconds; a bitrate-estimated mp3 duration is a few percent off.
DURATION_TOLERANCE_S = 0.5
DURATION_TOLERANCE = 0.03  # of the declared duration, when that is larger
# A decode that takes longer is stopped (ffmpeg decodes 10 h of mp3 in about a minute on one core).
DECODE_TIMEOUT_S = float(os.environ.get("BATCHSCRIBE_DECODE_TIMEOUT_S", 1800))

_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_VIDEO_STREAM = re.compile(r"Stream #.*: Video: (?!.*attached pic)")
_STREAM = re.compile(r"^\s*Stream #\d+:\d+\S*: (\w+):", re.MULTILINE)  # "Stream #0:1[0x2](eng): Audio: aac ..."
_CODEC_PREFIX = re.compile(r"^\[[^\]]+ @ 0x[0-9a-f]+\]\s*")  # "[mp3float @ 0x55ce...] " in ffmpeg's messages


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
    started = time.perf_counter()
    with atomic_path(dst, durable=False) as tmp:  # a cache file: rebuilt if lost, so not fsynced
        try:
            proc = subprocess.run(
                decode_command(src, tmp), capture_output=True, stdin=subprocess.DEVNULL, timeout=DECODE_TIMEOUT_S
            )
        except subprocess.TimeoutExpired as e:  # a stalled read (a hung network mount), a pathological file
            raise MediaError(f"ffmpeg did not finish decoding within {DECODE_TIMEOUT_S:g} s") from e
        stderr = proc.stderr.decode("utf-8", "replace").strip()
        if proc.returncode != 0:
            raise _media_error(stderr, stream_kinds(src))
        size = tmp.stat().st_size
        if size < BYTES_PER_SECOND // 100:  # under 10 ms of samples
            raise NoAudioError("the audio stream holds no samples")
    duration_s = size / BYTES_PER_SECOND
    warnings = [length_warning(duration_s, declared_duration_s(src))]
    if stderr:
        warnings.append("decoded with errors, the file may be truncated or damaged: " + _last_line(stderr))
    warning = "; ".join(w for w in warnings if w)
    return AudioFile(str(dst), duration_s, time.perf_counter() - started, warning)


def declared_duration_s(src: Path) -> float | None:
    """The duration `src`'s container declares (ffmpeg's `Duration:` line), or None when it declares none.

    None too for files with a video stream: their declared duration is the longest stream's, which an
    audio track may rightly fall short of. For an mp3 it is the Xing/Info header's frame count or, without
    one, an estimate from the bitrate and the file size.
    """
    text = _describe(src)
    match = _DURATION.search(text)
    if not match or _VIDEO_STREAM.search(text):
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def stream_kinds(src: Path) -> list[str]:
    """The kinds of the streams ffmpeg finds in `src` ("audio", "video", "data", "subtitle", ...), in order;
    empty when ffmpeg cannot open it as media at all."""
    return [kind.lower() for kind in _STREAM.findall(_describe(src))]


def _describe(src: Path) -> str:
    """What `ffmpeg -i` prints about `src`: a header read, no decoding; "" when it hangs.

    ffprobe is not always installed (imageio-ffmpeg ships only ffmpeg), so this reads ffmpeg's own
    description of its input, whose `Stream #` and `Duration:` lines every build prints alike.
    """
    argv = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-i", f"file:{src.resolve()}"]
    try:  # exits 1 ("At least one output file must be specified") after printing the input's description
        proc = subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
    except subprocess.TimeoutExpired:
        return ""
    return proc.stderr.decode("utf-8", "replace")


def length_warning(decoded_s: float, declared_s: float | None) -> str:
    """What a decoded length far from the declared one means ("" when they agree or nothing is declared)."""
    if declared_s is None or abs(declared_s - decoded_s) <= max(DURATION_TOLERANCE_S, DURATION_TOLERANCE * declared_s):
        return ""
    if decoded_s < declared_s:
        return f"decoded {decoded_s:.2f} s of the {declared_s:.2f} s the file declares: it may be truncated"
    return f"decoded {decoded_s:.2f} s, more than the {declared_s:.2f} s the file declares"


def quietest_point(samples: np.ndarray, frame: int) -> int:
    """The middle of the quietest `frame`-sample stretch of `samples` (by mean energy), as an index into it:
    where to cut audio so that no word is split."""
    region = samples[: len(samples) // frame * frame].astype(np.float32)
    return int(np.argmin((region.reshape(-1, frame) ** 2).mean(axis=1))) * frame + frame // 2


def _media_error(stderr: str, streams: list[str]) -> MediaError:
    """Why a decode failed, from what ffmpeg found in the file (its streams), not from one build's wording.

    ffmpeg builds word the same failure differently (a text file named .mp3 is "Invalid data found when
    processing input" to one and "Invalid argument" to Debian's 5.1), so only the stream list decides the
    kind; the wording adds detail where it is known.
    """
    reason = _last_line(stderr) or "no reason given"
    if streams and "audio" not in streams:
        return NoAudioError(f"no audio stream in the file ({' and '.join(sorted(set(streams)))} only)")
    if "moov atom not found" in stderr.lower():
        return MediaError("incomplete MP4/MOV (moov atom not found): the file is truncated or still being written")
    if not streams:
        return MediaError(f"not an audio or video file ffmpeg can read (no decodable stream: {reason})")
    return MediaError(f"ffmpeg could not decode the file: {reason}")


def _last_line(text: str) -> str:
    lines = [_CODEC_PREFIX.sub("", line).strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""
