"""Short windows of several files in one row: one 30-s encoder pass and one decode for many short clips.

Whisper always encodes 30 s, so a 2-s clip decoded alone is mostly padding. Windows of at most
`PACK_MAX_S` (short files, the short end of a long one) that share a task, prompt and language are laid
one after another with `JOIN_GAP_S` of silence between them and decoded as one row; each word goes back to
the window whose span its aligned time overlaps most, on that window's own clock, so a file's words never
land in another file's transcript. Two windows that sound alike (the same greeting in two calls, one
recording in two formats) never share a row: Whisper writes a sentence said twice in a row once. A part
left with far fewer words than its length holds is decoded again on its own.

A clip's language is detected from an encoder pass over the clip alone, at its own length (a tenth of a
30-s pass for a 3-s clip), weighed by the languages of the files decided so far (`LanguagePrior`): base
is often unsure on a 2-s clip, and a pile of recordings mostly shares a language.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

import numpy as np

from batchscribe.audio import SAMPLE_RATE
from batchscribe.rows import RowResult
from batchscribe.transcript import FRAMES_PER_SECOND, Word
from batchscribe.windows import MAX_WINDOW_S, Piece, Window

PACK_MAX_S = 15.0  # a window at most this long may share its row with other files' windows
JOIN_GAP_S = 1.0  # silence between two files' speech in a shared row (see the README: bleed across joins)
PRIOR_WEIGHT = 5.0  # pseudo-count per language: how slowly the pile's languages outweigh a clip's own
PRIOR_MIN_PROBABILITY = 0.8  # a decision counts towards the prior when the clip alone was this sure
SHORT_DETECT_MIN_FRAMES = 100  # a clip shorter than 1 s is detected over 1 s (padded with silence)
SPEECH_FRAME_S = 0.02  # frames of the energy map that tells where each part's speech ends
SPEECH_LEVEL = 0.1  # a frame louder than this share of the part's loudest frame's RMS is speech
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
    speech_ends: tuple[float, ...]  # where each part's last loud frame ends, on the row's clock


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
    # word aligned across a join is still seen overlapping the part it belongs to.
    joined = Window(-1, joined_audio, (Piece(0.0, 0.0, len(joined_audio) / SAMPLE_RATE),))
    ends = tuple(o + _speech_end_s(p.audio) for o, p in zip(offsets, parts))
    return Packed(joined, tuple(offsets), tuple(parts), ends)


def _speech_end_s(audio: np.ndarray) -> float:
    """Where the last frame louder than SPEECH_LEVEL of the loudest one ends, in seconds into `audio`."""
    frame = int(SPEECH_FRAME_S * SAMPLE_RATE)
    n = len(audio) // frame
    if n == 0:
        return len(audio) / SAMPLE_RATE
    rms = np.sqrt((audio[: n * frame].astype(np.float32).reshape(n, frame) ** 2).mean(axis=1))
    loud = np.flatnonzero(rms >= SPEECH_LEVEL * rms.max())
    return (loud[-1] + 1) * SPEECH_FRAME_S if len(loud) else len(audio) / SAMPLE_RATE


def split_back(packed: Packed, result: RowResult) -> list[RowResult]:
    """`result` of a packed row as one result per part: each word (and its tokens) to the part whose span
    its aligned time overlaps most, timed on that part's file clock. A part that gets no words while the
    row has some is `missing`, one with fewer than THIN_WORDS_PER_S a second over THIN_MIN_S is `sparse`
    (either is decoded again on its own)."""
    words: list[list[tuple[Word, tuple[int, ...]]]] = [[] for _ in packed.parts]
    for word, tokens in zip(result.words, result.word_tokens):
        k = _owner(packed, word.start_s, word.end_s)
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


def _owner(packed: Packed, start_s: float, end_s: float) -> int:
    """The part whose span `start_s`..`end_s` overlaps most, or the next part when the word starts after
    that part's speech has ended. Cross-attention alignment places the first word after a pause early,
    in the silence before the pause: a word that starts in a part's trailing silence or in a join gap
    belongs to the part after it."""
    overlaps = [
        max(min(end_s, offset + part.duration_s) - max(start_s, offset), 0.0)
        + (1e-6 if offset <= start_s <= offset + part.duration_s else 0.0)  # a zero-length word inside it
        for offset, part in zip(packed.offsets, packed.parts)
    ]
    best = max(range(len(overlaps)), key=lambda k: overlaps[k])
    if overlaps[best] <= 0:  # wholly inside a join gap
        later = [k for k, offset in enumerate(packed.offsets) if offset >= start_s]
        return later[0] if later else len(packed.parts) - 1
    if best + 1 < len(packed.parts) and start_s >= packed.speech_ends[best]:
        return best + 1
    return best


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


def short_features(features: list[np.ndarray], durations_s: list[float]) -> np.ndarray:
    """Each clip's log-mel frames at its own length, padded to the longest of them (one short encoder batch)."""
    lengths = [max(SHORT_DETECT_MIN_FRAMES, int(np.ceil(d * FRAMES_PER_SECOND))) for d in durations_s]
    frames = min(max(lengths) + max(lengths) % 2, features[0].shape[-1])
    return np.ascontiguousarray(np.stack([f[:, :frames] for f in features]), np.float32)


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
