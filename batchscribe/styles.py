"""Subtitle style presets: the line, reading-speed and timing rules that broadcasters check.

Netflix's numbers are those of its Timed Text Style Guide (general requirements and per-language templates)
as Subtitle Edit's Netflix quality checker encodes them (`src/libse/NetflixQualityCheck/` in
SubtitleEdit/subtitleedit): 42 characters a line for most languages (Japanese 23, Thai 35, Chinese and Korean
16), two lines, an adult reading speed of 20 characters a second in English (17 in most other languages),
5/6 s to 7 s on screen, at least 2 frames between subtitles at 24 fps, and gaps under half a second closed to
those 2 frames. The BBC's subtitle guidelines set 37 characters a line and 160-180 words a minute; where they
give no number, the Netflix one is used (at the BBC's 25 fps). The BBC lets a subtitle anticipate its speech
by up to 1.5 s, which fast speech needs to meet its reading speed; Netflix cues start with their speech.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

StyleName = Literal["netflix", "bbc", "none"]
STYLE_NAMES: tuple[StyleName, ...] = ("netflix", "bbc", "none")
DEFAULT_STYLE: StyleName = "netflix"

NETFLIX_FPS = 24.0
BBC_FPS = 25.0
MIN_GAP_FRAMES = 2  # frames between two subtitles, at least
NETFLIX_LINE_CHARS = 42
NETFLIX_LINE_CHARS_BY_LANGUAGE = {"ja": 23, "th": 35, "zh": 16, "ko": 16}
NETFLIX_ADULT_CPS = 17.0  # characters a second, most languages
NETFLIX_ADULT_CPS_BY_LANGUAGE = {"en": 20.0, "ar": 20.0, "hi": 22.0, "ja": 4.0, "ko": 12.0, "zh": 9.0}
BBC_LINE_CHARS = 37
BBC_MAX_WPM = 180.0  # the top of the BBC's 160-180 words a minute
BBC_MAX_LEAD_S = 1.5  # "should not anticipate speech by more than 1.5 seconds"


@dataclass(frozen=True)
class SubtitleStyle:
    """The rules one subtitle file follows, for one language (see `style_for`)."""

    name: StyleName
    max_line_chars: int  # characters a line, spaces and punctuation included
    max_lines: int  # lines a cue
    max_cps: float | None  # characters a second (all characters but line breaks); None: no limit
    max_wpm: float | None  # words a minute; None: no limit
    min_duration_s: float  # shortest time on screen
    max_duration_s: float  # longest time on screen
    frame_rate: float  # frames a second the gap rules count in
    min_gap_frames: int = MIN_GAP_FRAMES  # frames between two cues, at least
    close_gap_s: float = 0.5  # a shorter gap to the next cue is closed to `min_gap_frames`
    max_lead_s: float = 0.0  # how long before its speech a cue may appear when it needs the time to be read
    language: str = ""  # the language these numbers were picked for
    no_spaces: bool = field(default=False)  # a script written without spaces between words (ja, zh, th)

    @property
    def min_gap_ms(self) -> int:
        """The gap in whole milliseconds, rounded up: 84 ms for 2 frames at 24 fps."""
        return math.ceil(self.min_gap_frames * 1000 / self.frame_rate - 1e-9)

    @property
    def min_duration_ms(self) -> int:
        return math.ceil(self.min_duration_s * 1000 - 1e-9)

    @property
    def max_duration_ms(self) -> int:
        return math.floor(self.max_duration_s * 1000 + 1e-9)

    def reading_ms(self, chars: int, words: int) -> int:
        """The least time on screen `chars` characters in `words` words need at this reading speed."""
        needed = 0.0
        if self.max_cps:
            needed = max(needed, chars / self.max_cps)
        if self.max_wpm:
            needed = max(needed, words * 60.0 / self.max_wpm)
        return math.ceil(needed * 1000 - 1e-9)


NO_SPACE_LANGUAGES = frozenset({"ja", "zh", "th", "lo", "my", "km", "yue"})


def style_for(
    name: StyleName, language: str = "", *, max_line_chars: int | None = None, max_lines: int | None = None
) -> SubtitleStyle | None:
    """The rules of preset `name` for `language` (a code such as "en"), or None for "none".

    Args:
        name: netflix, bbc or none.
        language: the transcript's language; picks the preset's per-language line length and reading speed.
        max_line_chars: overrides the preset's line length (`--max-line-width`).
        max_lines: overrides the preset's line count (`--max-line-count`).
    """
    language = (language or "").lower().split("-")[0]
    if name == "none":
        return None
    if name == "netflix":
        style = SubtitleStyle(
            name="netflix",
            max_line_chars=NETFLIX_LINE_CHARS_BY_LANGUAGE.get(language, NETFLIX_LINE_CHARS),
            max_lines=2,
            max_cps=NETFLIX_ADULT_CPS_BY_LANGUAGE.get(language, NETFLIX_ADULT_CPS),
            max_wpm=None,
            min_duration_s=5 / 6,
            max_duration_s=7.0,
            frame_rate=NETFLIX_FPS,
        )
    elif name == "bbc":
        style = SubtitleStyle(
            name="bbc",
            max_line_chars=BBC_LINE_CHARS,
            max_lines=2,
            max_cps=None,
            max_wpm=BBC_MAX_WPM,
            min_duration_s=5 / 6,
            max_duration_s=7.0,
            frame_rate=BBC_FPS,
            max_lead_s=BBC_MAX_LEAD_S,
        )
    else:
        raise ValueError(f"unknown subtitle style: {name!r} (one of {', '.join(STYLE_NAMES)})")
    return replace(
        style,
        max_line_chars=max_line_chars or style.max_line_chars,
        max_lines=max_lines or style.max_lines,
        language=language,
        no_spaces=language in NO_SPACE_LANGUAGES,
    )
