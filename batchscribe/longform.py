"""Long files in bounded memory: transcribe decoded PCM in windows cut at quiet points, then stitch.

A 10-hour file is 576 M samples, 2.3 GB as float32; windows of 20 minutes hold 77 MB at a time. The
PCM stays on disk (int16), and each window is read and converted to float32 only while it is used.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

import numpy as np

from batchscribe.audio import SAMPLE_RATE, quietest_point
from batchscribe.engines.base import Engine
from batchscribe.options import TranscribeOptions
from batchscribe.transcript import FRAMES_PER_SECOND, Segment, Transcript, Word

WINDOW_S = 20 * 60  # 20 minutes of audio per window (77 MB as float32)
CUT_SEARCH_S = 30  # look for the quietest point in the last 30 s of a window
QUIET_FRAME_S = 0.2  # energy is measured over 200 ms frames


def pcm_windows(path: str | Path, window_s: float = WINDOW_S) -> Iterator[tuple[float, np.ndarray]]:
    """Yield (offset_s, float32 samples) windows of a raw s16le mono 16 kHz file, cut at quiet points.

    Windows are read with plain reads, not a memory map: a map's pages stay resident (and counted in the
    process's RSS) after use, so a map would grow with the file's length.
    """
    window, search, frame = (
        int(window_s * SAMPLE_RATE),
        int(CUT_SEARCH_S * SAMPLE_RATE),
        int(QUIET_FRAME_S * SAMPLE_RATE),
    )
    with open(path, "rb") as fh:
        total = os.fstat(fh.fileno()).st_size // 2
        start = 0
        while start < total:
            end = min(start + window, total)
            pcm = _read(fh, start, end)
            if end < total and end - start > search:
                end = end - search + quietest_point(pcm[-search:], frame)
            yield start / SAMPLE_RATE, pcm[: end - start].astype(np.float32) / 32768.0
            start = end


def _read(fh: BinaryIO, start: int, end: int) -> np.ndarray:
    fh.seek(start * 2)
    return np.frombuffer(fh.read((end - start) * 2), dtype="<i2")


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
        seek=None if segment.seek is None else segment.seek + round(offset_s * FRAMES_PER_SECOND),
        words=tuple(Word(w.start_s + offset_s, w.end_s + offset_s, w.word, w.probability) for w in segment.words),
    )
