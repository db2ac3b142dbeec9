"""The transcription task: cache key, and the GPU out-of-memory fallback (an injected error, real CPU engine)."""

from pathlib import Path

import pytest

import tasks.transcribe as transcribe_module
from batchscribe.audio import decode_audio
from batchscribe.downloads import stage_local
from batchscribe.engines import load_engine
from batchscribe.media import InputItem
from batchscribe.options import TranscribeOptions
from tasks.transcribe import fallbacks, transcribe_audio, transcribe_cache_key
from tests.fakes import FakeEngine, OutOfMemoryEngine

SPEECH = Path(__file__).resolve().parents[1] / "fixtures" / "speech"


def test_a_gpu_file_falls_back_to_the_cpu_only() -> None:
    # The window scheduler halves its own batch on an out-of-memory (tests/batchscribe/test_scheduler.py).
    gpu = TranscribeOptions(engine="faster-whisper", device="cuda", batch_size=8).resolved()
    steps = [(o.device, o.batch_size, o.compute_type) for o in fallbacks(gpu)]
    assert steps == [("cpu", 8, "int8")]
    assert fallbacks(TranscribeOptions(device="cpu").resolved()) == []


def test_out_of_memory_on_the_gpu_finishes_the_file_on_the_cpu(tmp_path, cache_dir, monkeypatch) -> None:
    gpu_engine = OutOfMemoryEngine()

    def engine_for(options, cache):
        return gpu_engine if options.device == "cuda" else load_engine(options, cache)

    monkeypatch.setattr(transcribe_module, "load_engine", engine_for)
    staged = stage_local(InputItem(str(SPEECH / "en2.mp3"), "en2.mp3"))
    audio = decode_audio(SPEECH / "en2.mp3", tmp_path / "en2.pcm")
    options = TranscribeOptions(engine="faster-whisper", device="cuda", batch_size=2)

    result = transcribe_audio.fn(staged, audio, options, str(cache_dir))

    assert gpu_engine.calls == 1  # the "GPU" once, then the CPU
    assert result.compute_type == "int8" and "bakery" in result.transcript.text.lower()
    assert result.warning.startswith("GPU out of memory; transcribed with faster-whisper on cpu")
    assert result.options_hash == options.resolved().cache_hash()  # cached under what was asked for


def test_other_errors_are_not_retried_on_the_cpu(tmp_path, cache_dir, monkeypatch) -> None:
    class Broken(FakeEngine):
        def transcribe(self, audio, options):
            self.calls += 1
            raise ValueError("bad tensor")

    engine = Broken()
    monkeypatch.setattr(transcribe_module, "load_engine", lambda options, cache: engine)
    staged = stage_local(InputItem(str(SPEECH / "en2.mp3"), "en2.mp3"))
    audio = decode_audio(SPEECH / "en2.mp3", tmp_path / "en2.pcm")
    with pytest.raises(ValueError, match="bad tensor"):
        transcribe_audio.fn(staged, audio, TranscribeOptions(device="cuda"), str(cache_dir))
    assert engine.calls == 1


def test_cache_key_is_content_plus_what_decides_the_words(cache_dir) -> None:
    staged = stage_local(InputItem(str(SPEECH / "en2.mp3"), "en2.mp3"))

    def key(**options) -> str:
        parameters = {"staged": staged, "options": TranscribeOptions(device="cpu", **options), "cache_dir": cache_dir}
        return transcribe_cache_key(None, parameters)

    assert key().startswith(f"transcript-{staged.sha256}-")
    assert key(beam_size=1) != key() and key(batch_size=32) == key()


def test_a_fake_engine_goes_through_the_task_like_a_real_one(tmp_path, monkeypatch) -> None:
    engine = FakeEngine()
    monkeypatch.setattr(transcribe_module, "load_engine", lambda options, cache: engine)
    staged = stage_local(InputItem(str(SPEECH / "en2.mp3"), "en2.mp3"))
    audio = decode_audio(SPEECH / "en2.mp3", tmp_path / "en2.pcm")
    result = transcribe_audio.fn(staged, audio, TranscribeOptions(device="cpu"), str(tmp_path))
    assert engine.calls == 1 and result.transcript.text == f" {audio.duration_s:.1f} seconds of audio."
    assert result.used_options == TranscribeOptions(device="cpu").resolved() and result.windows == 0
    assert not Path(audio.path).exists()  # the decoded copy is removed once the transcript is cached
