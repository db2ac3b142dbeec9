"""A subtitle checker: reads an SRT or VTT file back and checks each cue against a style's rules.

It is written apart from the layout code (it parses the written file, as Subtitle Edit's Netflix quality
check does) so that the layout is judged by what a viewer gets: line length and count, reading speed
(all characters but line breaks), minimum and maximum duration, and the gap to the next cue in frames.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from batchscribe.styles import SubtitleStyle

_TIME = re.compile(r"(?:(\d+):)?(\d\d):(\d\d)[,.](\d\d\d)")
_TAG = re.compile(r"<[^>]+>")


@dataclass(frozen=True)
class ParsedCue:
    start_ms: int
    end_ms: int
    lines: tuple[str, ...]


def _ms(stamp: str) -> int:
    match = _TIME.fullmatch(stamp.strip())
    assert match, f"bad timestamp {stamp!r}"
    hours, minutes, seconds, millis = match.groups()
    return ((int(hours or 0) * 60 + int(minutes)) * 60 + int(seconds)) * 1000 + int(millis)


def parse_cues(text: str) -> list[ParsedCue]:
    """The cues of an SRT or WebVTT file, their text lines without markup (VTT entities unescaped)."""
    cues = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = block.splitlines()
        timing = next((k for k, line in enumerate(lines) if "-->" in line), None)
        if timing is None:
            continue  # the WEBVTT header
        start, end = lines[timing].split("-->")
        shown = [_TAG.sub("", line).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&") for line in lines]
        cues.append(ParsedCue(_ms(start), _ms(end.split()[0]), tuple(shown[timing + 1 :])))
    return cues


def cue_faults(cues: list[ParsedCue], style: SubtitleStyle) -> list[set[str]]:
    """Per cue, the rules it breaks: line_length, line_count, reading_speed, min_duration, max_duration, gap."""
    faults: list[set[str]] = []
    for k, cue in enumerate(cues):
        broken = set()
        duration_ms = cue.end_ms - cue.start_ms
        if any(len(line) > style.max_line_chars for line in cue.lines):
            broken.add("line_length")
        if len(cue.lines) > style.max_lines:
            broken.add("line_count")
        chars = sum(len(line) for line in cue.lines)
        words = sum(len(line.split()) for line in cue.lines)
        if style.max_cps and chars * 1000 > style.max_cps * duration_ms:
            broken.add("reading_speed")
        if style.max_wpm and words * 60_000 > style.max_wpm * duration_ms:
            broken.add("reading_speed")
        if duration_ms < style.min_duration_s * 1000:
            broken.add("min_duration")
        if duration_ms > style.max_duration_s * 1000:
            broken.add("max_duration")
        if k + 1 < len(cues) and (cues[k + 1].start_ms - cue.end_ms) * style.frame_rate < style.min_gap_frames * 1000:
            broken.add("gap")
        faults.append(broken)
    return faults


def fault_counts(faults: list[set[str]]) -> Counter:
    """How many cues break each rule."""
    return Counter(rule for broken in faults for rule in broken)


def shown_words(cues: list[ParsedCue], *, label: re.Pattern[str] | None = None) -> list[str]:
    """Every word shown, in order (a speaker label such as `[SPEAKER_00]: ` left out when `label` matches it)."""
    words = []
    for cue in cues:
        text = " ".join(cue.lines)
        if label is not None:
            text = label.sub("", text)
        words += text.split()
    return words
