"""Broadcast-style cue layout: reading speed, duration, gaps, line breaks and per-language presets."""

from __future__ import annotations

import io

import pytest

from batchscribe.cues import layout_cues
from batchscribe.line_breaks import BAD_BREAK_COST, break_cost
from batchscribe.options import OutputOptions
from batchscribe.styles import style_for
from batchscribe.transcript import Segment, Transcript, Word
from batchscribe.writers import WriteSRT, WriteVTT
from tests.subtitle_checker import cue_faults, parse_cues, shown_words

NETFLIX = style_for("netflix", "en")


def _speech(*phrases: tuple[float, str], seconds_per_word: float = 0.3, duration_s: float | None = None) -> Transcript:
    """One segment per phrase, its words spoken back to back from the phrase's start."""
    segments = []
    for i, (start_s, text) in enumerate(phrases):
        words = tuple(
            Word(start_s + k * seconds_per_word, start_s + (k + 1) * seconds_per_word, " " + token, 0.9)
            for k, token in enumerate(text.split())
        )
        segments.append(Segment(i, words[0].start_s, words[-1].end_s, " " + text, words=words))
    end_s = duration_s if duration_s is not None else segments[-1].end_s
    return Transcript("en", 0.99, end_s, tuple(segments))


def _srt(transcript: Transcript, **options) -> str:
    buffer = io.StringIO()
    WriteSRT().write_result(transcript, buffer, OutputOptions(**options))
    return buffer.getvalue()


def test_out_time_extends_into_silence_for_reading_speed_but_never_into_the_next_speech():
    # 26 characters spoken in 0.6 s need 1.3 s at 20 characters a second; silence follows until 5 s.
    transcript = _speech((1.0, "Unbelievable, magnificent!"), (5.0, "And then what happened next?"))
    first, second = layout_cues(transcript, style="netflix")
    assert first.start_s == 1.0 and first.end_s == pytest.approx(1.0 + 26 / 20, abs=0.002)
    # Only 0.3 s of silence after this one: chained to 2 frames before the next speech, not past it.
    tight = _speech((1.0, "Unbelievable, magnificent!"), (1.9, "And then what happened next?"))
    cues = layout_cues(tight, style="netflix")
    assert all(b.start_s - a.end_s >= 2 / 24 - 0.0005 for a, b in zip(cues, cues[1:]))
    assert shown_words(parse_cues(_srt(tight))) == tight.text.split()


def test_gaps_under_half_a_second_close_to_two_frames():
    transcript = _speech((0.0, "The first sentence ends here."), (1.9, "The second one starts soon after."))
    first, second = layout_cues(transcript, style="netflix")
    assert second.start_s == 1.9 and round((second.start_s - first.end_s) * 1000) == 84  # 2 frames at 24 fps


def test_short_cues_merge_or_extend_to_the_minimum_duration():
    # "Yes." alone would be 0.3 s on screen with speech right after it: it joins the next words.
    transcript = _speech((0.0, "Yes."), (0.35, "I think so too."), (4.0, "Fine."), duration_s=6.0)
    cues = layout_cues(transcript, style="netflix")
    assert cues[0].text.startswith("Yes.")
    assert cues[-1].text == "Fine." and cues[-1].end_s - cues[-1].start_s >= 5 / 6
    assert not any(cue_faults(parse_cues(_srt(transcript)), NETFLIX))


def test_cues_over_seven_seconds_are_split_and_lines_fit():
    text = " ".join(["word"] * 60)  # 18 s of words with no punctuation at all
    transcript = _speech((0.0, text))
    cues = parse_cues(_srt(transcript))
    assert len(cues) >= 3 and not any(cue_faults(cues, NETFLIX))
    assert shown_words(cues) == text.split()


def test_lines_break_at_phrase_boundaries_not_inside_names_or_after_articles():
    assert break_cost("Claire", "Dupont", "en") == BAD_BREAK_COST
    assert break_cost("the", "library", "en") == BAD_BREAK_COST
    assert break_cost("la", "bibliothèque", "fr") == BAD_BREAK_COST
    assert break_cost("morning,", "so", "en") < break_cost("cold", "this", "en")
    text = "I walked with Claire to the library, and we borrowed two books."
    (cue,) = layout_cues(_speech((0.0, text), seconds_per_word=0.35), style="netflix")
    top, bottom = cue.text.split("\n")
    assert top.endswith("library,") and bottom.startswith("and")


@pytest.mark.parametrize(
    ("language", "chars"), [("en", 42), ("fr", 42), ("ja", 23), ("zh", 16), ("ko", 16), ("th", 35)]
)
def test_netflix_line_length_per_language(language, chars):
    assert style_for("netflix", language).max_line_chars == chars
    assert style_for("bbc", language).max_line_chars == 37
    assert style_for("netflix", language, max_line_chars=30).max_line_chars == 30
    assert style_for("none", language) is None


def test_chinese_lines_hold_sixteen_characters_without_spaces():
    text = "今天天气很好我们一起去公园散步然后在湖边吃午饭下午再回家休息"
    words = tuple(Word(i * 0.2, (i + 1) * 0.2, ch, 0.9) for i, ch in enumerate(text))
    transcript = Transcript("zh", 0.99, 10.0, (Segment(0, 0.0, len(text) * 0.2, text, words=words),))
    cues = layout_cues(transcript, style="netflix")
    assert "".join(c.text.replace("\n", "") for c in cues) == text
    assert all(len(line) <= 16 for c in cues for line in c.text.split("\n"))


def test_segments_without_word_times_are_laid_out_too():
    transcript = Transcript("en", 0.9, 12.0, (Segment(0, 0.0, 11.0, " " + " ".join(["talk"] * 40) + "."),))
    cues = parse_cues(_srt(transcript))
    assert not any(cue_faults(cues, NETFLIX)) and len(shown_words(cues)) == 40


def test_a_speaker_label_takes_room_on_the_first_line_and_vtt_uses_voice_spans():
    words = tuple(Word(k * 0.3, (k + 1) * 0.3, " " + w, 0.9, "SPEAKER_01") for k, w in enumerate("x" * 30))
    transcript = Transcript("en", 0.9, 12.0, (Segment(0, 0.0, 9.0, " x" * 30, words=words, speaker="SPEAKER_01"),))
    srt = parse_cues(_srt(transcript))
    assert all(len(line) <= 42 for cue in srt for line in cue.lines) and srt[0].lines[0].startswith("[SPEAKER_01]: ")
    buffer = io.StringIO()
    WriteVTT().write_result(transcript, buffer, OutputOptions())
    assert buffer.getvalue().count("<v SPEAKER_01>") == len(parse_cues(buffer.getvalue()))


def test_line_limits_given_override_the_style():
    text = "I walked with Claire to the library, and we borrowed two books about the sea and its old ships."
    cues = layout_cues(
        _speech((0.0, text), seconds_per_word=0.45), style="netflix", max_line_width=20, max_line_count=3
    )
    assert all(len(c.text.split("\n")) <= 3 and all(len(line) <= 20 for line in c.text.split("\n")) for c in cues)
    assert " ".join(c.text.replace("\n", " ") for c in cues) == text
    assert cues[0].text.split("\n")[1] == "to the library,"  # the clause ends a line
