"""Short windows of several files in one row: one 30-s encoder pass and one decode for many short clips.

Whisper always encodes 30 s, so a 2-s clip decoded alone is mostly padding. Windows of at most
`PACK_MAX_S` (short files, the short end of a long one) that share a task, prompt and language are laid
one after another with `JOIN_GAP_S` of silence between them and decoded as one row; each word goes back to
the window its aligned end time falls in, on that window's own clock, so a file's words never
land in another file's transcript. Two windows that sound alike (the same greeting in two calls, one
recording in two formats) never share a row: Whisper writes a sentence said twice in a row once. A part
left with far fewer words than its length holds is decoded again on its own.

A clip's language is detected from a short encoder pass over the clip alone, its length rounded up to
`DETECT_FRAMES` (4 s for a clip of 1-3 s: a seventh of a 30-s pass), weighed by the languages of the files
decided so far (`LanguagePrior`): base is often unsure on a 2-s clip, and a pile of recordings mostly
shares a language. The length never depends on the clips that share the pass, so a clip's language does
not either.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from batchscribe.audio import SAMPLE_RATE
from batchscribe.rows import RowResult
from batchscribe.transcript import FRAMES_PER_SECOND, N_FRAMES, Word
from batchscribe.windows import MAX_WINDOW_S, Piece, Window

PACK_MAX_S = 15.0  # a window at most this long may share its row with other files' windows
JOIN_GAP_S = 1.0  # silence between two files' speech in a shared row (see the README: bleed across joins)
PRIOR_WEIGHT = 5.0  # pseudo-count per language: how slowly the pile's languages outweigh a clip's own
PRIOR_MIN_PROBABILITY = 0.8  # a decision counts towards the prior when the clip alone was this sure
DETECT_FRAMES = 400  # a clip's language is detected over its length rounded up to this many mel frames
THIN_MIN_S = 2.5  # a part at least this long ...
THIN_WORDS_PER_S = 0.6  # ... that gets fewer words a second than this is decoded again on its own
ALIKE_FRAME_S = 0.1  # the log-mel frames compared between two windows are averaged over this long ...
ALIKE_MAX_SHIFT = 3  # ... and slid up to this many of them against each other
ALIKE_CORRELATION = 0.85  # windows whose frames correlate this well sound alike (the same speech)


@dataclass(frozen=True)
class Packed:
    """Several windows joined into one row, on the row's own clock."""

    window: Window
    offsets: tuple[float, ...]  # where each part starts in the row, in seconds
    parts: tuple[Window, ...]


def fits(total_s: float, window: Window) -> bool:
    """Whether `window` still fits in a row that already holds `total_s` seconds (0: an empty row)."""
    return total_s + (JOIN_GAP_S if total_s else 0.0) + window.duration_s <= MAX_WINDOW_S


def pack(parts: list[Window]) -> Packed:
    """`parts` laid end to end with JOIN_GAP_S of silence between them."""
    gap = np.zeros(int(JOIN_GAP_S * SAMPLE_RATE), np.float32)
    audio, offsets, at = [], [], 0
    for i, part in enumerate(parts):
        if i:
            audio.append(gap)
            at += len(gap)
        offsets.append(at / SAMPLE_RATE)
        audio.append(part.audio)
        at += len(part.audio)
    joined_audio = np.ascontiguousarray(np.concatenate(audio), np.float32)
    # One piece over the whole row: the decoder's word times stay on the row's clock, gaps included, so a
    # word aligned across a join keeps the end that tells its part.
    joined = Window(-1, joined_audio, (Piece(0.0, 0.0, len(joined_audio) / SAMPLE_RATE),))
    return Packed(joined, tuple(offsets), tuple(parts))


def split_back(packed: Packed, result: RowResult) -> list[RowResult]:
    """`result` of a packed row as one result per part: each word (and its tokens) to the part it ends in
    (`_owner`), timed on that part's file clock. A part that gets no words while the row has some is
    `missing`, one with fewer than THIN_WORDS_PER_S a second over THIN_MIN_S is `sparse` (either is
    decoded again on its own)."""
    words: list[list[tuple[Word, tuple[int, ...]]]] = [[] for _ in packed.parts]
    for word, tokens in zip(result.words, result.word_tokens):
        k = _owner(packed, word.end_s)
        part, offset = packed.parts[k], packed.offsets[k]
        start = min(max(word.start_s - offset, 0.0), part.duration_s)
        end = min(max(word.end_s - offset, start), part.duration_s)
        piece = part.piece_at((start + end) / 2)
        timed = replace(
            word,
            start_s=round(part.to_file_time(start, piece), 3),
            end_s=round(part.to_file_time(end, piece), 3),
        )
        words[k].append((timed, tokens))
    out = []
    for part, own in zip(packed.parts, words):
        verdict = result.verdict
        if verdict == "ok" and result.words and not own:
            verdict = "missing"
        elif verdict == "ok" and part.duration_s >= THIN_MIN_S and len(own) < THIN_WORDS_PER_S * part.duration_s:
            verdict = "sparse"
        out.append(
            replace(
                result,
                words=tuple(w for w, _ in own),
                word_tokens=tuple(t for _, t in own),
                tokens=tuple(t for _, ts in own for t in ts),
                seek=round(part.file_start_s * FRAMES_PER_SECOND),
                verdict=verdict,
                shared=len(packed.parts),
            )
        )
    return out


def _owner(packed: Packed, end_s: float) -> int:
    """The part a word ending at `end_s` belongs to: the last one that starts at or before its end.
    Cross-attention alignment gives the silence of a join to the word after it, whose start moves back
    into the gap or into the previous part's speech; its end stays where it was said. A word that ends in
    a join gap ends the part before it. Measured on 32 packed rows of 1-3 s clips: 14.4% WER, against 16.6%
    when a word went to the part its span overlapped most (docs/performance.md)."""
    return max((k for k, offset in enumerate(packed.offsets) if offset <= end_s), default=0)


def fingerprint(features: np.ndarray, duration_s: float) -> np.ndarray:
    """A window's log-mel frames over its speech, averaged over ALIKE_FRAME_S: what `alike` compares."""
    step = round(ALIKE_FRAME_S * FRAMES_PER_SECOND)
    n = max(min(int(duration_s * FRAMES_PER_SECOND), features.shape[-1]) // step, 1)
    return features[:, : n * step].reshape(features.shape[0], n, step).mean(axis=2)


def alike(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two fingerprints are the same speech: frames correlated at least ALIKE_CORRELATION, slid up
    to ALIKE_MAX_SHIFT frames against each other (VAD may cut the same words a little apart)."""
    for shift in range(-ALIKE_MAX_SHIFT, ALIKE_MAX_SHIFT + 1):
        x, y = (a[:, shift:], b) if shift >= 0 else (a, b[:, -shift:])
        n = min(x.shape[1], y.shape[1])
        if n < ALIKE_MAX_SHIFT:
            continue
        x = x[:, :n] - x[:, :n].mean(axis=1, keepdims=True)
        y = y[:, :n] - y[:, :n].mean(axis=1, keepdims=True)
        norm = float(np.sqrt((x * x).sum() * (y * y).sum()))
        if norm > 0 and float((x * y).sum()) / norm >= ALIKE_CORRELATION:
            return True
    return False


def detect_frames(duration_s: float) -> int:
    """Mel frames a clip's language is detected over: its length rounded up to DETECT_FRAMES, at most 30 s.
    The silence after a short clip matters: at its own length base named the wrong language for 45% of
    150 clips of 1-3 s met alone, at 4 s for 18% (docs/performance.md)."""
    frames = int(np.ceil(duration_s * FRAMES_PER_SECOND / DETECT_FRAMES)) * DETECT_FRAMES
    return min(max(frames, DETECT_FRAMES), N_FRAMES)


def short_features(features: list[np.ndarray], durations_s: list[float]) -> list[tuple[list[int], np.ndarray]]:
    """Clips' log-mel frames for their language passes, grouped by `detect_frames`: (the clips' indices,
    their frames stacked) per length, one short encoder batch each."""
    groups: dict[int, list[int]] = {}
    for i, duration in enumerate(durations_s):
        groups.setdefault(min(detect_frames(duration), features[i].shape[-1]), []).append(i)
    return [
        (indices, np.ascontiguousarray(np.stack([features[i][:, :frames] for i in indices]), np.float32))
        for frames, indices in sorted(groups.items())
    ]


def clip_languages(
    features: list[np.ndarray], durations_s: list[float], probabilities: Callable[[np.ndarray], list[dict[str, float]]]
) -> list[dict[str, float]]:
    """Every language's probability for each clip, from one short pass per `detect_frames` length
    (`probabilities`: a pass over stacked frames, one dict per row)."""
    found: list[dict[str, float]] = [{} for _ in features]
    for indices, frames in short_features(features, durations_s):
        for k, probs in zip(indices, probabilities(frames)):
            found[k] = probs
    return found


class LanguagePrior:
    """The languages of the files decided so far, as a prior for the next unsure clip."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def observe(self, language: str, probability: float) -> None:
        if probability >= PRIOR_MIN_PROBABILITY:
            self.counts[language] += 1

    def choose(self, probabilities: dict[str, float]) -> tuple[str, float]:
        """The language of a clip from its own `probabilities` and the prior; the probability is the clip's."""
        best = max(probabilities, key=lambda lang: probabilities[lang] * (self.counts[lang] + PRIOR_WEIGHT))
        return best, probabilities[best]
