"""Speech windows: a file's audio cut into pieces of at most 30 s that the model decodes independently.

With VAD on, Silero finds the speech, each region padded on both sides (a gap shorter than twice the
padding is shared between its neighbours), and consecutive regions are joined, silence left out, into
windows of at most `MAX_WINDOW_S`; a window remembers where each of its pieces sits in the file, so word
times map back to the file's own clock. Cuts fall only in silence between regions, so no word is clipped
at a window edge. Without VAD, the audio is cut into 30-s windows at the quietest point near each edge.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from batchscribe.audio import SAMPLE_RATE, quietest_point

MAX_WINDOW_S = 30.0  # Whisper's receptive field: one encoder pass sees 30 s
SPEECH_PAD_MS = 400  # padding on each side of a VAD speech region
MIN_SILENCE_MS = 160  # shorter pauses do not split speech regions
CUT_SEARCH_S = 5.0  # without VAD: look for the quietest point in the last 5 s of a window
QUIET_FRAME_S = 0.1
QUIET_PEAK = 0.1  # audio whose loud peaks stay under -20 dBFS (a far microphone) is raised ...
TARGET_PEAK = 0.5  # ... to peaks at -6 dBFS ...
MAX_GAIN = 32.0  # ... by at most 30 dB, so that a quiet room's noise is not made into speech
MIN_HALF_S = 1.0  # a window is split in two (for a second opinion) only when each half holds this much


@dataclass(frozen=True)
class Piece:
    """A stretch of the file copied into a window: `window_s` in the window is `file_s` in the file."""

    window_s: float
    file_s: float
    duration_s: float


@dataclass(frozen=True)
class Window:
    """Up to 30 s of audio to decode in one pass, with the map from its clock back to the file's."""

    index: int  # position in the file, from 0
    audio: np.ndarray  # float32, 16 kHz mono
    pieces: tuple[Piece, ...]

    @property
    def duration_s(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    @property
    def file_start_s(self) -> float:
        return self.pieces[0].file_s

    def to_file_time(self, window_s: float, piece: int | None = None) -> float:
        """The file time of `window_s`, through `piece` (default: the piece that holds it)."""
        index = self.piece_at(window_s) if piece is None else piece
        p = self.pieces[index]
        return p.file_s + min(max(window_s - p.window_s, 0.0), p.duration_s)

    def piece_at(self, window_s: float) -> int:
        starts = [p.window_s for p in self.pieces]
        return max(bisect.bisect_right(starts, window_s) - 1, 0)


def louder(audio: np.ndarray) -> np.ndarray:
    """`audio` raised to a level VAD and Whisper hear well when its loud peaks are quiet; else as it is."""
    if not len(audio):
        return audio
    peak = float(np.percentile(np.abs(audio), 99.9))
    if peak >= QUIET_PEAK or peak <= 0:
        return audio
    return (audio * min(TARGET_PEAK / peak, MAX_GAIN)).astype(np.float32)


def split_window(window: Window) -> tuple[Window, Window] | None:
    """`window` cut in two near its middle, for a second decode of shorter rows: at the pause between two of
    its pieces nearest the middle when one lies in its middle half, else at the quietest point there.
    None when a half would hold less than MIN_HALF_S."""
    n = len(window.audio)
    low, high = n // 4, 3 * n // 4
    if n < 2 * MIN_HALF_S * SAMPLE_RATE:
        return None
    joins = [round(p.window_s * SAMPLE_RATE) for p in window.pieces[1:]]
    inside = [j for j in joins if low <= j <= high]
    if inside:
        cut = min(inside, key=lambda j: abs(j - n // 2))
    else:
        cut = low + quietest_point(window.audio[low:high], int(QUIET_FRAME_S * SAMPLE_RATE))
    cut = min(max(cut, int(MIN_HALF_S * SAMPLE_RATE)), n - int(MIN_HALF_S * SAMPLE_RATE))
    return _part(window, 0, cut), _part(window, cut, n)


def _part(window: Window, start: int, end: int) -> Window:
    """Samples `start`..`end` of `window` as a window of their own, keeping the map to the file's clock."""
    start_s, end_s = start / SAMPLE_RATE, end / SAMPLE_RATE
    pieces = []
    for p in window.pieces:
        lo, hi = max(p.window_s, start_s), min(p.window_s + p.duration_s, end_s)
        if hi > lo:
            pieces.append(Piece(lo - start_s, p.file_s + lo - p.window_s, hi - lo))
    return Window(window.index, np.ascontiguousarray(window.audio[start:end]), tuple(pieces))


def speech_windows(audio: np.ndarray, *, vad: bool, offset_s: float = 0.0, first_index: int = 0) -> list[Window]:
    """Cut `audio` (whose first sample is `offset_s` into the file) into windows of at most MAX_WINDOW_S.

    Args:
        audio: float32 samples at 16 kHz.
        vad: skip non-speech with Silero VAD; False keeps every sample.
        offset_s: file time of `audio[0]` (for a long file read in parts).
        first_index: index of the first window returned.

    Returns:
        Windows in file order; none when VAD finds no speech.
    """
    audio = louder(audio)
    regions = _speech_regions(audio) if vad else list(_fixed_regions(audio))
    windows: list[Window] = []
    for group in _pack(regions):
        pieces, parts, at = [], [], 0
        for start, end in group:
            pieces.append(Piece(at / SAMPLE_RATE, offset_s + start / SAMPLE_RATE, (end - start) / SAMPLE_RATE))
            parts.append(audio[start:end])
            at += end - start
        samples = np.concatenate(parts) if len(parts) > 1 else parts[0]
        windows.append(Window(first_index + len(windows), np.ascontiguousarray(samples, np.float32), tuple(pieces)))
    return windows


def _speech_regions(audio: np.ndarray) -> list[tuple[int, int]]:
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(
        max_speech_duration_s=MAX_WINDOW_S, min_silence_duration_ms=MIN_SILENCE_MS, speech_pad_ms=SPEECH_PAD_MS
    )
    return [(r["start"], r["end"]) for r in get_speech_timestamps(audio, options) if r["end"] > r["start"]]


def _fixed_regions(audio: np.ndarray) -> Iterator[tuple[int, int]]:
    window, search, frame = (int(x * SAMPLE_RATE) for x in (MAX_WINDOW_S, CUT_SEARCH_S, QUIET_FRAME_S))
    start = 0
    while start < len(audio):
        end = min(start + window, len(audio))
        if end < len(audio):
            end = end - search + quietest_point(audio[end - search : end], frame)
        yield start, end
        start = end


def _pack(regions: list[tuple[int, int]]) -> Iterator[list[tuple[int, int]]]:
    """Consecutive regions grouped so that each group's speech adds up to at most MAX_WINDOW_S."""
    limit = int(MAX_WINDOW_S * SAMPLE_RATE)
    group: list[tuple[int, int]] = []
    total = 0
    # A region longer than a window (VAD found no pause to split at) is cut, never shortened.
    pieces = ((s, min(s + limit, end)) for start, end in regions for s in range(start, end, limit))
    for start, end in pieces:
        if group and total + end - start > limit:
            yield group
            group, total = [], 0
        group.append((start, end))
        total += end - start
    if group:
        yield group
