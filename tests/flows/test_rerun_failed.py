"""rerun-failed on a real Prefect server: only the failed file runs again, and the manifest keeps every row."""

import shutil
from pathlib import Path

import pytest

from batchscribe.engines.faster import FasterWhisperEngine
from batchscribe.manifest import read_manifest
from batchscribe.options import BatchRequest
from flows.rerun_failed import RerunRequest, rerun_failed, select_reruns
from flows.transcribe_batch import transcribe_batch

SPEECH = Path(__file__).resolve().parents[1] / "fixtures" / "speech"


@pytest.fixture
def transcriptions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The audio paths the real engine transcribed (the real method still runs)."""
    calls: list[str] = []
    real = FasterWhisperEngine.transcribe_file

    def transcribe(self, audio_path, *args, **kwargs):
        calls.append(str(audio_path))
        return real(self, audio_path, *args, **kwargs)

    monkeypatch.setattr(FasterWhisperEngine, "transcribe_file", transcribe)
    return calls


def test_rerun_failed_redoes_only_the_fixed_file(prefect_server, cache_dir, tmp_path, transcriptions) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "talks").mkdir(parents=True)
    shutil.copy(SPEECH / "en2.mp3", inbox / "talks" / "en2.mp3")
    shutil.copy(SPEECH / "es.mp3", inbox / "es.mp3")
    (inbox / "talks" / "notes.mp3").write_text("meeting notes, not audio\n")
    out = tmp_path / "out"
    first = transcribe_batch(
        BatchRequest(inputs=[str(inbox)], output=str(out), cache_dir=str(cache_dir)), return_state=True
    )
    assert first.is_failed()
    before = read_manifest(out).set_index("relative_path")
    assert before["status"].to_dict() == {"es.mp3": "ok", "talks/en2.mp3": "ok", "talks/notes.mp3": "failed"}
    assert len(transcriptions) == 2

    shutil.copy(SPEECH / "en.wav", inbox / "talks" / "notes.mp3")  # fix the file: real speech under the old name
    request = RerunRequest(manifest=str(out / "manifest.parquet"), cache_dir=str(cache_dir))
    # Alone, notes.mp3's common folder is talks/; its key must stay talks/notes.mp3.
    assert select_reruns(read_manifest(out), request) == {str(inbox / "talks" / "notes.mp3"): "talks/notes.mp3"}

    after = rerun_failed(request).set_index("relative_path")

    assert len(transcriptions) == 3  # only the fixed file was transcribed again
    assert len(after) == len(before) and (after["status"] == "ok").all()
    assert after.loc["talks/notes.mp3", "language"] == "en"
    assert after.loc["talks/notes.mp3", "srt_path"] == "talks/notes.mp3.srt"  # relative to the manifest
    assert (out / "talks" / "notes.mp3.srt").read_text().startswith("1\n")
    for key in ("es.mp3", "talks/en2.mp3"):  # untouched rows come back as they were
        assert after.loc[key, "sha256"] == before.loc[key, "sha256"]
        assert after.loc[key, "finished_at"] == before.loc[key, "finished_at"]

    assert rerun_failed(request).equals(read_manifest(out))  # nothing left to rerun: no subflow, same manifest
    assert len(transcriptions) == 3


def test_select_reruns_statuses_and_extra_inputs(tmp_path) -> None:
    from batchscribe.manifest import normalize

    new = tmp_path / "new.mp3"
    new.write_bytes(b"x")
    manifest = normalize(
        [
            {"source": "/in/a.mp3", "relative_path": "a.mp3", "status": "ok"},
            {"source": "/in/b.mp3", "relative_path": "b.mp3", "status": "failed"},
            {"source": "/in/c.mp4", "relative_path": "c.mp4", "status": "no_audio"},
        ]
    )
    both = RerunRequest(manifest=str(tmp_path), statuses=["failed", "no_audio"], extra_inputs=[str(new)])
    assert select_reruns(manifest, both) == {"/in/b.mp3": "b.mp3", "/in/c.mp4": "c.mp4", str(new): "new.mp3"}
    known = RerunRequest(manifest=str(tmp_path), extra_inputs=["/in/a.mp3"])  # has a row already: not added
    assert select_reruns(manifest, known) == {"/in/b.mp3": "b.mp3"}
    assert RerunRequest(manifest=f"file://{tmp_path}/manifest.parquet").output_root() == str(tmp_path)
    assert RerunRequest(manifest="s3://bucket/out/manifest.parquet").output_root() == "s3://bucket/out"
    assert RerunRequest(manifest="s3://bucket/out/").output_root() == "s3://bucket/out"


def test_resolve_inputs_keeps_pinned_relative_paths(tmp_path) -> None:
    from batchscribe.inputs import resolve_inputs

    (tmp_path / "a").mkdir()
    talk = tmp_path / "a" / "talk.mp3"
    talk.write_bytes(b"x")
    assert [i.relative_path for i in resolve_inputs([str(talk)])] == ["talk.mp3"]  # alone, its folder is the root
    pinned = resolve_inputs([str(talk), str(tmp_path / "gone.mp3")], {str(talk): "a/talk.mp3", "/x": "x"})
    assert [(i.relative_path, i.error) for i in pinned] == [
        ("a/talk.mp3", ""),
        ("gone.mp3", f"file not found: {tmp_path}/gone.mp3"),
    ]
    assert resolve_inputs([str(talk)], {str(talk): "../../etc/passwd"})[0].relative_path == "etc/passwd"


def test_each_rerun_file_keeps_its_own_recorded_options_and_diarization(tmp_path) -> None:
    import json

    from batchscribe.manifest import normalize
    from flows.rerun_failed import rerun_batches

    beam2 = json.dumps({"beam_size": 2, "language": "en"})
    manifest = normalize(
        [
            {"source": "/in/a.mp3", "relative_path": "a.mp3", "status": "failed", "options": beam2, "formats": "srt"},
            {"source": "/in/b.mp3", "relative_path": "b.mp3", "status": "failed", "formats": "txt,srt",
             "max_line_width": 30, "diarize": json.dumps({"enabled": True, "num_speakers": 2})},
            {"source": "/in/c.mp3", "relative_path": "c.mp3", "status": "cancelled", "rttm_path": "c.mp3.rttm"},
        ]
    )  # fmt: skip
    request = RerunRequest(manifest=str(tmp_path), outputs={"max_line_count": 1})
    reruns = select_reruns(manifest, request)
    assert set(reruns.values()) == {"a.mp3", "b.mp3", "c.mp3"}  # cancelled rows are rerun by default
    batches = {next(iter(b.relative_paths.values())): b for b in rerun_batches(manifest, reruns, request)}
    assert sorted(batches) == ["a.mp3", "b.mp3", "c.mp3"] and all(len(b.inputs) == 1 for b in batches.values())
    a, b, c = batches["a.mp3"], batches["b.mp3"], batches["c.mp3"]
    assert (a.transcribe.beam_size, a.transcribe.language, a.outputs.formats) == (2, "en", ("srt",))
    assert not a.diarize.enabled
    assert b.transcribe.beam_size == 5 and (b.outputs.formats, b.outputs.max_line_width) == (("txt", "srt"), 30)
    assert b.diarize.enabled and b.diarize.num_speakers == 2
    assert c.diarize.enabled  # a row from before the diarize column: its RTTM file says it was diarized
    assert {x.outputs.max_line_count for x in (a, b, c)} == {1}  # the one change asked for applies to all
    forced = RerunRequest(manifest=str(tmp_path), transcribe={"beam_size": 3}, diarize={"enabled": False})
    forced_batches = rerun_batches(manifest, reruns, forced)
    assert {(x.transcribe.beam_size, x.diarize.enabled) for x in forced_batches} == {(3, False)}
