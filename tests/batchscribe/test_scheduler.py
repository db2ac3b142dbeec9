"""The window scheduler on the real base model and real speech: cross-file batches, the guard, OOM halving."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jiwer
import numpy as np
import pytest

from batchscribe import scheduler as scheduler_module
from batchscribe.audio import decode_audio
from batchscribe.decoding import BatchDecoder
from batchscribe.engines import load_engine
from batchscribe.options import TranscribeOptions
from batchscribe.scheduler import FileJob, WindowScheduler
from batchscribe.windows import speech_windows
from tests.media import load_audio

ROOT = Path(__file__).resolve().parents[2]
SPEECH = ROOT / "tests" / "fixtures" / "speech"
OPTIONS = TranscribeOptions(device="cpu").resolved()


def words(text: str) -> list[str]:
    return re.sub(r"[^\w']+", " ", text.lower()).split()


def wer(reference: str, hypothesis: str) -> float:
    return jiwer.wer(" ".join(words(reference)), " ".join(words(hypothesis)))


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    d = tmp_path_factory.mktemp("pcm")
    names = ["en.wav", "en2.mp3", "es.mp3", "fr.mp3", "de.mp3"]
    return {name: load_audio(decode_audio(SPEECH / name, d / f"{name}.pcm").path) for name in names}


@pytest.fixture(scope="module")
def engine(session_cache: Path):
    return load_engine(OPTIONS, session_cache)


def _decode_alone(decoder: BatchDecoder, samples: np.ndarray, language: str | None = None):
    """Every window of `samples` through a fresh scheduler (batch size 8) over `decoder`."""
    scheduler = WindowScheduler(decoder)
    job = FileJob("clip", language)
    futures = scheduler.submit(
        job, speech_windows(samples, vad=True), task="transcribe", initial_prompt=None, beam_size=5,
        temperatures=OPTIONS.temperatures, batch_size=8,
    )  # fmt: skip
    return job, [f.result(timeout=300) for f in futures], scheduler


def test_files_of_two_languages_share_one_batch(engine, audio, clips) -> None:
    scheduler = WindowScheduler(BatchDecoder(engine.model), start=False)
    jobs = {name: FileJob(name, None) for name in ("en2.mp3", "es.mp3")}
    futures = {}
    for name, job in jobs.items():  # queued before the scheduler starts: both land in its first batch
        windows = speech_windows(audio[name], vad=True)
        assert len(windows) == 1
        futures[name] = scheduler.submit(
            job, windows, task="transcribe", initial_prompt=None, beam_size=5, temperatures=(0.0,), batch_size=8
        )
    scheduler.start()
    texts = {
        name: "".join(w.word for r in (f.result(timeout=300) for f in fs) for w in r.words)
        for name, fs in futures.items()
    }

    assert scheduler.batch_sizes == [2]  # one encoder pass, one generate call, for both files
    assert jobs["en2.mp3"].language == "en" and jobs["es.mp3"].language == "es"
    assert wer(clips["en2.mp3"]["text"], texts["en2.mp3"]) < 0.15, texts
    assert "parque" in texts["es.mp3"].lower(), texts


def test_many_files_in_flight_fill_the_batches(engine, audio, clips) -> None:
    names = ["en.wav", "en2.mp3", "es.mp3", "fr.mp3", "de.mp3"] * 2
    engine_batches = len(engine.scheduler.batch_sizes)
    with ThreadPoolExecutor(len(names)) as pool:
        transcripts = list(pool.map(lambda n: engine.transcribe(audio[n], OPTIONS), names))
    sizes = engine.scheduler.batch_sizes[engine_batches:]
    assert sum(sizes) < len(names), sizes  # short windows of several files share rows
    for name, transcript in zip(names, transcripts):
        assert transcript.language == clips[name]["language"], (name, transcript.language)
    for name in ("en.wav", "en2.mp3"):
        assert wer(clips[name]["text"], transcripts[names.index(name)].text) < 0.15


def test_every_fixture_keeps_its_last_sentence(engine, audio, clips) -> None:
    # A dropped sentence matches none of its words; a heard one most (Spanish TTS has mishearings).
    for name in ("en.wav", "en2.mp3", "es.mp3", "fr.mp3"):  # base hears German TTS too poorly to judge
        text = " ".join(words(engine.transcribe(audio[name], OPTIONS).text))
        last = re.split(r"(?<=[.!?])\s+", clips[name]["text"].strip())[-1]
        expected = words(last)
        found = sum(w in text.split() for w in expected)
        assert found >= 0.6 * len(expected), (name, last, text)


def test_spanish_sample_is_complete(engine, tmp_path) -> None:
    import json

    reference = json.loads((ROOT / "samples" / "TRANSCRIPTS.json").read_text())["español/entrevista.mp3"]["text"]
    pcm = load_audio(decode_audio(ROOT / "samples" / "español" / "entrevista.mp3", tmp_path / "e.pcm").path)
    transcript = engine.transcribe(pcm, OPTIONS)
    assert transcript.language == "es"
    assert "estación de tren" in transcript.text.lower(), transcript.text
    # 2 of 26 words ("Vivo" heard as "Y lo"), as faster-whisper's sequential decoder hears it too.
    assert wer(reference, transcript.text) < 0.1, transcript.text


class TruncatingDecoder(BatchDecoder):
    """The real decoder, except that its first batch ends every window after its first three tokens: the
    way batched decoding drops speech. The guard's second opinions (later batches) run as is."""

    calls = 0

    def _generate(self, encoded, prompts, beam_size, temperature, tokenizer):
        results = super()._generate(encoded, prompts, beam_size, temperature, tokenizer)
        self.calls += 1
        return [_Cut(r, 3) for r in results] if self.calls == 1 else results


class _Cut:
    def __init__(self, result, keep: int) -> None:
        self.sequences_ids = [result.sequences_ids[0][:keep]]
        self.scores = result.scores
        self.no_speech_prob = result.no_speech_prob


def test_the_guard_decodes_a_window_that_lost_its_speech_again(engine, audio, clips) -> None:
    samples = np.concatenate([audio["en.wav"], np.zeros(16_000, np.float32), audio["en2.mp3"]])
    job, results, _ = _decode_alone(TruncatingDecoder(engine.model), samples)
    text = "".join(w.word for r in results for w in r.words)
    assert job.redecoded == len(results) >= 1
    assert all(r.redecoded and r.temperature == 0 for r in results)  # two shorter rows, beam search, no sampling
    assert wer(clips["en.wav"]["text"] + " " + clips["en2.mp3"]["text"], text) < 0.25, text


class OutOfMemoryDecoder(BatchDecoder):
    """The real decoder on a device that holds at most two windows at once (the error text is CTranslate2's)."""

    def encode(self, features):
        if len(features) > 2:
            raise RuntimeError("CUDA failed with error out of memory")
        return super().encode(features)


def test_out_of_memory_halves_the_batch(engine, audio, clips) -> None:
    scheduler = WindowScheduler(OutOfMemoryDecoder(engine.model), start=False, lanes=1)  # a GPU: one lane
    jobs = [FileJob(f"f{i}", "en") for i in range(5)]
    long = np.concatenate([audio["en2.mp3"], audio["en.wav"]])  # one window too long to share a row
    futures = [
        scheduler.submit(
            job,
            speech_windows(long, vad=True),
            task="transcribe",
            initial_prompt=None,
            beam_size=5,
            temperatures=(0.0,),
            batch_size=8,
        )  # fmt: skip
        for job in jobs
    ]
    scheduler.start()
    texts = ["".join(w.word for f in fs for w in f.result(timeout=300).words) for fs in futures]
    assert scheduler.batch_limit == 2
    assert scheduler.batch_sizes == [5, 2, 2, 1]  # 5 failed, halved to 2: the same windows in batches that fit
    reference = clips["en2.mp3"]["text"] + " " + clips["en.wav"]["text"]
    assert all(wer(reference, t) < 0.15 for t in texts), texts
    assert any("out of memory at batch size" in w for job in jobs for w in job.warnings)


class OutOfMemoryOnceDecoder(BatchDecoder):
    """The real decoder on a device short of memory once: the first encode of more than one window fails
    as CTranslate2 words it (a RuntimeError), and every later one fits (another process freed its memory)."""

    failed = False

    def encode(self, features):
        if len(features) > 1 and not self.failed:
            self.failed = True
            raise RuntimeError("CUDA failed with error out of memory")
        return super().encode(features)


def test_the_batch_size_comes_back_after_full_batches_at_the_lowered_size(engine, audio, clips, monkeypatch) -> None:
    monkeypatch.setattr(scheduler_module, "RAISE_AFTER_BATCHES", 2)
    scheduler = WindowScheduler(OutOfMemoryOnceDecoder(engine.model), start=False, lanes=1)
    jobs = [FileJob(f"f{i}", "en") for i in range(4)]
    long = np.concatenate([audio["en2.mp3"], audio["en.wav"]])  # one window too long to share a row
    windows = speech_windows(long, vad=True)
    futures = [
        scheduler.submit(
            job, windows, task="transcribe", initial_prompt=None, beam_size=1, temperatures=(0.0,), batch_size=2
        )
        for job in jobs
    ]
    scheduler.start()
    texts = ["".join(w.word for f in fs for w in f.result(timeout=300).words) for fs in futures]
    # 2 failed, halved to 1: two full batches of 1, then the asked size again (and never above it).
    assert scheduler.batch_sizes == [2, 1, 1, 2]
    assert scheduler.batch_limit is None
    reference = clips["en2.mp3"]["text"] + " " + clips["en.wav"]["text"]
    assert all(wer(reference, t) < 0.15 for t in texts), texts
    warned = [w for job in jobs for w in job.warnings]
    assert "out of memory at batch size 2; batch size lowered to 1, 2 tried again after 2 full batches" in warned
    assert not jobs[-1].warnings  # decoded after the size came back


def test_word_times_are_on_the_file_clock(engine, audio) -> None:
    gap_s = 6.0
    samples = np.concatenate([np.zeros(int(16_000 * gap_s), np.float32), audio["en2.mp3"]])
    transcript = engine.transcribe(samples, OPTIONS.model_copy(update={"word_timestamps": True}))
    first = transcript.segments[0]
    assert gap_s - 0.6 < first.start_s < gap_s + 1.0  # silence skipped, yet times count it
    assert all(w.start_s <= w.end_s for s in transcript.segments for w in s.words)
    ends = [s.end_s for s in transcript.segments]
    assert ends == sorted(ends) and ends[-1] <= len(samples) / 16_000 + 0.05


def test_silence_gives_no_windows_and_no_words(engine) -> None:
    assert speech_windows(np.zeros(16_000 * 5, np.float32), vad=True) == []
    assert engine.transcribe(np.zeros(16_000 * 5, np.float32), OPTIONS).segments == ()


class FailingDecoder(BatchDecoder):
    """The real decoder, except that any batch holding the file "bad" fails (a window it cannot decode)."""

    def decode(self, rows, languages, encoded, detected=None):
        if any(r.task == "translate" for r in rows):  # the bad file is the one asked to translate
            raise ValueError("cannot decode this window")
        return super().decode(rows, languages, encoded, detected)


def test_a_window_that_fails_fails_only_its_own_file(engine, audio, clips, caplog) -> None:
    scheduler = WindowScheduler(FailingDecoder(engine.model), start=False)
    good, bad = FileJob("good", "en"), FileJob("bad", "es")
    common = dict(initial_prompt=None, beam_size=5, temperatures=(0.0,), batch_size=8)
    good_futures = scheduler.submit(good, speech_windows(audio["en2.mp3"], vad=True), task="transcribe", **common)
    bad_futures = scheduler.submit(bad, speech_windows(audio["es.mp3"], vad=True), task="translate", **common)
    scheduler.start()
    text = "".join(w.word for f in good_futures for w in f.result(timeout=300).words)
    assert wer(clips["en2.mp3"]["text"], text) < 0.15
    with pytest.raises(ValueError, match="cannot decode"):
        bad_futures[0].result(timeout=300)
    assert scheduler.batch_sizes[0] == 2  # they shared a batch, which failed; then each was decoded alone
    # The fallback is not silent: a warning names the error and both files, and each file's row carries it.
    logged = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("cannot decode this window" in m and "good" in m and "bad" in m for m in logged), logged
    assert any("ValueError: cannot decode this window" in w and "decoded alone" in w for w in good.warnings)


def test_two_lanes_share_a_file_and_hear_what_one_lane_hears(session_cache, monkeypatch) -> None:
    """With two lanes (the CPU default) the model decodes two batches of a long file at once, sharing the
    cores. A Spanish file of several windows, its language not given: one lane detects the language on
    the first window while the other lane encodes the file's later windows and waits for the language before
    it decodes them; the words are those one lane hears."""
    from batchscribe.engines import faster
    from tests.scheduling import decode_files
    from tests.voices import missing_voices, monologue

    if faster.cpu_threads() < 2:
        pytest.skip("one core: one lane")
    if missing := missing_voices(("july",)):
        pytest.skip(f"needs {', '.join(missing)} (make test installs it as root)")
    monkeypatch.setattr(faster, "CPU_LANES", 2)
    decoder = BatchDecoder(faster.FasterWhisperEngine(OPTIONS, session_cache).model)
    assert decoder.lanes == 2
    audio = monologue("july", duration_s=130)
    windows = len(speech_windows(audio, vad=True))
    assert 4 <= windows <= 8
    one = decode_files(decoder, {"es": audio}, {"es": None}, lanes=1)
    two = decode_files(decoder, {"es": audio}, {"es": None}, lanes=2)
    assert one.scheduler.batch_sizes == [windows]
    assert sum(two.scheduler.batch_sizes) == windows and len(two.scheduler.batch_sizes) == 2  # one batch a lane
    assert one.jobs["es"].language == two.jobs["es"].language == "es"
    assert [r.text for r in two.results["es"]] == [r.text for r in one.results["es"]]
