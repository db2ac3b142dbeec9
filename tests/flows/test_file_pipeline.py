"""A file's way through the tasks, run in this process without a Prefect server (a stand-in engine)."""

from pathlib import Path

import pytest
from prefect import task

from batchscribe.engines import register_engine
from batchscribe.errors import UnavailableError
from batchscribe.media import InputItem
from batchscribe.options import BatchRequest, TranscribeOptions
from batchscribe.result_cache import ResultCache
from batchscribe.retries import Attempts
from flows.file_pipeline import FilePipeline
from flows.transcribe_batch import file_groups
from tests.fakes import FakeEngine

SPEECH = Path(__file__).resolve().parents[1] / "fixtures" / "speech"


def pipeline(tmp_path: Path, **options) -> FilePipeline:
    request = BatchRequest(
        inputs=[str(SPEECH)],
        output=str(tmp_path / "out"),
        cache_dir=str(tmp_path / "cache"),
        transcribe=TranscribeOptions(engine="faster-whisper", device="cpu", model=str(tmp_path / "model"), **options),
    )
    options = request.transcribe.resolved()
    return FilePipeline(request, options, request.output, request.cache_dir, ResultCache(request.cache_dir))


def test_a_cached_file_is_not_decoded_or_transcribed_again_whatever_the_batch_size(tmp_path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.bin").write_bytes(b"stand-in weights")
    engine = FakeEngine(TranscribeOptions(engine="faster-whisper", device="cpu", model=str(tmp_path / "model")))
    register_engine(engine, tmp_path / "cache")
    (tmp_path / "notes.mp3").write_text("not audio")
    items = [InputItem(str(SPEECH / "en2.mp3"), "en2.mp3"), InputItem(str(tmp_path / "notes.mp3"), "notes.mp3")]

    first = [pipeline(tmp_path).run(item) for item in items]
    again = [pipeline(tmp_path, batch_size=16).run(item) for item in items]

    assert engine.calls == 1  # en2.mp3 once; notes.mp3 never reaches the model
    assert [r["status"] for r in first] == [r["status"] for r in again] == ["ok", "failed"]
    assert first[0]["finished_at"] == again[0]["finished_at"] and first[0]["duration_s"] > 5
    assert (tmp_path / "out" / "en2.mp3.srt").is_file() and not list((tmp_path / "cache" / "audio").iterdir())


def test_groups_balance_the_workers_and_stay_small() -> None:
    items = [InputItem(f"/in/{i}.mp3", f"{i}.mp3") for i in range(300)]
    groups = file_groups(items, workers=8)
    assert [len(g.items) for g in groups] == [10] * 30 and groups[0].name == "0.mp3 and 9 more"
    assert [len(g.items) for g in file_groups(items[:5], workers=1)] == [2, 2, 1]
    assert max(len(g.items) for g in file_groups(items * 100, workers=8)) == 64  # 30,000 files: 469 task runs
    assert [item for g in groups for item in g.items] == items


def test_a_files_transient_failure_is_retried_with_its_tasks_policy() -> None:
    calls = []

    @task(retries=2, retry_delay_seconds=0)
    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise UnavailableError("connection reset")
        return "staged"

    attempts = Attempts()
    assert attempts.call(flaky) == "staged" and attempts.count == 3

    @task(retries=2, retry_delay_seconds=0)
    def broken() -> None:
        raise ValueError("a bug is not retried")

    attempts = Attempts()
    with pytest.raises(ValueError, match="not retried"):
        attempts.call(broken)
    assert attempts.count == 1
