"""Both real engines on real weights and real (synthesized) speech."""

import re
from pathlib import Path

import jiwer
import numpy as np
import pytest

from batchscribe.audio import decode_audio
from batchscribe.engines import load_engine
from batchscribe.options import TranscribeOptions
from tests.media import load_audio

SPEECH = Path(__file__).resolve().parents[1] / "fixtures" / "speech"
ENGLISH_WER_BOUND = 0.15  # base on espeak-ng English is ~5%; headroom for noise


def wer(reference: str, hypothesis: str) -> float:
    words = lambda t: " ".join(re.sub(r"[^\w']+", " ", t.lower()).split())  # noqa: E731
    return jiwer.wer(words(reference), words(hypothesis))


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    d = tmp_path_factory.mktemp("pcm")
    return {
        name: load_audio(decode_audio(SPEECH / name, d / f"{name}.pcm").path)
        for name in ("en.wav", "en2.mp3", "es.mp3", "fr.mp3", "de.mp3")
    }


def test_default_cpu_engine_is_faster_whisper_int8() -> None:
    opts = TranscribeOptions(device="cpu").resolved()
    assert (opts.engine, opts.compute_type) == ("faster-whisper", "int8")


@pytest.mark.parametrize("name", ["en.wav", "en2.mp3"])
def test_english_wer_is_under_the_bound(name, audio, clips, session_cache) -> None:
    opts = TranscribeOptions(device="cpu").resolved()
    transcript = load_engine(opts, session_cache).transcribe(audio[name], opts)
    assert transcript.language == "en" and transcript.language_probability > 0.5
    assert wer(clips[name]["text"], transcript.text) < ENGLISH_WER_BOUND, transcript.text
    assert transcript.text == "".join(s.text for s in transcript.segments)
    assert 0 <= transcript.segments[0].start_s < transcript.segments[-1].end_s <= transcript.duration_s + 0.5


@pytest.mark.parametrize("name", ["en.wav", "es.mp3", "fr.mp3", "de.mp3"])
def test_language_is_detected(name, audio, clips, session_cache) -> None:
    opts = TranscribeOptions(device="cpu").resolved()
    transcript = load_engine(opts, session_cache).transcribe(audio[name], opts)
    assert transcript.language == clips[name]["language"]
    assert transcript.language_probability > 0.5


def test_silence_invents_no_words(session_cache) -> None:
    opts = TranscribeOptions(device="cpu").resolved()
    transcript = load_engine(opts, session_cache).transcribe(np.zeros(16_000 * 5, dtype=np.float32), opts)
    assert len(transcript.text.split()) <= 1, transcript.text


def test_forced_language_and_translate(audio, session_cache) -> None:
    opts = TranscribeOptions(device="cpu", language="es", task="translate").resolved()
    transcript = load_engine(opts, session_cache).transcribe(audio["es.mp3"], opts)
    assert transcript.language == "es" and transcript.language_probability == 1.0
    text = transcript.text.lower()
    assert any(w in text for w in ("weather", "park", "saturday", "parents", "week")), text


def test_openai_whisper_engine_on_cpu(audio, clips, session_cache) -> None:
    opts = TranscribeOptions(engine="openai-whisper", device="cpu", temperatures=(0.0,)).resolved()
    assert opts.compute_type == "float32"
    engine = load_engine(opts, session_cache)
    assert load_engine(opts, session_cache) is engine  # loaded once per process
    transcript = engine.transcribe(audio["en.wav"], opts)
    assert transcript.language == "en" and transcript.language_probability > 0.5
    assert wer(clips["en.wav"]["text"], transcript.text) < ENGLISH_WER_BOUND, transcript.text
    for segment in transcript.segments:  # whisper's own seek: the window (in mel frames) it was decoded from
        assert segment.seek is not None and 0 <= round(segment.start_s * 100) - segment.seek < 3000
    assert engine.effective_options(opts).vad_filter is False  # no VAD in openai-whisper


def test_effective_options_say_what_the_scheduler_drops(session_cache) -> None:
    batched = TranscribeOptions(device="cpu").resolved()
    engine = load_engine(batched, session_cache)
    ran = engine.effective_options(batched)
    assert ran.condition_on_previous_text is False  # scheduled windows are independent
    assert ran.temperatures == batched.temperatures  # the coverage guard's fallback uses them all
    assert ran.model_copy(update={"condition_on_previous_text": True}) == batched
    sequential = batched.model_copy(update={"batch_size": 0})  # the sequential decoder runs them all
    assert engine.effective_options(sequential) == sequential


def _has_cuda() -> bool:
    from batchscribe.options import _cuda_available

    return _cuda_available()


@pytest.mark.requires_cuda
@pytest.mark.skipif(not _has_cuda(), reason="no CUDA GPU on this machine")
@pytest.mark.parametrize(
    ("engine", "compute_type", "batch_size"), [("openai-whisper", "float16", 0), ("faster-whisper", "float16", 8)]
)
def test_gpu_engines_in_fp16(engine, compute_type, batch_size, audio, clips, session_cache) -> None:
    opts = TranscribeOptions(
        engine=engine, device="cuda", compute_type=compute_type, batch_size=batch_size, temperatures=(0.0,)
    ).resolved()
    transcript = load_engine(opts, session_cache).transcribe(audio["en.wav"], opts)
    assert transcript.language == "en"
    assert wer(clips["en.wav"]["text"], transcript.text) < ENGLISH_WER_BOUND


def test_a_file_read_in_parts_gets_the_windows_it_gets_in_one_piece(tmp_path: Path) -> None:
    """A long file is read in parts; each part's last window is cut again with the next part, so the parts'
    edges cost no extra rows."""
    from batchscribe.engines.faster import _cut_parts
    from batchscribe.longform import pcm_windows
    from batchscribe.windows import speech_windows

    rng = np.random.default_rng(0)
    clips = [load_audio(decode_audio(SPEECH / n, tmp_path / f"{n}.pcm").path) for n in ("en.wav", "en2.mp3")]
    pieces = [p for _ in range(6) for c in clips for p in (c, np.zeros(int(rng.uniform(0.3, 1.5) * 16000), np.float32))]
    audio = np.concatenate(pieces)  # about 2.5 minutes of speech with short pauses
    path = tmp_path / "talk.pcm"
    path.write_bytes((audio * 32767).astype("<i2").tobytes())
    total_s = len(audio) / 16000
    whole = speech_windows(audio, vad=True)
    cuts = list(_cut_parts(pcm_windows(path, 40.0), True, total_s))
    parted = [w for cut, _, _ in cuts for w in cut]
    assert len(cuts) >= 4 and [w.index for w in parted] == list(range(len(parted)))
    assert len(parted) == len(whole), ([w.duration_s for w in parted], [w.duration_s for w in whole])
    assert sum(w.duration_s for w in parted) == pytest.approx(sum(w.duration_s for w in whole), rel=0.02)
    assert not any(whole_file for _, whole_file, _ in cuts) and cuts[-1][2] == pytest.approx(total_s, abs=1e-3)
    one = list(_cut_parts([(0.0, audio[: 20 * 16000])], True, 20.0))
    assert len(one) == 1 and one[0][1]  # a file in one part is its whole file
