"""Short windows of several files in one row, on the real base model and real recorded voices: every word
goes back to its own file, in two languages, with clips cut off mid-word at either end."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from batchscribe.audio import decode_audio
from batchscribe.decoding import BatchDecoder
from batchscribe.options import TranscribeOptions
from batchscribe.packing import JOIN_GAP_S, LanguagePrior, pack
from batchscribe.scheduler import WindowScheduler
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
        assert heard, name
        assert not heard & others, (name, heard & others)
        assert len(heard & words(text)) >= 0.6 * len(words(text)), (name, heard, text)
        times = [(w.start_s, w.end_s) for r in results[name] for w in r.words]
        duration = len(files[name][0]) / SAMPLE_RATE
        assert all(0 <= s <= e <= duration + 0.01 for s, e in times), (name, times)


def test_short_files_languages_without_a_full_pass_each(engine, files) -> None:
    jobs, results, _ = _run(engine, files, {n: None for n in files})
    for name, (_, _, language) in files.items():
        assert jobs[name].language == language, (name, jobs[name].language)


def test_pack_lays_parts_apart_by_the_join_gap(files) -> None:
    parts = [speech_windows(files[n][0], vad=True)[0] for n in ("conf-locked", "vm-nomore")]
    packed = pack(parts)
    assert packed.offsets[1] == pytest.approx(parts[0].duration_s + JOIN_GAP_S, abs=1e-3)
    assert packed.window.duration_s == pytest.approx(sum(p.duration_s for p in parts) + JOIN_GAP_S, abs=1e-3)


def test_the_prior_decides_only_an_unsure_clip() -> None:
    prior = LanguagePrior()
    for _ in range(20):
        prior.observe("es", 0.95)
    assert prior.choose({"pt": 0.43, "es": 0.10, "en": 0.2})[0] == "es"  # unsure: the pile's language
    assert prior.choose({"pt": 0.90, "es": 0.02})[0] == "pt"  # sure: its own
