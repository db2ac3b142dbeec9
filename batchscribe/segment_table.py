"""The segments dataset: every segment of every transcript of an output folder, as parquet part files.

`<output>/segments/part-*.parquet` beside the manifest, one row per segment (SEGMENT_COLUMNS), appended as
files finish. pandas (`pd.read_parquet(out / "segments")`), duckdb (`read_parquet('out/segments/*.parquet')`)
and polars (`pl.read_parquet("out/segments/*.parquet")`) read it as one table. A file transcribed again
gets new rows with a later `written_at`; `read_segments` keeps only each file's latest, and a folder's parts
are merged into one when they pile up.
"""

from __future__ import annotations

import io
import os
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from batchscribe import storage, urls
from batchscribe.storage import StorageOptions
from batchscribe.transcript import Transcript

SEGMENTS_DIR = "segments"
MAX_PARTS = 64  # more part files than this are merged into one when a writer closes
SEGMENT_COLUMNS: dict[str, str] = {  # name -> arrow type
    "relative_path": "string",  # the file's key, as in the manifest
    "segment": "int32",  # the segment's number within its file, from 0
    "start_s": "float64",
    "end_s": "float64",
    "speaker": "string",  # SPEAKER_00 ... when diarized; NULL otherwise
    "text": "string",
    "confidence": "float64",  # mean word probability (exp(avg_logprob) without words), 0..1
    "language": "string",  # the file's language
    "written_at": "timestamp[us, tz=UTC]",  # when the row was written; the latest per file wins
}


def schema() -> Any:
    """The dataset's arrow schema (SEGMENT_COLUMNS)."""
    import pyarrow as pa

    types = {"string": pa.string(), "int32": pa.int32(), "float64": pa.float64()}
    return pa.schema([(name, types.get(kind, pa.timestamp("us", tz="UTC"))) for name, kind in SEGMENT_COLUMNS.items()])


def segment_rows(relative_path: str, transcript: Transcript, written_at: datetime) -> list[dict[str, Any]]:
    """One row per segment of `transcript` that has text."""
    rows = []
    for number, segment in enumerate(s for s in transcript.segments if s.text.strip()):
        rows.append(
            {
                "relative_path": relative_path,
                "segment": number,
                "start_s": round(segment.start_s, 3),
                "end_s": round(segment.end_s, 3),
                "speaker": segment.speaker,
                "text": " ".join(segment.text.split()),
                "confidence": round(segment.confidence, 4),
                "language": transcript.language,
                "written_at": written_at,
            }
        )
    return rows


def _write_part(root: str, table: Any, storage_options: StorageOptions | None) -> str:
    # Written by pyarrow, without pandas metadata: readers need no pandas, and the CLI's search starts faster.
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")  # names sort oldest first
    name = f"part-{stamp}-{uuid.uuid4().hex[:8]}.parquet"
    path = storage.join(root, SEGMENTS_DIR, name)
    storage.write_bytes_atomic(path, buffer.getvalue(), storage_options)
    return path


def part_files(root: str, storage_options: StorageOptions | None = None) -> list[str]:
    """The dataset's part files under output folder `root`, oldest first."""
    folder = storage.join(root, SEGMENTS_DIR)
    if urls.is_url(folder):
        fs, path = storage.filesystem(folder, storage_options)
        names = fs.glob(f"{path}/part-*.parquet") if fs.exists(path) else []
        return sorted(fs.unstrip_protocol(n) for n in names)
    if not os.path.isdir(folder):
        return []
    return sorted(
        os.path.join(folder, n) for n in os.listdir(folder) if n.startswith("part-") and n.endswith(".parquet")
    )


def read_segments(root: str, storage_options: StorageOptions | None = None, *, columns: list[str] | None = None) -> Any:
    """The dataset of output folder `root` as one pyarrow Table: each file's latest rows only."""
    import pyarrow as pa
    import pyarrow.compute as pc

    wanted = list(dict.fromkeys([*(columns or SEGMENT_COLUMNS), "relative_path", "written_at"]))
    tables = [_read_part(path, wanted, storage_options) for path in part_files(root, storage_options)]
    if not tables:
        return schema().empty_table().select(columns or list(SEGMENT_COLUMNS))
    table = pa.concat_tables(tables)
    if _has_duplicates(tables):
        latest = table.group_by("relative_path").aggregate([("written_at", "max")])
        joined = table.join(latest, "relative_path")
        table = joined.filter(pc.equal(joined["written_at"], joined["written_at_max"])).drop(["written_at_max"])
    return table.select(columns or list(SEGMENT_COLUMNS))


def _has_duplicates(tables: list[Any]) -> bool:
    # A file's rows in more than one part mean it was written again.
    seen: set[str] = set()
    for table in tables:
        keys = set(table.column("relative_path").unique().to_pylist())
        if seen & keys:
            return True
        seen |= keys
    return False


def _read_part(path: str, columns: list[str], storage_options: StorageOptions | None) -> Any:
    # ParquetFile.read, not read_table: read_table imports pandas (0.3 s of a search command's start).
    import pyarrow.parquet as pq

    source = io.BytesIO(storage.read_bytes(path, storage_options) or b"") if urls.is_url(path) else path
    return pq.ParquetFile(source).read(columns=columns, use_pandas_metadata=False)


class SegmentsWriter:
    """A batch's segment rows, written as part files as files finish: at once for the first, then at most
    every `min_interval_s` (and always on `close()`), so a big batch makes few, larger parts."""

    def __init__(
        self, output_root: str, storage_options: StorageOptions | None = None, *, min_interval_s: float = 10.0
    ) -> None:
        self.output_root = output_root
        self.storage_options = storage_options
        self.min_interval_s = min_interval_s
        self.pending: list[dict[str, Any]] = []
        self.parts_written = 0
        self._next_flush = 0.0
        self._lock = threading.Lock()

    def add(self, relative_path: str, transcript: Transcript) -> None:
        """Buffer the segments of one finished file (thread-safe); flush when it is time."""
        rows = segment_rows(relative_path, transcript, datetime.now(timezone.utc))
        with self._lock:
            self.pending += rows
            if time.monotonic() >= self._next_flush:
                self._flush_locked()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        self._next_flush = time.monotonic() + self.min_interval_s
        if not self.pending:
            return
        import pyarrow as pa

        _write_part(self.output_root, pa.Table.from_pylist(self.pending, schema=schema()), self.storage_options)
        self.pending = []
        self.parts_written += 1

    def close(self) -> None:
        self.flush()
        if not urls.is_url(self.output_root) and len(part_files(self.output_root)) > MAX_PARTS:
            compact(self.output_root)

    def __enter__(self) -> SegmentsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def compact(root: str, storage_options: StorageOptions | None = None) -> str | None:
    """Merge a folder's part files into one (each file's latest rows only); returns the new part's path."""
    parts = part_files(root, storage_options)
    if len(parts) < 2:
        return None
    merged = read_segments(root, storage_options)
    path = _write_part(root, merged, storage_options)
    for old in parts:
        _remove(old, storage_options)
    return path


def _remove(path: str, storage_options: StorageOptions | None) -> None:
    if urls.is_url(path):
        fs, inner = storage.filesystem(path, storage_options)
        fs.rm(inner)
    else:
        os.remove(path)
