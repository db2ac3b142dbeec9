"""Search an output folder's segments dataset for a phrase: which file said it, when, and the line."""

from __future__ import annotations

from typing import Any

from batchscribe.segment_table import read_segments
from batchscribe.storage import StorageOptions

HIT_COLUMNS = ["relative_path", "start_s", "end_s", "speaker", "text", "confidence"]


def search_segments(
    root: str, phrase: str, storage_options: StorageOptions | None = None, *, limit: int | None = None
) -> Any:
    """The segments of output folder `root` whose text holds `phrase` (case and spacing ignored).

    Args:
        root: an output folder (local or a URL) with a `segments/` dataset.
        phrase: the words to find, in order, anywhere in a segment.
        storage_options: fsspec options per protocol for a URL `root`.
        limit: at most this many hits (None: all).

    Returns:
        A pyarrow Table of HIT_COLUMNS, ordered by file and time.
    """
    import pyarrow.compute as pc

    needle = " ".join(phrase.split())
    table = read_segments(root, storage_options, columns=HIT_COLUMNS)
    if needle:
        table = table.filter(pc.match_substring(table["text"], needle, ignore_case=True))
    table = table.sort_by([("relative_path", "ascending"), ("start_s", "ascending")])
    return table.slice(0, limit) if limit is not None else table
