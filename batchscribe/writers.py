"""Writers: a transcript as txt, vtt, srt, tsv, json (and rttm) files that mirror the input's path.

The writers follow openai-whisper's `whisper/utils.py`, over our typed `Transcript`: a base `ResultWriter`
owns one `write_result` per format, SRT and VTT share a subtitles base, and `WRITERS` maps format names to
writers. Cues come from `batchscribe.cues`.

A diarized transcript's speakers show as `<v SPEAKER_00>` voice spans in VTT (the W3C way), a
`[SPEAKER_00]: ` prefix in SRT and TXT, `speaker` keys in JSON (WhisperX's way), and its turns as NIST RTTM.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections import defaultdict
from collections.abc import Iterable
from typing import ClassVar, TextIO

from batchscribe.cues import format_timestamp, layout_cues, speaker_prefix
from batchscribe.options import FormatName, LayoutName, OutputOptions
from batchscribe.paths import checked_parts
from batchscribe.storage import StorageOptions, write_bytes_atomic
from batchscribe.transcript import Transcript
from batchscribe.urls import is_url


class ResultWriter:
    """Writes one format; subclasses set `extension` and override `write_result`."""

    extension: ClassVar[str]

    def __init__(self, file_id: str = "audio") -> None:
        self.file_id = file_id  # names the recording inside formats that carry one (RTTM)

    def write_result(self, transcript: Transcript, file: TextIO, options: OutputOptions) -> None:
        raise NotImplementedError


class WriteTXT(ResultWriter):
    extension = "txt"

    def write_result(self, transcript: Transcript, file: TextIO, options: OutputOptions) -> None:
        for segment in transcript.segments:
            if text := segment.text.strip():
                print(speaker_prefix(segment.speaker) + text, file=file)


class SubtitlesWriter(ResultWriter):
    """SRT and VTT: the same cues, different headers, numbering and timestamps."""

    always_include_hours: ClassVar[bool]
    decimal_marker: ClassVar[str]
    header: ClassVar[str] = ""
    numbered: ClassVar[bool] = False
    escape_html: ClassVar[bool] = False  # WebVTT cue text must escape &, < and >
    voice_spans: ClassVar[bool] = False  # WebVTT names a cue's speaker in a <v> span; SRT prefixes it

    def format_timestamp(self, seconds: float) -> str:
        return format_timestamp(
            seconds, always_include_hours=self.always_include_hours, decimal_marker=self.decimal_marker
        )

    def write_result(self, transcript: Transcript, file: TextIO, options: OutputOptions) -> None:
        file.write(self.header)
        cues = layout_cues(
            transcript,
            max_line_width=options.max_line_width,
            max_line_count=options.max_line_count,
            style=options.subtitle_style,
            label=(lambda speaker: "") if self.voice_spans else speaker_prefix,
        )
        for number, cue in enumerate(cues, start=1):
            text = cue.text
            if self.escape_html:
                text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            if cue.speaker:
                text = f"<v {cue.speaker}>{text}" if self.voice_spans else speaker_prefix(cue.speaker) + text
            if self.numbered:
                print(number, file=file)
            print(f"{self.format_timestamp(cue.start_s)} --> {self.format_timestamp(cue.end_s)}", file=file)
            print(text, end="\n\n", file=file)


class WriteVTT(SubtitlesWriter):
    extension = "vtt"
    always_include_hours = False
    decimal_marker = "."
    header = "WEBVTT\n\n"
    escape_html = True
    voice_spans = True


class WriteSRT(SubtitlesWriter):
    extension = "srt"
    always_include_hours = True
    decimal_marker = ","
    numbered = True


class WriteTSV(ResultWriter):
    """Segment start and end in integer milliseconds, then the text; a header row, like whisper's."""

    extension = "tsv"

    def write_result(self, transcript: Transcript, file: TextIO, options: OutputOptions) -> None:
        print("start", "end", "text", sep="\t", file=file)
        for segment in transcript.segments:
            start_ms = round(max(segment.start_s, 0.0) * 1000)
            end_ms = max(round(segment.end_s * 1000), start_ms)
            print(start_ms, end_ms, " ".join(segment.text.split()), sep="\t", file=file)


class WriteJSON(ResultWriter):
    extension = "json"

    def write_result(self, transcript: Transcript, file: TextIO, options: OutputOptions) -> None:
        json.dump(transcript.to_whisper_dict(), file, ensure_ascii=False)


class WriteRTTM(ResultWriter):
    """NIST RTTM, one SPEAKER line per diarized turn (what pyannote and md-eval score); empty if not diarized."""

    extension = "rttm"

    def write_result(self, transcript: Transcript, file: TextIO, options: OutputOptions) -> None:
        for turn in transcript.speaker_turns or ():
            start_s, duration_s = max(turn.start_s, 0.0), max(turn.end_s - turn.start_s, 0.0)
            fields = ("SPEAKER", self.file_id, "1", f"{start_s:.3f}", f"{duration_s:.3f}", "<NA>", "<NA>")
            print(*fields, turn.speaker, "<NA>", "<NA>", file=file)


WRITERS: dict[FormatName, type[ResultWriter]] = {
    "txt": WriteTXT,
    "vtt": WriteVTT,
    "srt": WriteSRT,
    "tsv": WriteTSV,
    "json": WriteJSON,
    "rttm": WriteRTTM,
}


def rttm_file_id(relative_path: str) -> str:
    """The input's file name as an RTTM recording id: RTTM fields are space-separated, so no whitespace."""
    return re.sub(r"\s+", "_", relative_path.replace("\\", "/").rsplit("/", 1)[-1]) or "audio"


def output_paths(
    relative_path: str,
    output_root: str,
    formats: Iterable[FormatName],
    *,
    layout: LayoutName = "mirror",
    language: str = "",
    keep_full_name: bool = False,
) -> dict[FormatName, str]:
    """Where each format's file goes, under the input's mirrored path in `output_root`.

    `mirror` keeps the whole input name, so `a/talk.mp3` -> `<root>/a/talk.mp3.srt` never collides with
    `a/talk.wav` or `b/talk.mp3`. `sidecar` names the file as media players look for it:
    `<root>/a/talk.en.srt`, or `<root>/a/talk.mp3.en.srt` with `keep_full_name` (see `sidecar_collisions`).

    Args:
        relative_path: the input's path relative to its input root, `/`-separated (`\\` is read as `/`).
        output_root: the output folder.
        formats: the formats wanted.
        layout: "mirror" or "sidecar".
        language: the transcript's language code, part of a sidecar name ("" leaves it out).
        keep_full_name: sidecar only: keep the input's extension in the name.

    Returns:
        One path per format, in the order given.

    Raises:
        ValueError: if `relative_path` is empty, absolute, starts with a drive, or has a `..` part.
    """
    parts = checked_parts(relative_path)
    if layout == "sidecar":
        name = parts[-1] if keep_full_name else _stem(parts[-1])
        parts[-1] = f"{name}.{language}" if language else name
    base = os.path.join(os.fspath(output_root), *parts)
    return {fmt: f"{base}.{WRITERS[fmt].extension}" for fmt in formats}


def _stem(name: str) -> str:
    return os.path.splitext(name)[0] or name


def sidecar_collisions(relative_paths: Iterable[str]) -> set[str]:
    """The inputs whose sidecar names could collide: two or more with the same folder and stem (talk.mp3,
    talk.wav). Their languages are not known before transcription, so they count as colliding whatever
    they turn out to be."""
    groups: dict[tuple[str, ...], set[str]] = defaultdict(set)
    for relative_path in set(relative_paths):
        try:
            parts = checked_parts(relative_path)
        except ValueError:
            continue  # refused when written
        groups[(*parts[:-1], _stem(parts[-1]))].add(relative_path)
    return {path for group in groups.values() if len(group) > 1 for path in group}


def _write_text_atomic(path: str, text: str, storage_options: StorageOptions | None = None) -> None:
    # The one place that touches the output file system: local (temp + fsync + rename) or any fsspec URL.
    data = text.encode("utf-8")
    if not is_url(path) and _holds(path, data):
        return  # a re-run rewrites nothing (and fsyncs nothing) that is already there, byte for byte
    write_bytes_atomic(path, data, storage_options)


def _holds(path: str, data: bytes) -> bool:
    try:
        if os.path.getsize(path) != len(data):
            return False
        with open(path, "rb") as f:
            return f.read() == data
    except OSError:
        return False


def write_outputs(
    transcript: Transcript,
    relative_path: str,
    output_root: str,
    options: OutputOptions,
    storage_options: StorageOptions | None = None,
    *,
    keep_full_name: bool = False,
) -> dict[FormatName, str]:
    """Write every format in `options.formats`, each atomically, as UTF-8, with times clamped to the audio.

    Args:
        transcript: what to write.
        relative_path: the input's path relative to its input root (see `output_paths`).
        output_root: the output folder or fsspec URL (`s3://bucket/out`); missing folders are created.
        options: formats, subtitle line limits and layout.
        storage_options: fsspec options per protocol for a URL `output_root` (never logged).
        keep_full_name: sidecar layout only: keep the input's extension in the names (see `output_paths`).

    Returns:
        The path written for each format.
    """
    transcript = transcript.clamped()
    paths = output_paths(
        relative_path,
        output_root,
        options.formats,
        layout=options.layout,
        language=transcript.language,
        keep_full_name=keep_full_name,
    )
    for fmt, path in paths.items():
        buffer = io.StringIO()
        WRITERS[fmt](file_id=rttm_file_id(relative_path)).write_result(transcript, buffer, options)
        _write_text_atomic(path, buffer.getvalue(), storage_options)
    return paths
