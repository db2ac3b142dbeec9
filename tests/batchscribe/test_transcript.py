"""Our JSON read back by openai-whisper's own writers, whisper's `seek`, and times clamped to the media."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import webvtt
from whisper.utils import get_writer

from batchscribe.options import OutputOptions
from batchscribe.transcript import N_FRAMES, Segment, Transcript, Word
from batchscribe.writers import write_outputs

SPOKEN = (
    (0.0, 4.0, " One small step for a man,"),
    (4.0, 6.0, " ..."),  # punctuation only: no words even with word timestamps
    (31.0, 36.5, " one giant leap for mankind."),
    (62.0, 65.0, " The Eagle has landed."),
)


def _words(start_s: float, end_s: float, text: str) -> tuple[Word, ...]:
    tokens = [t for t in text.split() if any(c.isalnum() for c in t)]
    step_s = (end_s - start_s) / max(len(tokens), 1)
    return tuple(Word(start_s + i * step_s, start_s + (i + 1) * step_s, f" {t}", 0.9) for i, t in enumerate(tokens))


def _transcript(with_words: bool, duration_s: float = 66.0) -> Transcript:
    segments = tuple(
        Segment(id=i, start_s=start, end_s=end, text=text, words=_words(start, end, text) if with_words else ())
        for i, (start, end, text) in enumerate(SPOKEN)
    )
    return Transcript("en", 0.99, duration_s, segments)


def _seconds(timestamp: str) -> float:
    """`HH:MM:SS.mmm` (as webvtt-py gives a cue's start and end) to seconds."""
    hours, minutes, seconds = timestamp.replace(",", ".").split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _our_json(transcript: Transcript, tmp_path: Path) -> dict:
    path = write_outputs(transcript, "talk.mp3", str(tmp_path / "ours"), OutputOptions(formats=("json",)))["json"]
    return json.loads(Path(path).read_text(encoding="utf-8"))


@pytest.mark.parametrize("with_words", [True, False], ids=["word-timestamps", "segments-only"])
def test_openai_whisper_writers_lay_out_our_json(with_words: bool, tmp_path: Path) -> None:
    result = _our_json(_transcript(with_words), tmp_path)
    if with_words:  # openai-whisper writes the key on every segment once words were asked for
        assert all("words" in s for s in result["segments"]) and result["segments"][1]["words"] == []
    else:
        assert all("words" not in s for s in result["segments"])

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    options = {"max_line_width": 16, "max_line_count": 2, "highlight_words": False, "max_words_per_line": None}
    get_writer("all", str(theirs))(result, "talk.mp3", options)

    srt = webvtt.from_srt(str(theirs / "talk.srt"))
    vtt = webvtt.read(str(theirs / "talk.vtt"))
    assert [c.text for c in srt] == [c.text for c in vtt]
    spoken = " ".join(c.text.replace("\n", " ") for c in srt)
    for word in ("small", "giant", "mankind.", "Eagle"):
        assert word in spoken
    if with_words:  # whisper regroups words into lines; without words it writes one cue per segment
        assert all(len(line) <= 16 for c in srt for line in c.text.splitlines() if " " in line)
    assert max(_seconds(c.end) for c in srt) <= 66.0
    assert pd.read_csv(theirs / "talk.tsv", sep="\t")["end"].max() <= 66_000


def test_seek_is_the_decoding_window_in_mel_frames(tmp_path: Path) -> None:
    result = _our_json(_transcript(with_words=False), tmp_path)
    assert [s["seek"] for s in result["segments"]] == [0, 0, 3000, 6000]  # derived: the 30-s grid
    for s in result["segments"]:  # openai-whisper's invariant: the segment starts inside its window
        assert 0 <= round(s["start"] * 100) - s["seek"] < N_FRAMES

    known = Transcript("en", 1.0, 40.0, (Segment(0, 0.0, 20.0, " a", seek=0), Segment(1, 24.0, 31.0, " b", seek=2400)))
    assert [s["seek"] for s in _our_json(known, tmp_path)["segments"]] == [0, 2400]  # the engine's, when it says


def test_no_time_runs_past_the_end_of_the_media(tmp_path: Path) -> None:
    # Whisper pads the last window to 30 s, and its last segment can end after the audio does.
    duration_s = 63.546
    transcript = _transcript(with_words=True, duration_s=duration_s)
    paths = write_outputs(transcript, "moon_landing.mp4", str(tmp_path), OutputOptions())

    for cues in (webvtt.read(paths["vtt"]), webvtt.from_srt(paths["srt"])):
        assert max(_seconds(c.end) for c in cues) <= duration_s
        assert _seconds(cues[-1].end) == pytest.approx(duration_s, abs=0.001)
    assert pd.read_csv(paths["tsv"], sep="\t")["end"].max() <= duration_s * 1000
    result = json.loads(Path(paths["json"]).read_text(encoding="utf-8"))
    assert max(s["end"] for s in result["segments"]) <= duration_s
    assert max(w["end"] for s in result["segments"] for w in s["words"]) <= duration_s
    assert all(s["start"] <= s["end"] for s in result["segments"])
