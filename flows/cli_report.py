"""What the command line prints: a batch's summary table, a manifest's status report, progress bars."""

from __future__ import annotations

from typing import Any


def status_report(manifest: Any) -> str:
    """Counts by status and language, hours of audio, and the rows that did not end ok with their errors."""
    counts = manifest["status"].value_counts()
    languages = manifest.loc[manifest["status"] == "ok", "language"].value_counts()
    ok_hours = manifest.loc[manifest["status"] == "ok", "duration_s"].sum() / 3600
    lines = [
        f"files: {len(manifest)}  " + "  ".join(f"{name}: {int(n)}" for name, n in counts.items()),
        "languages: " + ("  ".join(f"{name}: {int(n)}" for name, n in languages.items()) or "none"),
        f"audio transcribed: {ok_hours:.2f} h",
    ]
    bad = manifest[manifest["status"] != "ok"]
    if len(bad):
        lines += ["", f"{'file':<40} {'status':<9} error"]
        for row in bad.itertuples(index=False):
            error = row.error if isinstance(row.error, str) else ""
            lines.append(f"{_clip(row.relative_path, 40):<40} {row.status:<9} {error}")
    return "\n".join(lines)


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
    """Two tqdm bars: files done, and audio seconds transcribed."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self.files = tqdm(total=0, unit="file", desc="files", position=0, dynamic_ncols=True)
        self.audio = tqdm(
            total=0,
            unit="s",
            desc="audio",
            position=1,
            dynamic_ncols=True,
            bar_format="{desc}: {n:.0f}s transcribed [{elapsed}, {rate_fmt}]",
        )

    def batch_started(self, total_files: int) -> None:
        self.files.total = total_files
        self.files.refresh()

    def file_finished(self, row: dict[str, Any]) -> None:
        self.files.update(1)
        self.files.set_postfix_str(f"{row['relative_path'][-30:]} {row['status']}")
        duration = row.get("duration_s")
        if row.get("status") == "ok" and present(duration):
            self.audio.update(float(duration))

    def close(self) -> None:
        self.files.close()
        self.audio.close()
