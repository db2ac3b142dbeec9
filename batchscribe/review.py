"""The review queue: which transcripts a person should check first, and why.

A file is flagged for each sign that its transcript may be wrong: a low mean word confidence (from the
segments dataset), windows that failed Whisper's checks and were decoded again, unsure speech (`unsure_s`)
of at least 5% of the file's duration, a warning in its row (a truncated input, a failed diarization), or
a detected language the model was unsure of. Files with more signs come first, then the least confident.
"""

from __future__ import annotations

from typing import Any

from batchscribe.segment_table import read_segments
from batchscribe.storage import StorageOptions
from batchscribe.transcript import LOW_CONFIDENCE

LOW_LANGUAGE_PROBABILITY = 0.7  # a detected language under this may be the wrong one
UNSURE_SHARE = 0.05  # unsure speech flags a file from this share of its duration (a clean hour has a few seconds)


def file_confidence(root: str, storage_options: StorageOptions | None = None) -> dict[str, float]:
    """Each file's confidence: its segments' confidences weighted by their duration."""
    import pyarrow.compute as pc

    table = read_segments(root, storage_options, columns=["relative_path", "start_s", "end_s", "confidence"])
    if not table.num_rows:
        return {}
    duration = pc.max_element_wise(pc.subtract(table["end_s"], table["start_s"]), 0.01)
    table = table.append_column("weight", duration).append_column(
        "weighted", pc.multiply(table["confidence"], duration)
    )
    sums = table.group_by("relative_path").aggregate([("weighted", "sum"), ("weight", "sum")]).to_pylist()
    return {row["relative_path"]: row["weighted_sum"] / row["weight_sum"] for row in sums}


def review_queue(manifest: Any, confidence: dict[str, float]) -> Any:
    """The ok rows with at least one reason to check them, most reasons first, then least confident.

    Args:
        manifest: the manifest's rows (batchscribe.manifest).
        confidence: each file's confidence (`file_confidence`); a file without one is not judged on it.

    Returns:
        A DataFrame: relative_path, confidence, language, language_probability, redecoded_windows,
        windows, reasons (in words, "; "-separated), one row per flagged file.
    """
    import pandas as pd

    ok = manifest[manifest["status"] == "ok"]
    rows = []
    for row in ok.itertuples(index=False):
        score = confidence.get(row.relative_path)
        reasons = []
        if score is not None and score < LOW_CONFIDENCE:
            reasons.append(f"low confidence ({score:.2f})")
        if pd.notna(row.redecoded_windows) and row.redecoded_windows > 0:
            reasons.append(f"{row.redecoded_windows} of {row.windows} windows decoded again")
        unsure_s, duration_s = getattr(row, "unsure_s", None), getattr(row, "duration_s", None)
        if pd.notna(unsure_s) and unsure_s > 0 and not (pd.notna(duration_s) and unsure_s < UNSURE_SHARE * duration_s):
            reasons.append(f"{unsure_s:.1f} s of speech still unsure")
        if isinstance(row.warning, str) and row.warning:
            reasons.append(f"warning: {row.warning}")
        probability = row.language_probability
        if pd.notna(probability) and probability < LOW_LANGUAGE_PROBABILITY and isinstance(row.language, str):
            reasons.append(f"language {row.language} at probability {probability:.2f}")
        if reasons:
            rows.append(
                {
                    "relative_path": row.relative_path,
                    "confidence": score,
                    "language": row.language,
                    "language_probability": probability,
                    "redecoded_windows": row.redecoded_windows,
                    "windows": row.windows,
                    "reasons": "; ".join(reasons),
                    "_count": len(reasons),
                }
            )
    queue = pd.DataFrame(rows, columns=[*QUEUE_COLUMNS, "_count"])
    queue["_sort"] = queue["confidence"].fillna(1.0)
    queue = queue.sort_values(["_count", "_sort", "relative_path"], ascending=[False, True, True], kind="stable")
    return queue[QUEUE_COLUMNS].reset_index(drop=True)


QUEUE_COLUMNS = [
    "relative_path",
    "confidence",
    "language",
    "language_probability",
    "redecoded_windows",
    "windows",
    "reasons",
]
