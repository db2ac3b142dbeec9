"""The review queue: files flagged by confidence, redecoded windows, warnings and language probability."""

from __future__ import annotations

from batchscribe.manifest import normalize
from batchscribe.review import file_confidence, review_queue
from batchscribe.segment_table import SegmentsWriter
from batchscribe.transcript import Segment, Transcript, Word


def _row(key: str, **values) -> dict:
    base = {"relative_path": key, "status": "ok", "language": "en", "language_probability": 0.99, "windows": 4}
    return {**base, "redecoded_windows": 0, **values}


def _spoken(probability: float, seconds: float = 2.0) -> Transcript:
    words = (Word(0.0, seconds, " word", probability),)
    return Transcript("en", 0.99, seconds, (Segment(0, 0.0, seconds, " word", words=words),))


def test_flagged_files_come_first_by_number_of_reasons_then_confidence(tmp_path) -> None:
    manifest = normalize(
        [
            _row("clean.mp3"),
            _row("mumbled.mp3"),
            _row("worst.mp3", redecoded_windows=2, language_probability=0.41, language="cy"),
            _row("cut.mp3", warning="truncated: decoded up to the damage", unsure_s=2.5),
            _row("talk.mp3", unsure_s=1.8, duration_s=600.0),  # a few unsure seconds in ten minutes: no reason
            _row("broken.mp3", status="failed", error="not audio"),
        ]
    )
    with SegmentsWriter(str(tmp_path), min_interval_s=0.0) as writer:
        for key, probability in (("clean.mp3", 0.93), ("mumbled.mp3", 0.35), ("worst.mp3", 0.55), ("cut.mp3", 0.9)):
            writer.add(key, _spoken(probability))
    confidence = file_confidence(str(tmp_path))
    assert confidence["mumbled.mp3"] == 0.35 and set(confidence) == {"clean.mp3", "mumbled.mp3", "worst.mp3", "cut.mp3"}

    queue = review_queue(manifest, confidence)
    assert list(queue["relative_path"]) == ["worst.mp3", "cut.mp3", "mumbled.mp3"]  # failed rows are listed apart
    assert queue.loc[0, "reasons"] == (
        "low confidence (0.55); 2 of 4 windows decoded again; language cy at probability 0.41"
    )
    assert queue.loc[1, "reasons"] == "2.5 s of speech still unsure; warning: truncated: decoded up to the damage"


def test_confidence_is_weighted_by_segment_duration(tmp_path) -> None:
    segments = (
        Segment(0, 0.0, 9.0, " long", words=(Word(0.0, 9.0, " long", 0.9),)),
        Segment(1, 9.0, 10.0, " short", words=(Word(9.0, 10.0, " short", 0.4),)),
    )
    with SegmentsWriter(str(tmp_path)) as writer:
        writer.add("a.mp3", Transcript("en", 0.99, 10.0, segments))
    assert abs(file_confidence(str(tmp_path))["a.mp3"] - 0.85) < 1e-9
