"""Short windows of several files in one row, on the real base model and real recorded voices: every word
goes back to its own file, in two languages, with clips cut off mid-word at either end."""

from __future__ import annotations

import difflib
import json
import re
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from batchscribe.audio import decode_audio, ffmpeg_exe
from batchscribe.decoding import BatchDecoder
from batchscribe.options import TranscribeOptions
from batchscribe.packing import (
    DETECT_FRAMES,
    JOIN_GAP_S,
    THIN_MIN_S,
    LanguagePrior,
    alike,
    detect_frames,
    fingerprint,
    pack,
    short_features,
    split_back,
)
from batchscribe.rows import RowResult
from batchscribe.scheduler import WindowScheduler
from batchscribe.transcript import Word
from batchscribe.windows import speech_windows
from tests.media import load_audio
from tests.scheduling import decode_files
from tests.voices import SAMPLE_RATE, SOUNDS, _decode, _trim

ROOT = Path(__file__).resolve().parents[2]
OPTIONS = TranscribeOptions(device="cpu").resolved()
# Prompts of the US English voice (Debian's asterisk-core-sounds-en-wav) whose texts share no word.
PROMPTS = {
    "conf-locked": "This conference is locked!",
    "tt-weasels": "Weasels have eaten our phone system",
    "privacy-unident": "The party you are trying to reach does not accept unidentified calls.",
    "vm-sorry": "I'm sorry I did not understand your response.",
    "conf-muted": "You are now muted",
    "vm-nomore": "No more messages.",
}
CUT_S = 0.12  # taken off both ends of two clips: they start and end mid-word


def words(text: str) -> set[str]:
    return set(re.sub(r"[^\w']+", " ", text.lower()).split())


def _misheard(word: str, own: set[str]) -> bool:
    """`word` is close to one of the file's own words: a misheard word, not one from another file."""
    return any(difflib.SequenceMatcher(None, word, w).ratio() >= 0.8 for w in own)


@pytest.fixture(scope="module")
def engine(session_cache: Path):
    from batchscribe.engines import load_engine

    return load_engine(OPTIONS, session_cache)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, tuple[np.ndarray, str, str]]:
    """name -> (samples, text, language): English prompts, two cut mid-word, and two Spanish recordings."""
    folder = SOUNDS / "en_US_f_Allison"
    if not folder.is_dir():
        pytest.skip("needs Debian's asterisk-core-sounds-en-wav (make test installs it as root)")
    out = {}
    for i, (name, text) in enumerate(PROMPTS.items()):
        clip = _trim(_decode(folder / f"{name}.wav"))
        if i < 2:
            clip = clip[int(CUT_S * SAMPLE_RATE) : -int(CUT_S * SAMPLE_RATE)]
        out[name] = (np.concatenate([np.zeros(SAMPLE_RATE // 4, np.float32), clip]), text, "en")
    d = tmp_path_factory.mktemp("pcm")
    spanish = {
        "es.mp3": (ROOT / "tests" / "fixtures" / "speech" / "es.mp3", "tests/fixtures/speech/clips.json"),
        "entrevista.mp3": (ROOT / "samples" / "español" / "entrevista.mp3", "samples/TRANSCRIPTS.json"),
    }
    for name, (path, texts) in spanish.items():
        known = json.loads((ROOT / texts).read_text())
        text = (known.get(name) or known["español/entrevista.mp3"])["text"]
        out[name] = (load_audio(decode_audio(path, d / f"{name}.pcm").path), text, "es")
    return out


def _run(engine, files: dict, languages: dict[str, str | None]) -> tuple[dict, dict, WindowScheduler]:
    run = decode_files(BatchDecoder(engine.model), {name: f[0] for name, f in files.items()}, languages)
    return run.jobs, run.results, run.scheduler


def test_every_word_goes_back_to_its_own_file(engine, files) -> None:
    jobs, results, scheduler = _run(engine, files, {n: f[2] for n, f in files.items()})
    assert scheduler.batch_sizes[0] == 2, scheduler.batch_sizes  # 8 files: one English row, one Spanish row
    assert all(r.shared > 1 for rs in results.values() for r in rs)
    for name, (_, text, _) in files.items():
        heard = words("".join(r.text for r in results[name]))
        others = set().union(*(words(t) for n, (_, t, _) in files.items() if n != name)) - words(text)
        bled = {w for w in heard & others if not _misheard(w, words(text))}  # "buenas" for "buenos" is no bleed
        assert heard, name
        assert not bled, (name, bled)
        assert len(heard & words(text)) >= 0.6 * len(words(text)), (name, heard, text)
        times = [(w.start_s, w.end_s) for r in results[name] for w in r.words]
        duration = len(files[name][0]) / SAMPLE_RATE
        assert all(0 <= s <= e <= duration + 0.01 for s, e in times), (name, times)


def test_short_files_languages_without_a_full_pass_each(engine, files) -> None:
    jobs, results, _ = _run(engine, files, {n: None for n in files})
    for name, (_, _, language) in files.items():
        assert jobs[name].language == language, (name, jobs[name].language)


# Prompts of one voice, most of them a second long, that end mid-sentence: ten of them fill one row.
WORDS = {
    "extension": "Extension", "vm-onefor-full": "Press one to listen to", "is-set-to": "Is set to",
    "cannot-complete-as-dialed": "Your call cannot be completed as dialed", "digits/mon-10": "November",
    "location": "Location", "if-correct-press": "If this is correct press", "vm-savedto": "saved to",
    "digits/day-0": "Sunday", "activated": "Activated",
}  # fmt: skip


def test_clips_in_a_full_row_keep_their_first_and_last_words(engine) -> None:
    """Ten clips in one row, most of them a second long and ending mid-sentence, so that the row decodes
    as one stream without punctuation: alignment gives a join's silence to a word beside it, most often the
    next clip's first word, whose start moves back into the clip before."""
    folder = SOUNDS / "en_US_f_Allison"
    if not folder.is_dir():
        pytest.skip("needs Debian's asterisk-core-sounds-en-wav (make test installs it as root)")
    clips = {name: _trim(_decode(folder / f"{name}.wav")) for name in WORDS}
    run = decode_files(BatchDecoder(engine.model), clips, dict.fromkeys(clips, "en"), 1)
    assert max(r.shared for rs in run.results.values() for r in rs) == len(clips)  # one row
    heard = {
        name: re.sub(r"[^\w']+", " ", "".join(r.text for r in run.results[name]).lower()).split() for name in clips
    }
    # A clip whose first word was not lost to the clip before, and whose last word is not followed by a
    # word of the next clip. Measured here: 8 of 10, "dialed" aligned 0.06 s into the next clip, which
    # the rule gives away. The rule before (the part a word overlaps most) also made 8 here, losing "if";
    # over 292 clips in 32 rows it made 16.6% WER against 14.4% (docs/performance.md).
    whole = [
        name
        for name, text in WORDS.items()
        if heard[name]
        and _misheard(heard[name][0], {text.lower().split()[0]})
        and _misheard(heard[name][-1], {text.lower().split()[-1]})
    ]
    assert len(whole) >= 8, heard


def test_a_clips_words_vary_little_with_its_row_partners(engine) -> None:
    """A short file shares a row with whatever clips are in flight, and their text is its context: the
    documented tolerance (docs/decoding.md). Measured: 17-19 of 22 clips word for word the same in three
    orders, the others differing in one word or in "3" against "three"."""
    import random

    import jiwer

    from tests.voices import prompt_files

    clips = {}
    for path in prompt_files("allison")[::9]:
        if len(clips) == 22:
            break
        clip = _trim(_decode(path))
        if 0.8 <= len(clip) / SAMPLE_RATE <= 3.0:
            clips[path.stem] = clip
    readings = []
    for seed in (0, 1):
        order = random.Random(seed).sample(list(clips), len(clips))
        run = decode_files(BatchDecoder(engine.model), {n: clips[n] for n in order}, dict.fromkeys(order, "en"))
        assert all(r.shared > 1 for rs in run.results.values() for r in rs)
        readings.append({n: " ".join(sorted(words("".join(r.text for r in run.results[n])))) for n in clips})
    same = sum(readings[0][n] == readings[1][n] for n in clips)
    assert same >= 2 * len(clips) // 3, readings
    first, second = (" ".join(reading[n] for n in clips) for reading in readings)
    assert jiwer.wer(first, second) <= 0.12, readings


class _LaneRecorder(BatchDecoder):
    """A decoder that notes which lane (thread) decoded which rows (their windows' lengths)."""

    def __init__(self, model) -> None:
        super().__init__(model)
        self.calls: list[tuple[str, list[float]]] = []

    def decode(self, rows, languages, encoded, detected=None):
        self.calls.append((threading.current_thread().name, [round(r.window.duration_s, 3) for r in rows]))
        return super().decode(rows, languages, encoded, detected)


def test_clips_that_share_rows_stay_in_the_first_lane(engine, files) -> None:
    """With two lanes, the second lane takes only windows that go alone in their row (a long file's): the
    clips keep one lane's rows and words, beside a long file whose windows both lanes decode."""
    from batchscribe.engines.faster import cpu_threads
    from tests.voices import missing_voices, monologue

    if cpu_threads() < 2:
        pytest.skip("one core: one lane")
    if missing := missing_voices(("july",)):
        pytest.skip(f"needs {', '.join(missing)} (make test installs it as root)")
    recorder = _LaneRecorder(engine.model)
    assert recorder.lanes == 2  # the CPU default
    clips = {name: f[0] for name, f in files.items() if f[2] == "en"}
    talk = monologue("july", duration_s=130)
    talk_windows = {round(w.duration_s, 3) for w in speech_windows(talk, vad=True)}
    one = decode_files(BatchDecoder(engine.model), clips, dict.fromkeys(clips, "en"), 1)
    two = decode_files(recorder, {"talk": talk, **clips}, {"talk": "es", **dict.fromkeys(clips, "en")}, 2)
    second = [rows for lane, rows in recorder.calls if lane.endswith("-lane1")]
    assert second, recorder.calls  # the long file kept both lanes busy ...
    assert all(length in talk_windows for rows in second for length in rows), (recorder.calls, talk_windows)
    # ... and every clip was decoded in the first lane, in one lane's rows, with one lane's words.
    for name in clips:
        assert [r.shared for r in two.results[name]] == [r.shared for r in one.results[name]], name
        assert [r.text for r in two.results[name]] == [r.text for r in one.results[name]], name


def test_pack_lays_parts_apart_by_the_join_gap(files) -> None:
    parts = [speech_windows(files[n][0], vad=True)[0] for n in ("conf-locked", "vm-nomore")]
    packed = pack(parts)
    assert packed.offsets[1] == pytest.approx(parts[0].duration_s + JOIN_GAP_S, abs=1e-3)
    assert packed.window.duration_s == pytest.approx(sum(p.duration_s for p in parts) + JOIN_GAP_S, abs=1e-3)


def test_a_clips_language_pass_does_not_depend_on_what_shares_it(engine, files) -> None:
    """A 1.5-s clip is encoded over 4 s for its language, alone or beside a clip of 10 s: its
    probabilities are the same. (Padded to the longest clip in its pass, it heard other languages.)"""
    decoder = BatchDecoder(engine.model)
    clip = speech_windows(files["conf-muted"][0], vad=True)[0]
    other = speech_windows(
        np.concatenate([files[n][0] for n in ("privacy-unident", "vm-sorry", "tt-weasels")]), vad=True
    )[0]
    assert clip.duration_s < 4 and 8 < other.duration_s <= 15, (clip.duration_s, other.duration_s)
    assert detect_frames(clip.duration_s) == DETECT_FRAMES and detect_frames(other.duration_s) > DETECT_FRAMES
    features = [decoder.features(w) for w in (clip, other)]
    [(indices, alone)] = short_features(features[:1], [clip.duration_s])
    assert indices == [0] and alone.shape[-1] == DETECT_FRAMES
    together = short_features(features, [clip.duration_s, other.duration_s])
    assert [i for i, _ in together] == [[0], [1]]  # one pass per length
    heard_alone = decoder.language_probabilities(decoder.encode(alone))[0]
    heard_together = decoder.language_probabilities(decoder.encode(together[0][1]))[0]
    assert heard_alone["en"] == pytest.approx(heard_together["en"], abs=1e-3)


def test_the_prior_decides_only_an_unsure_clip() -> None:
    prior = LanguagePrior()
    for _ in range(20):
        prior.observe("es", 0.95)
    assert prior.choose({"pt": 0.43, "es": 0.10, "en": 0.2})[0] == "es"  # unsure: the pile's language
    assert prior.choose({"pt": 0.90, "es": 0.02})[0] == "pt"  # sure: its own


def test_the_same_speech_in_three_formats_never_shares_a_row(engine, files, tmp_path) -> None:
    """One recording as 8-kHz stereo WAV, 48-kHz 6-channel FLAC and MP3: in one row Whisper writes the
    sentence said three times twice, and a file's first words land in another's. Each is decoded whole."""
    en2 = ROOT / "tests" / "fixtures" / "speech" / "en2.mp3"
    formats = {"8k.wav": ["-ar", "8000", "-ac", "2"], "48k.flac": ["-ar", "48000", "-ac", "6"], "copy.mp3": []}
    copies = {}
    for name, args in formats.items():
        command = [ffmpeg_exe(), "-v", "error", "-t", "4", "-i", str(en2), *args, str(tmp_path / name)]
        subprocess.run(command, check=True)
        copies[name] = load_audio(decode_audio(tmp_path / name, tmp_path / f"{name}.pcm").path)
    prompts = {n: files[n][0] for n in ("conf-locked", "vm-nomore")}
    run = decode_files(BatchDecoder(engine.model), copies, {n: "en" for n in copies})
    sentence = "my sister works in a small bakery near the river".split()
    for name in copies:
        heard = re.sub(r"[^\w']+", " ", "".join(r.text for r in run.results[name]).lower()).split()
        assert heard[:2] == ["my", heard[1]] and heard[-9:-7] != ["my", "sister"], (name, heard)  # none bled
        assert len(set(heard) & set(sentence)) >= len(sentence) - 1, (name, heard)  # one word may be misheard
    prints = {n: fingerprint(*_speech(a)) for n, a in {**copies, **prompts}.items()}
    assert alike(prints["8k.wav"], prints["48k.flac"]) and alike(prints["copy.mp3"], prints["8k.wav"])
    assert not alike(prints["copy.mp3"], prints["conf-locked"])
    assert not alike(prints["conf-locked"], prints["vm-nomore"])


def _speech(samples: np.ndarray) -> tuple[np.ndarray, float]:
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.feature_extractor import FeatureExtractor

    window = speech_windows(samples, vad=True)[0]
    return pad_or_trim(FeatureExtractor()(window.audio)[..., :-1]), window.duration_s


def _row(words_s: list[tuple[float, float, str]]) -> RowResult:
    timed = tuple(Word(s, e, w, 0.9) for s, e, w in words_s)
    return RowResult(timed, tuple((i,) for i in range(len(timed))), tuple(range(len(timed))), -0.2, 1.0, 0.01, 0.0,
                     False, 0)  # fmt: skip


def test_a_word_aligned_across_a_join_goes_to_the_part_it_ends_in(files) -> None:
    """Alignment gives a join's silence to the word after it: "No" starts in the first part's speech and
    ends in the second part, where it was said. "again" ends in the gap: the last word of the first part."""
    parts = [speech_windows(files[n][0], vad=True)[0] for n in ("conf-locked", "vm-nomore")]
    packed = pack(parts)
    join, second = packed.offsets[0] + parts[0].duration_s, packed.offsets[1]
    assert packed.window.to_file_time(join + 0.5) == pytest.approx(join + 0.5)  # the row's clock runs through gaps
    row = _row([
        (0.1, 0.5, " This"), (join - 0.9, join + 0.3, " again"), (join + 0.3, second + 0.4, " No"),
        (second + 0.4, second + 0.8, " more"),
    ])  # fmt: skip
    first, last = split_back(packed, row)
    assert [w.word for w in first.words] == [" This", " again"] and [w.word for w in last.words] == [" No", " more"]
    assert all(0 <= w.start_s <= w.end_s <= parts[1].duration_s for w in last.words)  # on the part's own clock


def test_a_part_left_with_too_few_words_is_decoded_again_alone(files) -> None:
    long = np.concatenate([files["privacy-unident"][0], files["vm-sorry"][0]])
    parts = [speech_windows(files["conf-muted"][0], vad=True)[0], speech_windows(long, vad=True)[0]]
    assert parts[1].duration_s >= THIN_MIN_S
    packed = pack(parts)
    second = packed.offsets[1]
    row = _row([(0.1, 0.4, " You"), (0.4, 0.7, " are"), (second + 0.2, second + 0.5, " party")])
    first, thin = split_back(packed, row)
    assert (first.verdict, thin.verdict) == ("ok", "sparse")
