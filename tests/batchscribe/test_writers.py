"""Writers, cue layout, output paths and atomic export; ffmpeg is the independent reader of SRT/VTT."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess

import imageio_ffmpeg
import pytest

from batchscribe import atomic
from batchscribe.cues import format_timestamp, layout_cues
from batchscribe.options import ALL_FORMATS, OutputOptions
from batchscribe.transcript import Segment, Transcript, Word
from batchscribe.writers import WRITERS, WriteSRT, WriteTSV, WriteVTT, output_paths, sidecar_collisions, write_outputs
from tasks.subtitles import export_subtitles

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
HOUR_S = 3600.0


def _words(start_s: float, end_s: float, text: str) -> tuple[Word, ...]:
    """Words spread evenly over [start_s, end_s], each with whisper's leading space."""
    tokens = text.split()
    step_s = (end_s - start_s) / len(tokens)
    return tuple(
        Word(start_s + i * step_s, start_s + (i + 1) * step_s, " " + token, 0.9) for i, token in enumerate(tokens)
    )


def _transcript(*segments: tuple[float, float, str], with_words: bool = False) -> Transcript:
    return Transcript(
        language="en",
        language_probability=0.98,
        duration_s=max(end for _, end, _ in segments),
        segments=tuple(
            Segment(
                id=i,
                start_s=start,
                end_s=end,
                text=text,
                words=_words(start, end, text) if with_words and text.strip() else (),
            )
            for i, (start, end, text) in enumerate(segments)
        ),
    )


PLAIN = _transcript(
    (0.0, 1.5, " Hello world."),
    (1.5, 4.0, " Ça va? Très bien, R&D à 日本語のテキスト."),
    (4.0, 4.0, " Zero length."),
    (4.5, 5.0, "   "),  # empty: no cue
    (HOUR_S + 125.25, HOUR_S + 127.0, " Past an hour."),
)

LONG_TEXT = (
    " The quick brown fox jumps over the lazy dog while the band plays on and the crowd, which had"
    " gathered since morning, slowly begins to disperse into the narrow streets of the old town."
)
WORDED = _transcript(
    (0.0, 12.0, LONG_TEXT),
    (12.5, 14.0, " Über naïve café, déjà vu."),
    (HOUR_S + 1.0, HOUR_S + 9.0, LONG_TEXT),
    with_words=True,
)


def _render(writer, transcript: Transcript, options: OutputOptions | None = None) -> str:
    buffer = io.StringIO()
    writer().write_result(transcript, buffer, options or OutputOptions(subtitle_style="none"))
    return buffer.getvalue()


def _ms(timestamp: str) -> int:
    """`[HH:]MM:SS[,.]mmm` to milliseconds."""
    *hours, minutes, seconds = re.split(r":", timestamp.replace(",", "."))
    hours_ms = int(hours[0]) * 3_600_000 if hours else 0
    return hours_ms + int(minutes) * 60_000 + round(float(seconds) * 1000)


def _parse_srt(text: str) -> list[tuple[int, int, int, str]]:
    """(number, start_ms, end_ms, text) per cue."""
    cues = []
    for block in re.split(r"\r?\n\r?\n", text.strip()):
        number, times, *lines = block.splitlines()
        start, end = times.split(" --> ")
        cues.append((int(number), _ms(start), _ms(end), "\n".join(lines)))
    return cues


def _ffmpeg_srt(path: str) -> list[tuple[int, int, int, str]]:
    """Let ffmpeg read our subtitle file and re-emit it as SRT."""
    completed = subprocess.run(
        [FFMPEG, "-nostdin", "-v", "error", "-i", path, "-f", "srt", "-"],
        check=True,
        capture_output=True,
    )
    return _parse_srt(completed.stdout.decode("utf-8"))


def _expected(transcript: Transcript, options: OutputOptions) -> list[tuple[int, int, str]]:
    width, count = options.max_line_width, options.max_line_count
    cues = layout_cues(transcript, max_line_width=width, max_line_count=count, style=options.subtitle_style)
    return [(round(c.start_s * 1000), round(c.end_s * 1000), c.text) for c in cues]


# --- timestamps and writers ---------------------------------------------------------------------------


def test_format_timestamp():
    assert format_timestamp(1.5) == "00:01.500"
    assert format_timestamp(1.5, always_include_hours=True, decimal_marker=",") == "00:00:01,500"
    assert format_timestamp(HOUR_S + 125.25) == "01:02:05.250"
    assert format_timestamp(59.9996) == "01:00.000"  # rounds up across the minute
    assert format_timestamp(-0.2) == "00:00.000"


def test_srt_numbered_from_one_with_hours_and_comma():
    srt = _render(WriteSRT, PLAIN)
    cues = _parse_srt(srt)
    assert [c[0] for c in cues] == [1, 2, 3, 4]  # the blank segment is skipped
    assert "1\n00:00:00,000 --> 00:00:01,500\nHello world.\n\n" in srt
    assert "00:00:01,500 --> 00:00:04,000\nÇa va? Très bien, R&D à 日本語のテキスト." in srt
    assert "00:00:04,000 --> 00:00:04,000\nZero length." in srt
    assert "4\n01:02:05,250 --> 01:02:07,000\nPast an hour." in srt


def test_vtt_header_and_dot_marker():
    vtt = _render(WriteVTT, PLAIN)
    assert vtt.startswith("WEBVTT\n\n")
    assert "00:00.000 --> 00:01.500\nHello world.\n\n" in vtt
    assert "01:02:05.250 --> 01:02:07.000\nPast an hour." in vtt
    assert "R&amp;D" in vtt  # WebVTT cue text escapes &, < and >
    assert not re.search(r"\d,\d{3}", vtt)


def test_tsv_integer_milliseconds():
    rows = [line.split("\t") for line in _render(WriteTSV, PLAIN).splitlines()]
    assert rows[0] == ["start", "end", "text"]
    assert rows[1] == ["0", "1500", "Hello world."]
    assert rows[-1] == ["3725250", "3727000", "Past an hour."]
    assert all(int(row[0]) <= int(row[1]) for row in rows[1:])


def test_json_round_trip():
    raw = _render(WRITERS["json"], PLAIN)
    assert "日本語" in raw  # ensure_ascii=False
    result = json.loads(raw)
    assert {"text", "segments", "language"} <= result.keys()
    assert result["language"] == "en"
    assert result["text"] == "".join(segment["text"] for segment in result["segments"])
    assert result["text"] == PLAIN.text


def test_txt_one_line_per_nonempty_segment():
    assert _render(WRITERS["txt"], PLAIN).splitlines() == [
        "Hello world.",
        "Ça va? Très bien, R&D à 日本語のテキスト.",
        "Zero length.",
        "Past an hour.",
    ]


def test_writers_cover_every_format():
    assert set(WRITERS) == set(ALL_FORMATS) | {"rttm"}
    assert all(WRITERS[fmt].extension == fmt for fmt in ALL_FORMATS)
    assert WriteSRT.write_result is WriteVTT.write_result  # one subtitles base, only attributes differ


# --- cue layout ---------------------------------------------------------------------------------------


def test_clamps_skips_and_never_emits_arrow():
    transcript = _transcript((2.0, 1.0, " backwards --> and ---> arrows"), (3.0, 4.0, ""), (4.0, 5.0, " \n "))
    cues = layout_cues(transcript)
    assert len(cues) == 1
    assert cues[0].start_s == 2.0 and cues[0].end_s == 2.0
    assert cues[0].text == "backwards -> and -> arrows"
    srt_lines = _render(WriteSRT, transcript).splitlines()
    assert [line for line in srt_lines if "-->" in line] == ["00:00:02,000 --> 00:00:02,000"]


@pytest.mark.parametrize("width, count", [(42, 2), (20, 1), (12, 3), (60, None)])
def test_word_layout_honours_limits(width, count):
    cues = layout_cues(WORDED, max_line_width=width, max_line_count=count)
    for cue in cues:
        lines = cue.text.split("\n")
        assert count is None or len(lines) <= count
        assert all(0 < len(line) <= width for line in lines)
        assert cue.start_s <= cue.end_s
    # Every word, in order, exactly once, and cues never overlap.
    assert " ".join(" ".join(c.text.split()) for c in cues) == " ".join(WORDED.text.split())
    assert all(a.end_s <= b.start_s for a, b in zip(cues, cues[1:]))
    # Cue times are word times: the first cue starts with the first word.
    assert cues[0].start_s == WORDED.segments[0].words[0].start_s


def test_word_layout_breaks_at_segment_ends_and_long_pauses():
    words = (Word(0.0, 0.5, " before", 0.9), Word(0.5, 1.0, " pause", 0.9), Word(4.5, 5.0, " after", 0.9))
    transcript = Transcript("en", 1.0, 5.0, (Segment(0, 0.0, 5.0, " before pause after", words=words),))
    cues = layout_cues(transcript, max_line_width=80, max_line_count=2)
    assert [(c.start_s, c.end_s, c.text) for c in cues] == [(0.0, 1.0, "before pause"), (4.5, 5.0, "after")]
    # A cue never spans two segments, even when both would fit.
    cues = layout_cues(WORDED, max_line_width=200, max_line_count=10)
    assert [c.text for c in cues][1] == "Über naïve café, déjà vu."


@pytest.mark.parametrize("width, count", [(42, 2), (20, 1), (30, None)])
def test_segment_layout_without_words_wraps_and_splits_time(width, count):
    transcript = _transcript((10.0, 22.0, LONG_TEXT), (22.0, 23.0, " Short."))
    cues = layout_cues(transcript, max_line_width=width, max_line_count=count)
    for cue in cues:
        lines = cue.text.split("\n")
        assert count is None or len(lines) <= count
        assert all(len(line) <= width for line in lines)
    long_cues = cues[:-1]
    assert long_cues[0].start_s == 10.0 and long_cues[-1].end_s == pytest.approx(22.0)
    assert all(a.end_s == pytest.approx(b.start_s) for a, b in zip(long_cues, long_cues[1:]))
    # Time is shared in proportion to characters.
    chars = [len(c.text.replace("\n", "")) for c in long_cues]
    for cue, n in zip(long_cues, chars):
        assert cue.end_s - cue.start_s == pytest.approx(12.0 * n / sum(chars))
    assert (cues[-1].start_s, cues[-1].end_s, cues[-1].text) == (22.0, 23.0, "Short.")


def test_no_limits_means_one_cue_per_segment_even_with_words():
    assert [c.text for c in layout_cues(WORDED)] == [s.text.strip() for s in WORDED.segments]


# --- paths and atomic export --------------------------------------------------------------------------


def test_output_paths_mirror_the_input(tmp_path):
    root = str(tmp_path)
    paths = output_paths("a/talk.mp3", root, ("srt", "json"))
    assert paths == {
        "srt": os.path.join(root, "a", "talk.mp3.srt"),
        "json": os.path.join(root, "a", "talk.mp3.json"),
    }
    assert output_paths("./a//talk.mp3", root, ("srt",)) == {"srt": paths["srt"]}
    assert output_paths("a\\talk.mp3", root, ("srt",)) == {"srt": paths["srt"]}


def test_sidecar_layout_names_files_as_players_look_for_them(tmp_path):
    root = str(tmp_path)
    paths = output_paths("a/talk.mp4", root, ("srt", "vtt"), layout="sidecar", language="en")
    assert paths == {"srt": os.path.join(root, "a", "talk.en.srt"), "vtt": os.path.join(root, "a", "talk.en.vtt")}
    full = output_paths("a/talk.mp4", root, ("srt",), layout="sidecar", language="en", keep_full_name=True)
    assert full == {"srt": os.path.join(root, "a", "talk.mp4.en.srt")}
    written = write_outputs(PLAIN, "a/talk.mp4", root, OutputOptions(formats=("srt",), layout="sidecar"))
    assert written == {"srt": os.path.join(root, "a", "talk.en.srt")} and os.path.isfile(written["srt"])


def test_sidecar_collisions_are_inputs_sharing_folder_and_stem():
    keys = ["a/talk.mp3", "a/talk.wav", "b/talk.mp3", "a/intro.mp3", "a/talk.mp3"]
    assert sidecar_collisions(keys) == {"a/talk.mp3", "a/talk.wav"}
    assert sidecar_collisions(["talk.mp3"]) == set()


@pytest.mark.parametrize("first, second", [("talk.mp3", "talk.wav"), ("a/x.mp3", "b/x.mp3"), ("x.mp3", "x/mp3")])
def test_output_paths_never_collide(tmp_path, first, second):
    a = output_paths(first, str(tmp_path), ALL_FORMATS)
    b = output_paths(second, str(tmp_path), ALL_FORMATS)
    assert not set(a.values()) & set(b.values())


@pytest.mark.parametrize(
    "relative_path",
    [
        "",
        ".",
        "../x.mp3",
        "a/../../x.mp3",
        "a/..",
        "/etc/passwd",
        "C:/x.mp3",
        "c:x.mp3",
        "..\\x.mp3",
        "a\\..\\..\\x.mp3",
        "\\\\server\\share\\x.mp3",
        "x\0.mp3",
    ],
)
def test_output_paths_refuse_escapes(tmp_path, relative_path):
    with pytest.raises(ValueError):
        output_paths(relative_path, str(tmp_path), ("srt",))
    with pytest.raises(ValueError):
        write_outputs(PLAIN, relative_path, str(tmp_path / "out"), OutputOptions())
    assert not (tmp_path / "out").exists()


def test_write_outputs_atomic_and_complete(tmp_path):
    root = tmp_path / "out"
    paths = write_outputs(PLAIN, "talks/2024/talk.mp3", str(root), OutputOptions())
    assert set(paths) == set(ALL_FORMATS)
    folder = root / "talks" / "2024"
    assert sorted(os.listdir(folder)) == sorted(f"talk.mp3.{fmt}" for fmt in ALL_FORMATS)  # no temp files
    assert (folder / "talk.mp3.txt").read_text(encoding="utf-8").startswith("Hello world.\n")
    assert "日本語" in (folder / "talk.mp3.srt").read_bytes().decode("utf-8")
    # Rewriting replaces in place.
    write_outputs(WORDED, "talks/2024/talk.mp3", str(root), OutputOptions(formats=("txt",)))
    assert (folder / "talk.mp3.txt").read_text(encoding="utf-8").startswith("The quick brown fox")
    assert len(os.listdir(folder)) == len(ALL_FORMATS)


def test_failed_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    root = str(tmp_path)
    write_outputs(PLAIN, "talk.mp3", root, OutputOptions(formats=("srt",)))
    before = (tmp_path / "talk.mp3.srt").read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_outputs(WORDED, "talk.mp3", root, OutputOptions(formats=("srt",)))
    assert os.listdir(tmp_path) == ["talk.mp3.srt"]
    assert (tmp_path / "talk.mp3.srt").read_bytes() == before


def test_export_subtitles_task_fn(tmp_path):
    options = OutputOptions(formats=("srt", "vtt"), max_line_width=42, max_line_count=2)
    paths = export_subtitles.fn(WORDED, "a/talk.mp3", str(tmp_path), options)
    assert paths == output_paths("a/talk.mp3", str(tmp_path), ("srt", "vtt"))
    assert all(os.path.isfile(path) for path in paths.values())
    assert export_subtitles.retries == 0


# --- ffmpeg as an independent reader ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
@pytest.mark.parametrize(
    "transcript, options",
    [
        (PLAIN, OutputOptions()),
        (PLAIN, OutputOptions(max_line_width=12, max_line_count=2)),
        (WORDED, OutputOptions(max_line_width=42, max_line_count=2)),
        (WORDED, OutputOptions(max_line_width=20, max_line_count=1)),
        (WORDED, OutputOptions(subtitle_style="none", max_line_width=42, max_line_count=2)),
        (WORDED, OutputOptions(subtitle_style="bbc")),
    ],
    ids=["plain", "plain-wrapped", "words-42x2", "words-20x1", "none-42x2", "bbc"],
)
def test_ffmpeg_reads_what_we_write(tmp_path, fmt, transcript, options):
    options = options.model_copy(update={"formats": (fmt,)})
    path = write_outputs(transcript, "clip.mp4", str(tmp_path), options)[fmt]
    cues = _ffmpeg_srt(path)
    assert [c[0] for c in cues] == list(range(1, len(cues) + 1))
    assert [c[1:] for c in cues] == _expected(transcript, options)


def test_ffmpeg_reads_vtt_escapes_back(tmp_path):
    transcript = _transcript((1.0, 2.0, " <i>not a tag</i> a < b & c > d"))
    path = write_outputs(transcript, "clip.mp4", str(tmp_path), OutputOptions(formats=("vtt",)))["vtt"]
    assert _ffmpeg_srt(path) == [(1, 1000, 2000, "<i>not a tag</i> a < b & c > d")]
