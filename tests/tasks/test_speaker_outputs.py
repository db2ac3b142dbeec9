"""Speaker labels in every output: VTT voice spans (webvtt-py), SRT/TXT prefixes, JSON keys, NIST RTTM."""

from __future__ import annotations

import json
import subprocess

import pytest
import webvtt

from batchscribe.audio import ffmpeg_exe
from batchscribe.diarization import assign_speakers
from batchscribe.options import ALL_FORMATS, SPEAKER_FORMATS, BatchRequest, DiarizeOptions, OutputOptions
from batchscribe.transcript import Segment, SpeakerTurn, Transcript, Word
from batchscribe.writers import write_outputs

TURNS = (
    SpeakerTurn(0.0, 3.0, "SPEAKER_00"),
    SpeakerTurn(3.2, 6.0, "SPEAKER_01"),
    SpeakerTurn(6.3, 9.0, "SPEAKER_02"),
)


def _worded(start_s: float, text: str) -> tuple[Word, ...]:
    return tuple(Word(start_s + i * 0.5, start_s + i * 0.5 + 0.4, f" {w}", 0.9) for i, w in enumerate(text.split()))


RAW = Transcript(
    "en",
    0.99,
    9.0,
    (
        Segment(0, 0.2, 5.8, " Good morning & welcome. Thank you, glad to be here.",
                words=_worded(0.2, "Good morning & welcome.") + _worded(3.4, "Thank you, glad to be here.")),
        Segment(1, 6.4, 8.8, " And <now> the news."),
    ),
)  # fmt: skip
LABELLED = assign_speakers(RAW, TURNS)


def test_every_format_names_its_speakers(tmp_path) -> None:
    options = OutputOptions(formats=(*ALL_FORMATS, *SPEAKER_FORMATS))
    paths = write_outputs(LABELLED, "show/morning show.mp3", str(tmp_path), options)

    vtt = webvtt.read(paths["vtt"])
    assert [c.voice for c in vtt.captions] == ["SPEAKER_00", "SPEAKER_01", "SPEAKER_02"]
    assert [c.text for c in vtt.captions][:2] == ["Good morning &amp; welcome.", "Thank you, glad to be here."]
    assert "&lt;now&gt;" in open(paths["vtt"], encoding="utf-8").read()  # still escaped inside a voice span

    srt = open(paths["srt"], encoding="utf-8").read()
    assert "[SPEAKER_00]: Good morning & welcome." in srt and "[SPEAKER_01]: Thank you, glad to be here." in srt
    assert [line.split("]: ")[0] + "]" for line in open(paths["txt"], encoding="utf-8").read().splitlines()] == [
        "[SPEAKER_00]",
        "[SPEAKER_01]",
        "[SPEAKER_02]",
    ]

    result = json.loads(open(paths["json"], encoding="utf-8").read())
    assert [s["speaker"] for s in result["segments"]] == ["SPEAKER_00", "SPEAKER_01", "SPEAKER_02"]
    assert {w["speaker"] for w in result["segments"][1]["words"]} == {"SPEAKER_01"}

    rows = [line.split() for line in open(paths["rttm"], encoding="utf-8").read().splitlines()]
    assert len(rows) == len(TURNS) and all(len(row) == 10 for row in rows)
    for row, turn in zip(rows, TURNS):
        kind, file_id, channel, start, duration, ortho, stype, name, conf, lookahead = row
        assert (kind, file_id, channel, name) == ("SPEAKER", "morning_show.mp3", "1", turn.speaker)
        assert float(start) == pytest.approx(turn.start_s) and float(duration) == pytest.approx(
            turn.end_s - turn.start_s
        )
        assert (ortho, stype, conf, lookahead) == ("<NA>",) * 4


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_ffmpeg_reads_labelled_subtitles(tmp_path, fmt) -> None:
    path = write_outputs(LABELLED, "talk.mp3", str(tmp_path), OutputOptions(formats=(fmt,)))[fmt]
    ass = tmp_path / "talk.ass"
    subprocess.run(
        [ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-i", path, str(ass)], check=True, capture_output=True
    )
    dialogue = [line for line in ass.read_text(encoding="utf-8").splitlines() if line.startswith("Dialogue:")]
    assert len(dialogue) == 3
    if fmt == "srt":  # ffmpeg drops the <now> it takes for a tag; the prefix survives as text
        assert [d.split(",,")[-1].split("]: ")[0] for d in dialogue] == ["[SPEAKER_00", "[SPEAKER_01", "[SPEAKER_02"]


def test_undiarized_outputs_are_unchanged(tmp_path) -> None:
    paths = write_outputs(RAW, "talk.mp3", str(tmp_path), OutputOptions())
    assert set(paths) == set(ALL_FORMATS)  # no rttm by default
    for fmt in ("txt", "srt", "vtt"):
        assert "SPEAKER" not in open(paths[fmt], encoding="utf-8").read()
    assert "speaker" not in json.loads(open(paths["json"], encoding="utf-8").read())["segments"][0]


def test_rttm_is_added_only_when_diarizing() -> None:
    assert BatchRequest(inputs=["a.mp3"], output="out").outputs.formats == ALL_FORMATS
    diarized = BatchRequest(inputs=["a.mp3"], output="out", diarize=DiarizeOptions(enabled=True))
    assert diarized.outputs.formats == (*ALL_FORMATS, "rttm")
    chosen = BatchRequest(
        inputs=["a.mp3"], output="out", diarize=DiarizeOptions(enabled=True), outputs=OutputOptions(formats=("srt",))
    )
    assert chosen.outputs.formats == ("srt",)
    with pytest.raises(ValueError, match="rttm format needs diarization"):
        BatchRequest(inputs=["a.mp3"], output="out", outputs=OutputOptions(formats=("rttm",)))
    with pytest.raises(ValueError, match="min_speakers"):
        DiarizeOptions(min_speakers=4, max_speakers=2)


def test_the_ui_form_shows_the_diarization_options() -> None:
    from prefect.utilities.callables import parameter_schema

    from flows.transcribe_batch import transcribe_batch

    definitions = parameter_schema(transcribe_batch).model_dump()["definitions"]
    fields = definitions["DiarizeOptions"]["properties"]
    assert {"enabled", "num_speakers", "min_speakers", "max_speakers", "merge_threshold"} <= set(fields)
    assert fields["enabled"]["default"] is False and fields["merge_threshold"]["default"] == 0.8
    assert all(field.get("description") for field in fields.values())
