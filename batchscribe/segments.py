"""Segments built from timed words: short enough for a subtitle cue, split where a reader expects a break.

A decoded window holds up to 30 s of text. Its words (each timed by alignment) are grouped into segments
that end at a sentence end, at a pause, or before a segment would pass the cue limits (two lines of 42
characters, 7 seconds: common broadcast subtitle guidelines); a segment that must break for length breaks
after a comma when one lies in its second half.
"""

from __future__ import annotations

from collections.abc import Sequence

from batchscribe.transcript import Word

MAX_SEGMENT_CHARS = 84  # two subtitle lines of 42 characters
MAX_SEGMENT_S = 7.0  # longest time a cue stays on screen
PAUSE_S = 0.8  # a silence at least this long between two words ends a segment
SENTENCE_ENDS = (".", "!", "?", "。", "！", "？", "…", "؟", "।")
CLAUSE_ENDS = (",", ";", ":", "，", "、", "；", "：")


def split_words(words: Sequence[Word]) -> list[list[Word]]:
    """Group `words` (in time order) into segments; every word lands in exactly one segment."""
    segments: list[list[Word]] = []
    current: list[Word] = []
    for word in words:
        if current and _breaks_before(current, word):
            head, current = _split_for_length(current, word)
            segments.append(head)
        current.append(word)
        if word.word.strip().endswith(SENTENCE_ENDS):
            segments.append(current)
            current = []
    if current:
        segments.append(current)
    return segments


def _text(words: Sequence[Word]) -> str:
    return "".join(w.word for w in words).strip()


def _breaks_before(current: list[Word], word: Word) -> bool:
    if word.start_s - current[-1].end_s >= PAUSE_S:
        return True
    too_long = len(_text([*current, word])) > MAX_SEGMENT_CHARS
    return too_long or word.end_s - current[0].start_s > MAX_SEGMENT_S


def _split_for_length(current: list[Word], word: Word) -> tuple[list[Word], list[Word]]:
    """Where `current` ends when `word` does not fit: after its last clause end in the second half, if any."""
    if word.start_s - current[-1].end_s >= PAUSE_S:
        return current, []
    half = len(_text(current)) / 2
    for i in range(len(current) - 1, 0, -1):
        if current[i - 1].word.strip().endswith(CLAUSE_ENDS) and len(_text(current[:i])) >= half:
            return current[:i], current[i:]
    return current, []
