"""Broadcast-style cues from timed words: each cue's words, lines and times chosen to meet a `SubtitleStyle`.

Every cue starts when its first word is spoken. Its out-time is the end of its speech, extended into the
following silence as far as its reading speed and the minimum duration need (never past the next speech,
less the minimum gap), and up to that gap when the silence is shorter than `close_gap_s` (the "chaining" of
the guides); no cue stays on screen longer than `max_duration_s`. Which words share a cue is chosen over the
whole file at once (a shortest path over word boundaries): first the fewest broken rules, then the cheapest
breaks, phrase boundaries and sentence ends being cheapest. Every word is shown once, in order.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from batchscribe.line_breaks import best_lines, break_cost
from batchscribe.styles import SubtitleStyle
from batchscribe.transcript import Transcript

RULE_COST = 1000.0  # one broken rule outweighs any choice of breaks
CUE_COST = 3.0  # each cue costs this much, so a sentence that fits stays in one cue
PAUSE_COST_PER_S = 8.0  # a cue that holds a pause shows words before they are spoken
MAX_PAUSE_IN_CUE_S = 2.0  # no cue holds a longer pause between two of its words
PAUSE_BREAK_S = 0.5  # a pause this long between two words is a good place for a cue break


@dataclass(frozen=True)
class TimedToken:
    """A word as shown: its text with one leading space where it follows a space, its times in ms."""

    text: str
    start_ms: int
    end_ms: int
    speaker: str | None = None


@dataclass(frozen=True)
class StyledCue:
    start_ms: int
    end_ms: int
    lines: tuple[str, ...]
    speaker: str | None = None
    speech_end_ms: int = 0  # when its last word ends


def tokens_of(transcript: Transcript, style: SubtitleStyle) -> list[TimedToken]:
    """The transcript's words in order, with times that never go backwards; a segment without word times is
    cut at its spaces (or into characters, when written without them) and its time shared by characters."""
    tokens: list[TimedToken] = []
    for segment in transcript.segments:
        speaker = segment.speaker
        if segment.words:
            pieces = [(w.word, w.start_s, w.end_s, w.speaker or speaker) for w in segment.words]
        else:
            pieces = _spread(segment.text, segment.start_s, segment.end_s, speaker, style)
        for text, start_s, end_s, who in pieces:
            shown = _shown(text, style)
            if not shown.strip():
                continue
            start_ms = max(round(start_s * 1000), tokens[-1].start_ms if tokens else 0)
            tokens.append(TimedToken(shown, start_ms, max(round(end_s * 1000), start_ms), who))
    if tokens:
        tokens[0] = TimedToken(tokens[0].text.lstrip(), tokens[0].start_ms, tokens[0].end_ms, tokens[0].speaker)
    return tokens


def _shown(text: str, style: SubtitleStyle) -> str:
    # The model's own spacing (a word such as "'appelle" carries none), squeezed to one space; no "-->",
    # which would end a cue.
    text = re.sub(r"--+>", "->", text.replace("\n", " "))
    core = " ".join(text.split())
    return " " + core if text[:1].isspace() and core else core


def _spread(
    text: str, start_s: float, end_s: float, speaker: str | None, style: SubtitleStyle
) -> list[tuple[str, float, float, str | None]]:
    pieces = re.findall(r"\s*\S+", text)
    if style.no_spaces:
        pieces = [p[i : i + 1] for p in pieces for i in range(len(p))]
    total = sum(len(p) for p in pieces) or 1
    spread, done = [], 0
    for piece in pieces:
        begin = start_s + (end_s - start_s) * done / total
        done += len(piece)
        spread.append((piece, begin, start_s + (end_s - start_s) * done / total, speaker))
    return spread


def layout_styled(
    tokens: Sequence[TimedToken],
    style: SubtitleStyle,
    *,
    end_ms: int,
    label: Callable[[str | None], str] = lambda speaker: "",
) -> list[StyledCue]:
    """Lay `tokens` out in cues that meet `style` wherever the words and their timing allow.

    Args:
        tokens: the words (see `tokens_of`).
        style: the rules.
        end_ms: the end of the media: the last cue may stay until then.
        label: the text shown before a cue's first line for its speaker (it takes room on that line).

    Returns:
        The cues in order.
    """
    n = len(tokens)
    if not n:
        return []
    costs = [_boundary_cost(tokens[k], tokens[k + 1], style) for k in range(n - 1)] + [0.0]
    most_chars = style.max_line_chars * style.max_lines
    best: list[tuple[float, int]] = [(0.0, 0)] + [(float("inf"), 0)] * n  # (cost, start of the last cue)
    for j in range(1, n + 1):
        span = _Span(j - 1, j, 0, tokens[j - 1].end_ms, 0)
        for i in range(j - 1, -1, -1):
            if i < j - 1:  # grow the span by one word to the left
                pause_ms = tokens[i + 1].start_ms - tokens[i].end_ms
                if tokens[i].speaker != tokens[j - 1].speaker or pause_ms > MAX_PAUSE_IN_CUE_S * 1000:
                    break
                span = _Span(
                    i, j, span.chars, max(span.speech_end_ms, tokens[i].end_ms), span.pause_ms + max(0, pause_ms)
                )
            span = _Span(i, j, span.chars + len(tokens[i].text), span.speech_end_ms, span.pause_ms)
            if i < j - 1 and span.chars > most_chars + 1:
                break
            cost = _cue_cost(tokens, costs, span, style, end_ms, label)
            if cost is not None and best[i][0] + cost < best[j][0]:
                best[j] = (best[i][0] + cost, i)
    starts, j = [], n
    while j > 0:
        starts.append(best[j][1])
        j = best[j][1]
    bounds = list(zip(reversed(starts), [*reversed(starts[:-1]), n]))
    cues = [_cue(tokens, costs, _span(tokens, i, j), style, end_ms, label) for i, j in bounds]
    needed = [_needed_ms(tokens, _span(tokens, i, j), style, len(label(tokens[i].speaker))) for i, j in bounds]
    return _lead(cues, needed, style)


@dataclass(frozen=True)
class _Span:
    """Candidate cue tokens[i:j] with what its cost needs, grown a word at a time."""

    i: int
    j: int
    chars: int  # characters of its tokens, leading spaces included
    speech_end_ms: int  # when its last word ends
    pause_ms: int  # silence between its words


def _span(tokens: Sequence[TimedToken], i: int, j: int) -> _Span:
    pause_ms = sum(max(0, tokens[k + 1].start_ms - tokens[k].end_ms) for k in range(i, j - 1))
    return _Span(i, j, sum(len(t.text) for t in tokens[i:j]), max(t.end_ms for t in tokens[i:j]), pause_ms)


def _lead(cues: list[StyledCue], needed: list[int], style: SubtitleStyle) -> list[StyledCue]:
    """Cues still too short to read start earlier, into the silence before them, by up to `max_lead_s`
    (taking back only time the previous cue does not need)."""
    lead_ms = round(style.max_lead_s * 1000)
    if not lead_ms:
        return cues
    for k, cue in enumerate(cues):
        short = needed[k] - (cue.end_ms - cue.start_ms)
        if short <= 0:
            continue
        floor = max(0, cue.start_ms - min(lead_ms, short))
        if k:
            previous = cues[k - 1]
            keep = max(previous.start_ms + needed[k - 1], previous.speech_end_ms)
            floor = max(floor, min(previous.end_ms, keep) + style.min_gap_ms)
            if floor - style.min_gap_ms < previous.end_ms:
                cues[k - 1] = replace(previous, end_ms=floor - style.min_gap_ms)
        cues[k] = replace(cue, start_ms=min(floor, cue.start_ms))
    return cues


def _boundary_cost(before: TimedToken, after: TimedToken, style: SubtitleStyle) -> float:
    cost = break_cost(before.text, after.text, style.language)
    if after.start_ms - before.end_ms >= PAUSE_BREAK_S * 1000:
        cost = min(cost, 0.5)
    return cost


def _times(
    tokens: Sequence[TimedToken], span: _Span, style: SubtitleStyle, end_ms: int, needed_ms: int
) -> tuple[int, int]:
    """A cue's in and out times: extended for reading, chained across short gaps, never into the next speech."""
    start = tokens[span.i].start_ms
    latest = tokens[span.j].start_ms - style.min_gap_ms if span.j < len(tokens) else max(end_ms, span.speech_end_ms)
    latest = min(latest, start + style.max_duration_ms)
    end = max(span.speech_end_ms, start + needed_ms)
    if latest - end < style.close_gap_s * 1000:
        end = latest
    return start, max(min(end, latest), start)


def _needed_ms(tokens: Sequence[TimedToken], span: _Span, style: SubtitleStyle, label_chars: int) -> int:
    chars = label_chars + span.chars - (1 if tokens[span.i].text.startswith(" ") else 0)
    words = span.j - span.i if not style.no_spaces else max(1, round(chars / 3))
    return max(style.min_duration_ms, style.reading_ms(chars, words))


def _lines(
    tokens: Sequence[TimedToken], costs: Sequence[float], span: _Span, style: SubtitleStyle, label_chars: int
) -> tuple[list[int], float] | None:
    if label_chars + span.chars - (1 if tokens[span.i].text.startswith(" ") else 0) <= style.max_line_chars:
        return [], 0.0  # one line
    texts = [t.text for t in tokens[span.i : span.j]]
    return best_lines(texts, costs[span.i : span.j - 1], style.max_line_chars, style.max_lines, reserve=label_chars)


def _cue_cost(
    tokens: Sequence[TimedToken],
    costs: Sequence[float],
    span: _Span,
    style: SubtitleStyle,
    end_ms: int,
    label: Callable[[str | None], str],
) -> float | None:
    """The cost of one cue (broken rules, its lines, the break that ends it); None: its words do not fit."""
    label_chars = len(label(tokens[span.i].speaker))
    layout = _lines(tokens, costs, span, style, label_chars)
    broken = 0
    if layout is None:
        if span.j - span.i > 1:
            return None
        broken += 1  # one word longer than the lines: shown alone
        layout = ([], 0.0)
    needed = _needed_ms(tokens, span, style, label_chars)
    start, end = _times(tokens, span, style, end_ms, needed)
    broken += end - start < needed  # too short to read (or under the minimum duration)
    broken += span.speech_end_ms - start > style.max_duration_ms  # speech longer than allowed
    pause_cost = PAUSE_COST_PER_S * span.pause_ms / 1000
    return broken * RULE_COST + CUE_COST + layout[1] + costs[span.j - 1] + pause_cost


def _cue(
    tokens: Sequence[TimedToken],
    costs: Sequence[float],
    span: _Span,
    style: SubtitleStyle,
    end_ms: int,
    label: Callable[[str | None], str],
) -> StyledCue:
    label_chars = len(label(tokens[span.i].speaker))
    texts = [t.text for t in tokens[span.i : span.j]]
    layout = _lines(tokens, costs, span, style, label_chars)
    starts = [0, *(layout[0] if layout else []), span.j - span.i]
    lines = tuple("".join(texts[a:b]).strip() for a, b in zip(starts, starts[1:]))
    start, end = _times(tokens, span, style, end_ms, _needed_ms(tokens, span, style, label_chars))
    return StyledCue(start, end, lines, tokens[span.i].speaker, span.speech_end_ms)
