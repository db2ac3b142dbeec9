"""Several devices in one worker, on the CPU: two model copies, two window schedulers, files spread over both."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jiwer
import pytest

from batchscribe.audio import decode_audio
from batchscribe.engines import load_engine
from batchscribe.options import TranscribeOptions
from flows.cli_args import build_parser, request_from_args

SPEECH = Path(__file__).resolve().parents[1] / "fixtures" / "speech"
NAMES = ("en.wav", "en2.mp3", "es.mp3", "fr.mp3")
WER_BOUND = 0.3  # base, greedy search, on these clips in three languages


@pytest.fixture(scope="module")
def pcm(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pcm")
    return {name: Path(decode_audio(SPEECH / name, d / f"{name}.s16le").path) for name in NAMES}


def wer(reference: str, hypothesis: str) -> float:
    words = lambda t: " ".join(re.sub(r"[^\w']+", " ", t.lower()).split())  # noqa: E731
    return jiwer.wer(words(reference), words(hypothesis))


def _transcribe(engine, pcm: dict[str, Path], options: TranscribeOptions, together: bool) -> dict[str, str]:
    """Every file through `engine`: all at once, one thread each (as the flow's workers hand them over), or
    one after another (each file decoded alone on its device, as on a single device)."""
    with ThreadPoolExecutor(len(pcm) if together else 1) as pool:
        futures = {name: pool.submit(engine.transcribe_file, path, options) for name, path in pcm.items()}
        return {name: future.result(timeout=600).transcript.text for name, future in futures.items()}


def test_two_devices_share_the_files_and_say_the_same_words(pcm, clips, session_cache) -> None:
    one = TranscribeOptions(device="cpu", beam_size=1, temperatures=(0.0,)).resolved()
    two = one.model_copy(update={"device_index": (0, 1)}).resolved()
    assert one.device_index == (0,) and two.device_index == (0, 1)
    assert one.cache_hash() == two.cache_hash()  # where it runs is no part of the cache key
    engine = load_engine(two, session_cache)
    assert len(engine.pool.models) == 2 and engine.pool.models[0] is not engine.pool.models[1]

    together = _transcribe(engine, pcm, two, together=True)
    assert engine.pool.dealt == [2, 2] and engine.pool.in_flight == [0, 0]  # each file dealt once, evenly
    assert all(engine.pool.scheduler(slot).batch_sizes for slot in (0, 1))  # both devices decoded batches
    for name in NAMES:  # files that share rows on one device read about the same (packing is the lead's test)
        assert wer(clips[name]["text"], together[name]) < WER_BOUND, (name, together[name])

    # One file at a time: the two devices take turns, and each file reads word for word as on one device.
    alone = _transcribe(load_engine(one, session_cache), pcm, one, together=False)
    spread = _transcribe(engine, pcm, two, together=False)
    assert engine.pool.dealt == [4, 4]
    assert spread == alone


def test_device_numbers_reach_the_request() -> None:
    args = build_parser().parse_args(["run", "talk.mp3", "-o", "out", "--device", "cpu", "--device-index", "0,1"])
    assert request_from_args(args).transcribe.device_index == (0, 1)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "talk.mp3", "-o", "out", "--device-index", "zero"])
