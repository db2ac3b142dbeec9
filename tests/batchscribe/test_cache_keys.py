"""The transcript cache key: what decides the words changes it; performance knobs and the device do not."""

import json
from pathlib import Path

import pytest

from batchscribe import cache_keys
from batchscribe.cache_keys import DIGESTS_FILE, engine_version, transcript_key
from batchscribe.options import TranscribeOptions

SHA = "ab" * 32


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A local model folder (a path is a model name): its weights file's bytes are its identity."""
    model = tmp_path / "my-model"
    model.mkdir()
    (model / "model.bin").write_bytes(b"weights v1")
    return model


def key(cache: Path, **options) -> str:
    return transcript_key(SHA, TranscribeOptions(engine="faster-whisper", device="cpu", **options), cache)


def test_batch_size_workers_device_and_aligned_words_do_not_change_the_key(tmp_path, model_dir) -> None:
    base = key(tmp_path, model=str(model_dir))
    assert base.startswith(f"transcript-{SHA}-")
    assert key(tmp_path, model=str(model_dir), batch_size=32) == base
    assert key(tmp_path, model=str(model_dir), batch_size=2, word_timestamps=True) == base  # aligned anyway
    cuda = TranscribeOptions(engine="faster-whisper", device="cuda", compute_type="int8", model=str(model_dir))
    assert transcript_key(SHA, cuda, tmp_path) == base


def test_what_changes_the_words_changes_the_key(tmp_path, model_dir) -> None:
    base = key(tmp_path, model=str(model_dir))
    others = {
        key(tmp_path, model=str(model_dir), beam_size=1),
        key(tmp_path, model=str(model_dir), language="en"),
        key(tmp_path, model=str(model_dir), batch_size=1),  # the sequential decoder, not the scheduler
        key(tmp_path, model=str(model_dir), compute_type="float32"),
        transcript_key("cd" * 32, TranscribeOptions(device="cpu", model=str(model_dir)), tmp_path),
    }
    assert base not in others and len(others) == 5
    sequential = key(tmp_path, model=str(model_dir), batch_size=1)
    assert key(tmp_path, model=str(model_dir), batch_size=0, word_timestamps=True) != sequential


def test_the_weights_content_is_the_models_identity_hashed_once(tmp_path, model_dir, monkeypatch) -> None:
    before = key(tmp_path, model=str(model_dir))
    moved = tmp_path / "elsewhere"
    model_dir.rename(moved)
    assert key(tmp_path, model=str(moved)) == before  # same bytes under another path or name
    (moved / "model.bin").write_bytes(b"weights v2, fine-tuned")
    assert key(tmp_path, model=str(moved)) != before
    recorded = json.loads((tmp_path / "models" / DIGESTS_FILE).read_text())
    assert str((moved / "model.bin").resolve()) in recorded

    cache_keys._file_digest.cache_clear()  # a new process: the digests file answers, nothing is read again
    monkeypatch.setattr(cache_keys, "sha256_file", lambda path: pytest.fail(f"{path} hashed again"))
    key(tmp_path, model=str(moved))


def test_the_engine_version_names_its_packages_and_the_decoders_code() -> None:
    version = engine_version("faster-whisper")
    assert "faster-whisper==" in version and "ctranslate2==" in version and "decoder=" in version
    assert engine_version("openai-whisper") != version
