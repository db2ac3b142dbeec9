"""What the command line prints: a batch's summary table, a manifest's status report, search hits, progress bars."""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from typing import Any

from batchscribe.cues import format_timestamp


def status_report(manifest: Any, root: str | None = None, *, review_limit: int = 20) -> str:
    """Counts by status and language, hours of audio, a running batch's progress, the rows that did not end
    ok with their errors, and (with `root`, the manifest's folder) the files to review first."""
    counts = manifest["status"].value_counts()
    languages = manifest.loc[manifest["status"] == "ok", "language"].value_counts()
    ok_hours = manifest.loc[manifest["status"] == "ok", "duration_s"].sum() / 3600
    lines = [
        f"files: {len(manifest)}  " + "  ".join(f"{name}: {int(n)}" for name, n in counts.items()),
        "languages: " + ("  ".join(f"{name}: {int(n)}" for name, n in languages.items()) or "none"),
        f"audio transcribed: {ok_hours:.2f} h",
    ]
    if root is not None and (running := _running_line(root)):
        lines.append(running)
    bad = manifest[manifest["status"] != "ok"]
    if len(bad):
        lines += ["", f"{'file':<40} {'status':<9} error"]
        for row in bad.itertuples(index=False):
            error = row.error if isinstance(row.error, str) else ""
            lines.append(f"{_clip(row.relative_path, 40):<40} {row.status:<9} {error}")
    if root is not None and review_limit > 0:
        lines += _review_lines(manifest, root, review_limit)
    return "\n".join(lines)


def _running_line(root: str) -> str:
    from batchscribe.run_state import read_run_state

    state = read_run_state(root)
    if state is None or state.finished:
        return ""
    elapsed_s = state.elapsed_s()
    rate = f", {state.audio_s_done / elapsed_s:.1f}x realtime" if elapsed_s > 0 and state.audio_s_done else ""
    left_s = state.seconds_left()
    left = f"; about {_duration(left_s)} left" if left_s is not None else ""
    stale = " (no word from it for over 10 minutes: stopped?)" if state.stale() else ""
    return (
        f"running: {state.files_done} of {state.files_total} files, {state.audio_s_done / 3600:.2f} h of audio "
        f"in {_duration(elapsed_s)}{rate}{left}{stale}"
    )


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def _review_lines(manifest: Any, root: str, limit: int) -> list[str]:
    from batchscribe.review import file_confidence, review_queue

    queue = review_queue(manifest, file_confidence(root))
    if not len(queue):
        return ["", "check first: nothing flagged (confidence, redecoded windows, warnings, language probability)"]
    ok = int((manifest["status"] == "ok").sum())
    shown = f", the first {limit} shown" if len(queue) > limit else ""
    lines = ["", f"check first ({len(queue)} of {ok} transcribed files flagged{shown}):"]
    lines.append(f"{'file':<40} {'conf':>5}  reasons")
    for row in queue.head(limit).itertuples(index=False):
        conf = f"{row.confidence:5.2f}" if present(row.confidence) else "    -"
        lines.append(f"{_clip(row.relative_path, 40):<40} {conf}  {row.reasons}")
    return lines


def search(args: argparse.Namespace) -> int:
    """`batchscribe search OUT PHRASE`: the segments that hold PHRASE; exit 1 when none does (like grep)."""
    from batchscribe.search import search_segments

    root = args.output
    if root.endswith((".parquet", ".csv")):  # a manifest named directly: its folder
        root = root.rsplit("/", 1)[0] if "://" in root else os.path.dirname(os.path.abspath(root))
    hits = search_segments(root, args.phrase, limit=args.limit)
    sys.stdout.write(hits_csv(hits) if args.format == "csv" else hits_text(hits))
    return 0 if hits.num_rows else 1


def hits_text(hits: Any) -> str:
    """One line a hit: file, time (HH:MM:SS.mmm), speaker when diarized, and the segment's text."""
    lines = []
    for hit in hits.to_pylist():
        speaker = f"[{hit['speaker']}] " if hit["speaker"] else ""
        stamp = format_timestamp(hit["start_s"], always_include_hours=True)
        lines.append(f"{hit['relative_path']}  {stamp}  {speaker}{hit['text']}\n")
    return "".join(lines)


def hits_csv(hits: Any) -> str:
    """The hits as CSV with a header row: relative_path, start_s, end_s, speaker, text, confidence."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(hits.column_names)
    writer.writerows(tuple(row.values()) for row in hits.to_pylist())
    return buffer.getvalue()


def summary_table(manifest: Any) -> str:
    """file, status, language, duration and x realtime per row, as fixed-width text."""
    header = f"{'file':<40} {'status':<9} {'lang':<5} {'duration':>9} {'x rt':>6}  error"
    lines = [header, "-" * len(header)]
    for row in manifest.itertuples(index=False):
        lang = row.language if isinstance(row.language, str) else ""
        duration = f"{row.duration_s:8.1f}s" if present(row.duration_s) else ""
        rtf = f"{row.realtime_factor:6.1f}" if present(row.realtime_factor) else ""
        error = row.error if isinstance(row.error, str) else ""
        lines.append(f"{_clip(row.relative_path, 40):<40} {row.status:<9} {lang:<5} {duration:>9} {rtf:>6}  {error}")
    return "\n".join(lines)


def present(value: Any) -> bool:
    """Whether a manifest cell holds a value (not NULL/NaN)."""
    import pandas as pd

    return bool(pd.notna(value))


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1) :]


class ProgressBar:
    """Two tqdm bars: files done (with the time left at the rate so far), and hours of audio transcribed."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self.files = tqdm(total=0, unit="file", desc="files", position=0, dynamic_ncols=True)
        self.audio = tqdm(
            total=0,
            unit="s",
            desc="audio",
            position=1,
            dynamic_ncols=True,
            bar_format="{desc} [{elapsed}]",
        )
        self.audio.set_description_str("audio: 0.00 h transcribed")

    def batch_started(self, total_files: int) -> None:
        self.files.total = total_files
        self.files.refresh()

    def file_finished(self, row: dict[str, Any]) -> None:
        self.files.update(1)
        self.files.set_postfix_str(f"{row['relative_path'][-30:]} {row['status']}")
        duration = row.get("duration_s")
        if row.get("status") == "ok" and present(duration):
            self.audio.update(float(duration))
            elapsed_s = self.audio.format_dict["elapsed"]
            rate = f", {self.audio.n / elapsed_s:.1f}x realtime" if elapsed_s > 0 else ""
            self.audio.set_description_str(f"audio: {self.audio.n / 3600:.2f} h transcribed{rate}")

    def close(self) -> None:
        self.files.close()
        self.audio.close()
