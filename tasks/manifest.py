"""The manifest: one row per input, written as parquet and CSV, each write an atomic replace."""

from __future__ import annotations

import fcntl
import io
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from batchscribe import storage
from batchscribe.options import ALL_FORMATS
from batchscribe.storage import StorageOptions

MANIFEST_PARQUET = "manifest.parquet"
MANIFEST_CSV = "manifest.csv"
LOCK_FILE = ".manifest.lock"

STATUS_OK = "ok"
STATUS_FAILED = "failed"  # could not be read, decoded or transcribed: see `error`
STATUS_NO_AUDIO = "no_audio"  # the file decodes but holds no audio stream
STATUSES = (STATUS_OK, STATUS_FAILED, STATUS_NO_AUDIO)

# The one definition of the manifest's columns and their pandas dtypes.
COLUMNS: dict[str, str] = {
    "source": "string",  # what the user named: absolute path or URL
    "relative_path": "string",  # where its outputs live under the output root; the row's key
    "sha256": "string",  # content hash of the input bytes
    "size_bytes": "Int64",
    "status": "string",  # one of STATUSES
    "error": "string",  # why it failed, in words; empty when ok
    "warning": "string",  # recovered problems, e.g. a truncated file decoded up to the damage
    "language": "string",
    "language_probability": "Float64",
    "duration_s": "Float64",  # decoded audio duration
    "engine": "string",
    "model": "string",
    "compute_type": "string",
    "options_hash": "string",  # hash of the resolved transcription options (part of the cache key)
    "options": "string",  # those options as JSON
    **{f"{fmt}_path": "string" for fmt in ALL_FORMATS},
    "started_at": "datetime64[ns, UTC]",  # when the transcription started
    "finished_at": "datetime64[ns, UTC]",
    "decode_s": "Float64",  # ffmpeg decode time
    "transcribe_s": "Float64",  # model time
    "wall_s": "Float64",  # decode_s + transcribe_s
    "realtime_factor": "Float64",  # x realtime: audio seconds per wall second (higher is faster)
    "attempts": "Int64",  # task runs it took, retries included
    # Speaker diarization (`--diarize`); NULL without it, or when it failed (see `warning`).
    "speakers": "Int64",  # how many speakers were found (0: no speech)
    "diarize_s": "Float64",  # diarization time
    "rttm_path": "string",
}
KEY = "relative_path"


def empty_manifest() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in COLUMNS.items()})


def normalize(rows: pd.DataFrame | list[dict[str, Any]]) -> pd.DataFrame:
    """Exactly COLUMNS, in order, with their dtypes; unknown columns are dropped."""
    df = pd.DataFrame(rows) if not isinstance(rows, pd.DataFrame) else rows.copy()
    for name in COLUMNS:
        if name not in df:
            df[name] = None
    df = df[list(COLUMNS)]
    for name, dtype in COLUMNS.items():
        if dtype.startswith("datetime"):
            df[name] = pd.to_datetime(df[name], utc=True)
        else:
            df[name] = df[name].astype(dtype)
    return df.reset_index(drop=True)


def read_manifest(output_root: str | Path, storage_options: StorageOptions | None = None) -> pd.DataFrame:
    """The manifest in `output_root` (a folder or fsspec URL), or an empty one."""
    data = storage.read_bytes(storage.join(os.fspath(output_root), MANIFEST_PARQUET), storage_options)
    if data is None:
        return empty_manifest()
    return normalize(pd.read_parquet(io.BytesIO(data)))


def merge_rows(manifest: pd.DataFrame, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """`manifest` with `rows` replacing those of the same relative path; every other row is kept."""
    if not rows:
        return manifest
    new = normalize(rows)
    kept = manifest[~manifest[KEY].isin(new[KEY])]
    merged = pd.concat([kept, new], ignore_index=True) if len(kept) else new
    return normalize(merged.sort_values(KEY, kind="stable"))


def write_manifest(
    manifest: pd.DataFrame, output_root: str | Path, storage_options: StorageOptions | None = None
) -> str:
    """Write parquet and CSV, each replaced in one step (see `batchscribe.storage`): never a torn manifest.

    Returns the parquet path (a local path, or a URL when `output_root` is one).
    """
    root = os.fspath(output_root)
    manifest = normalize(manifest)
    parquet = io.BytesIO()
    manifest.to_parquet(parquet, index=False)
    csv = manifest.to_csv(index=False).encode("utf-8")
    for name, data in ((MANIFEST_PARQUET, parquet.getvalue()), (MANIFEST_CSV, csv)):
        storage.write_bytes_atomic(storage.join(root, name), data, storage_options)
    return storage.join(root, MANIFEST_PARQUET)


@contextmanager
def _manifest_lock(root: str) -> Iterator[None]:
    """An exclusive lock on a local output folder's manifest; remote outputs have none (README, "Guarantees")."""
    if storage.is_remote(root):
        yield
        return
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, LOCK_FILE), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def update_manifest(
    output_root: str | Path, rows: list[dict[str, Any]], storage_options: StorageOptions | None = None
) -> pd.DataFrame:
    """Merge `rows` into the manifest on disk and write it back, holding the folder's lock throughout.

    Reading under the lock, not once per batch, is what keeps two batches writing into one folder from
    dropping each other's rows.
    """
    root = os.fspath(output_root)
    with _manifest_lock(root):
        manifest = merge_rows(read_manifest(root, storage_options), rows)
        write_manifest(manifest, root, storage_options)
    return manifest


def options_json(options: Any) -> str:
    return json.dumps(options.model_dump(mode="json"), sort_keys=True)


class ManifestWriter:
    """A batch's rows, merged into the manifest as files finish: at once for the first, then batched.

    Rewriting the whole manifest after every file costs O(rows) each time, which on a big batch (or a
    cached re-run, where files finish in milliseconds) is most of the run. So rows are buffered and
    flushed when `min_interval_s` has passed since the last flush, stretched to `cost_factor` times the
    last flush's own duration as the manifest grows, and always on `close()`. A batch killed between
    flushes loses at most those buffered rows from the manifest, never their work: the re-run finds them
    in the cache.
    """

    def __init__(
        self,
        output_root: str | Path,
        storage_options: StorageOptions | None = None,
        *,
        min_interval_s: float = 1.0,
        cost_factor: float = 5.0,
    ) -> None:
        self.output_root = os.fspath(output_root)
        self.storage_options = storage_options
        self.min_interval_s = min_interval_s
        self.cost_factor = cost_factor
        self.pending: list[dict[str, Any]] = []
        self.flushes = 0
        self._next_flush = 0.0  # monotonic time; the first row flushes at once

    def add(self, row: dict[str, Any]) -> bool:
        """Buffer `row`; returns True when this call flushed the manifest."""
        self.pending.append(row)
        if time.monotonic() < self._next_flush:
            return False
        self.flush()
        return True

    def flush(self) -> None:
        """Merge the buffered rows into the manifest on disk now."""
        if not self.pending:
            return
        started = time.monotonic()
        update_manifest(self.output_root, self.pending, self.storage_options)
        self.pending = []
        self.flushes += 1
        finished = time.monotonic()
        self._next_flush = finished + max(self.min_interval_s, self.cost_factor * (finished - started))

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()  # also when the flow fails midway: whatever finished is recorded
