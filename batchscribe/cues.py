"""Subtitle cues: a transcript's timed words laid out into cues that meet a style's rules (`batchscribe.styles`),
or, with style "none", its segments cut only by the line limits given."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from batchscribe.cue_layout import layout_styled, tokens_of
from batchscribe.styles import StyleName, style_for
from batchscribe.transcript import Segment, Transcript, Word

MAX_PAUSE_S = 3.0  # a silence longer than this between words starts a new cue


@dataclass(frozen=True)
class Cue:
    start_s: float
    end_s: float
    text: str  # one or more lines joined by "\n", never empty, never containing "-->"
    speaker: str | None = None  # SPEAKER_00 ... when diarized


def format_timestamp(seconds: float, *, always_include_hours: bool = False, decimal_marker: str = ".") -> str:
    """`[HH:]MM:SS.mmm` like whisper's, with negative times clamped to zero."""
    total_ms = round(max(seconds, 0.0) * 1000)
    hours, total_ms = divmod(total_ms, 3_600_000)
    minutes, total_ms = divmod(total_ms, 60_000)
    secs, ms = divmod(total_ms, 1000)
    hours_marker = f"{hours:02d}:" if always_include_hours or hours > 0 else ""
    return f"{hours_marker}{minutes:02d}:{secs:02d}{decimal_marker}{ms:03d}"


def layout_cues(
    transcript: Transcript,
    *,
    max_line_width: int | None = None,
    max_line_count: int | None = None,
    style: StyleName = "none",
    label: Callable[[str | None], str] = lambda speaker: "",
) -> list[Cue]:
    """Split a transcript into subtitle cues.

    Args:
        transcript: the transcript to lay out.
        max_line_width: characters per line; None: the style's (unbroken lines with style "none").
        max_line_count: lines per cue; None: the style's (with "none", all of a segment's lines in one cue,
            unless a pause splits it).
        style: "netflix" or "bbc": cues laid out from the timed words by the preset's line, reading-speed and
            timing rules for the transcript's language (`batchscribe.cue_layout`); "none": one cue per
            segment (or per `max_line_count` lines of it), never spanning two segments.
        label: what a cue's speaker adds before its first line (counted in the line's length).

    Returns:
        Cues in order, every word once. With style "none", word timestamps and a limit, words are
        regrouped into lines at word boundaries; without words, each segment's text is wrapped and its
        time span shared between its cues in proportion to their characters.
    """
    rules = style_for(style, transcript.language, max_line_chars=max_line_width, max_lines=max_line_count)
    if rules is not None:
        end_ms = round(transcript.duration_s * 1000)
        styled = layout_styled(tokens_of(transcript, rules), rules, end_ms=end_ms, label=label)
        return [Cue(c.start_ms / 1000, c.end_ms / 1000, "\n".join(c.lines), c.speaker) for c in styled]
    cues: list[Cue] = []
    for segment in transcript.segments:
        if segment.words and (max_line_width or max_line_count):
            layout = _word_cues(segment.words, max_line_width, max_line_count)
        else:
            layout = _segment_cues(segment, max_line_width, max_line_count)
        cues += [replace(cue, speaker=segment.speaker) for cue in layout] if segment.speaker else layout
    return [cue for cue in cues if cue.text]


def _clean(text: str) -> str:
    # One line, single spaces, and no "-->", which would end an SRT/VTT cue's text.
    return re.sub(r"--+>", "->", " ".join(text.split()))


def _cue(start_s: float, end_s: float, lines: Iterable[str]) -> Cue:
    start_s = max(start_s, 0.0)
    return Cue(start_s, max(end_s, start_s), "\n".join(line for line in lines if line))


def _line(words: Sequence[Word]) -> str:
    # Whisper's words carry their own leading space (none in languages written without spaces).
    return _clean("".join(w.word for w in words))


def _words_cue(lines: list[list[Word]]) -> Cue:
    return _cue(lines[0][0].start_s, lines[-1][-1].end_s, (_line(line) for line in lines))


def _word_cues(words: Sequence[Word], width: int | None, count: int | None) -> list[Cue]:
    cues: list[Cue] = []
    lines: list[list[Word]] = []  # the cue being filled
    for word in words:
        if not word.word.strip():
            continue
        if lines and word.start_s - lines[-1][-1].end_s > MAX_PAUSE_S:
            cues.append(_words_cue(lines))
            lines = []
        if not lines:
            lines = [[word]]
        elif width is None or len(_line([*lines[-1], word])) <= width:
            lines[-1].append(word)
        elif count is None or len(lines) < count:
            lines.append([word])
        else:
            cues.append(_words_cue(lines))
            lines = [[word]]
    if lines:
        cues.append(_words_cue(lines))
    return cues


def _segment_cues(segment: Segment, width: int | None, count: int | None) -> list[Cue]:
    text = _clean(segment.text)
    if not text:
        return []
    lines = textwrap.wrap(text, width) if width else [text]
    per_cue = count or len(lines)
    total_chars = sum(len(line) for line in lines)
    duration_s = max(segment.end_s - segment.start_s, 0.0)
    cues, done_chars = [], 0
    for i in range(0, len(lines), per_cue):
        chunk = lines[i : i + per_cue]
        start_s = segment.start_s + duration_s * done_chars / total_chars
        done_chars += sum(len(line) for line in chunk)
        cues.append(_cue(start_s, segment.start_s + duration_s * done_chars / total_chars, chunk))
    return cues


def speaker_prefix(speaker: str | None) -> str:
    """`[SPEAKER_00]: ` for SRT and TXT lines; nothing when not diarized."""
    return f"[{speaker}]: " if speaker else ""
