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

from batchscribe import storage, urls
from batchscribe.options import ALL_FORMATS
from batchscribe.storage import StorageOptions

MANIFEST_PARQUET = "manifest.parquet"
MANIFEST_CSV = "manifest.csv"
LOCK_FILE = ".manifest.lock"


# The one definition of the manifest's columns and their pandas dtypes (README, "Manifest", says the same).
# "None" is always NULL (NA), never "": an ok row's `error` is NULL in the parquet and the CSV alike.
COLUMNS: dict[str, str] = {
    "source": "string",  # what the user named: absolute path or URL (credentials masked)
    "relative_path": "string",  # where its outputs live under the output root; the row's key
    "sha256": "string",  # content hash of the input bytes
    "size_bytes": "Int64",
    "status": "string",  # ok, failed or no_audio (batchscribe.errors)
    "error": "string",  # why it did not end ok, in words; NULL when ok
    "warning": "string",  # recovered problems (a truncated file decoded up to the damage); NULL when none
    "language": "string",
    "language_probability": "Float64",
    "duration_s": "Float64",  # seconds of audio decoded
    "engine": "string",
    "model": "string",
    "compute_type": "string",
    "options_hash": "string",  # hash of the requested, resolved transcription options (part of the cache key)
    "options": "string",  # the transcription options as they ran (Engine.effective_options), as JSON
    "formats": "string",  # output formats written, comma-separated
    "subtitle_style": "string",  # SRT/VTT cue rules: netflix, bbc or none (OutputOptions.subtitle_style)
    "max_line_width": "Int64",  # subtitle line width given; NULL: the style's (unbroken with style none)
    "max_line_count": "Int64",  # lines per subtitle cue given; NULL: the style's (no limit with style none)
    "layout": "string",  # output naming: "mirror" or "sidecar" (OutputOptions.layout)
    **{f"{fmt}_path": "string" for fmt in ALL_FORMATS},  # relative to the manifest's folder (absolute_paths)
    "started_at": "datetime64[ns, UTC]",  # when the file's way through began (staging)
    "finished_at": "datetime64[ns, UTC]",  # when its transcript was ready for export (the writes take ms)
    "decode_s": "Float64",  # seconds ffmpeg took to decode it
    "transcribe_s": "Float64",  # seconds the model worked on it (waiting for the model excluded)
    "wall_s": "Float64",  # finished_at - started_at, in seconds: staging, decoding, waiting, transcribing
    "realtime_factor": "Float64",  # duration_s / wall_s: audio seconds per wall second (higher is faster)
    "attempts": "Int64",  # task runs it took, retries included
    "windows": "Int64",  # speech windows the model decoded (0: the engine cuts none of its own)
    "redecoded_windows": "Int64",  # windows that failed the decoder's checks and were decoded again as two rows
    "guard_s": "Float64",  # model seconds those second decodes took (included in transcribe_s)
    "unsure_s": "Float64",  # seconds of speech whose text stayed unsure after every check: listen to these
    "shared_windows": "Int64",  # short windows decoded in a row shared with other files' windows
    # Speaker diarization (`--diarize`); NULL without it, or when it failed (see `warning`).
    "num_speakers": "Int64",  # how many speakers diarization was told to find; NULL: it estimated them
    "speakers": "Int64",  # how many speakers were found (0: no speech)
    "diarize_s": "Float64",  # diarization time
    "rttm_path": "string",
}
PATH_COLUMNS = tuple(n for n in COLUMNS if n.endswith("_path") and n != "relative_path")  # every output file
KEY = "relative_path"


def empty_manifest() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in COLUMNS.items()})


def normalize(rows: pd.DataFrame | list[dict[str, Any]]) -> pd.DataFrame:
    """Exactly COLUMNS, in order, with their dtypes; unknown columns are dropped, "" becomes NULL."""
    df = pd.DataFrame(rows) if not isinstance(rows, pd.DataFrame) else rows.copy()
    for name in COLUMNS:
        if name not in df:
            df[name] = None
    df = df[list(COLUMNS)]
    for name, dtype in COLUMNS.items():
        if dtype.startswith("datetime"):
            df[name] = pd.to_datetime(df[name], utc=True).astype(dtype)  # one resolution, whatever came in
        else:
            df[name] = df[name].astype(dtype)
            if dtype == "string":  # one spelling of "none": CSV cannot tell "" from NULL
                df[name] = df[name].mask(df[name] == "")
    return df.reset_index(drop=True)


def read_manifest(location: str | Path, storage_options: StorageOptions | None = None) -> pd.DataFrame:
    """The manifest at `location`, or an empty one.

    Args:
        location: an output folder (its manifest.parquet is read), or a manifest.parquet or manifest.csv
            file; a local path or an fsspec URL.
        storage_options: fsspec options per protocol for a URL.

    Returns:
        The rows with COLUMNS' dtypes: the CSV reads back equal to the parquet.
    """
    path = os.fspath(location)
    if not path.endswith((".parquet", ".csv")):
        path = storage.join(path, MANIFEST_PARQUET)
    data = storage.read_bytes(path, storage_options)
    if data is None:
        return empty_manifest()
    if path.endswith(".csv"):
        return _read_csv(data)
    return normalize(pd.read_parquet(io.BytesIO(data)))


def known_keys(location: str | Path, storage_options: StorageOptions | None = None) -> dict[str, str]:
    """Source (as recorded, credentials masked) -> key, for every row of the manifest at `location`: the keys
    a later run must keep (batchscribe.inputs.assign_keys)."""
    manifest = read_manifest(location, storage_options).dropna(subset=["source"])
    return dict(zip(manifest["source"], manifest[KEY], strict=True))


def _read_csv(data: bytes) -> pd.DataFrame:
    dates = [name for name, dtype in COLUMNS.items() if dtype.startswith("datetime")]
    dtypes = {name: dtype for name, dtype in COLUMNS.items() if name not in dates}
    # keep_default_na=False + na_values=[""]: only an empty field is NULL, never a word like "NA" or "null".
    df = pd.read_csv(io.BytesIO(data), dtype=dtypes, keep_default_na=False, na_values=[""])
    return normalize(df)


def relative_to_root(path: str, root: str) -> str:
    """`path`, a file under `root` (a folder or URL), as a `/`-separated path relative to `root`."""
    if urls.is_url(root):
        return path[len(root.rstrip("/")) + 1 :]
    return Path(os.path.relpath(path, root)).as_posix()


def absolute_paths(manifest: pd.DataFrame, root: str | Path) -> pd.DataFrame:
    """`manifest` with its `*_path` columns joined onto `root`, the folder (or URL) holding the manifest.

    The manifest stores output paths relative to its own folder, so the folder can be moved or copied;
    this gives paths to open, e.g. `absolute_paths(read_manifest(out), out)["srt_path"]`.
    """
    df = manifest.copy()
    base = os.fspath(root)
    for name in PATH_COLUMNS:
        df[name] = df[name].map(lambda p: storage.join(base, *p.split("/")) if isinstance(p, str) else p)
        df[name] = df[name].astype("string")
    return df


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
    if urls.is_url(root):
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


def artifact_records(batch: pd.DataFrame, rows: int) -> list[dict[str, Any]]:
    """The first `rows` rows of a batch as JSON-ready records for a Prefect table artifact (a view only:
    the parquet manifest holds every row)."""
    view = batch[["relative_path", "status", "error", "language", "duration_s", "realtime_factor", "srt_path"]].head(
        rows
    )
    return view.astype(object).where(view.notna(), None).to_dict("records")
