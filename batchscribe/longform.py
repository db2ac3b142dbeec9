"""Long files in bounded memory: transcribe decoded PCM in windows cut at quiet points, then stitch.

A 10-hour file is 576 M samples, 2.3 GB as float32; windows of 20 minutes hold 77 MB at a time. The
PCM stays on disk (memory-mapped int16), and each window is converted to float32 only while it is used.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from batchscribe.engines.base import SAMPLE_RATE, Engine
from batchscribe.options import TranscribeOptions
from batchscribe.transcript import Segment, Transcript, Word

WINDOW_S = 20 * 60  # 20 minutes of audio per window (77 MB as float32)
CUT_SEARCH_S = 30  # look for the quietest point in the last 30 s of a window
QUIET_FRAME_S = 0.2  # energy is measured over 200 ms frames


def pcm_windows(path: str | Path, window_s: float = WINDOW_S) -> Iterator[tuple[float, np.ndarray]]:
    """Yield (offset_s, float32 samples) windows of a raw s16le mono 16 kHz file, cut at quiet points."""
    pcm = np.memmap(path, dtype="<i2", mode="r")
    window, search, frame = (
        int(window_s * SAMPLE_RATE),
        int(CUT_SEARCH_S * SAMPLE_RATE),
        int(QUIET_FRAME_S * SAMPLE_RATE),
    )
    start = 0
    while start < len(pcm):
        end = min(start + window, len(pcm))
        if end < len(pcm) and end - start > search:
            end = _quietest_cut(pcm, end - search, end, frame)
        yield start / SAMPLE_RATE, np.asarray(pcm[start:end], dtype=np.float32) / 32768.0
        start = end


def _quietest_cut(pcm: np.ndarray, lo: int, hi: int, frame: int) -> int:
    region = np.asarray(pcm[lo:hi], dtype=np.float32)
    frames = region[: len(region) // frame * frame].reshape(-1, frame)
    quietest = int(np.argmin((frames**2).mean(axis=1)))
    return lo + quietest * frame + frame // 2


def transcribe_pcm(
    engine: Engine, path: str | Path, options: TranscribeOptions, window_s: float = WINDOW_S
) -> Transcript:
    """Transcribe a raw PCM file window by window; short files are one window. Language is detected once."""
    segments: list[Segment] = []
    language, probability, duration_s = options.language, 1.0, 0.0
    for offset_s, samples in pcm_windows(path, window_s):
        part = engine.transcribe(samples, options.model_copy(update={"language": language}))
        if language is None:  # detected on the first window, then kept for the rest of the file
            language, probability = part.language, part.language_probability
        for segment in part.segments:
            segments.append(_shift(segment, offset_s, len(segments)))
        duration_s = offset_s + part.duration_s
    return Transcript(language or "", probability, duration_s, tuple(segments))


def _shift(segment: Segment, offset_s: float, first_id: int) -> Segment:
    if offset_s == 0 and first_id == 0:
        return segment
    return replace(
        segment,
        id=first_id,
        start_s=segment.start_s + offset_s,
        end_s=segment.end_s + offset_s,
        words=tuple(Word(w.start_s + offset_s, w.end_s + offset_s, w.word, w.probability) for w in segment.words),
    )
