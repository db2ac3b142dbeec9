"""The manifest: one row per input, kept as a dataset of parquet part files with a compacted view.

Every flush of every worker appends one part file under `<output>/manifest/` (named by its UTC time,
host and process, so no two writers ever write the same object): no lock, no read-modify-write, a
flush costs what its rows cost, and it works alike on a local folder, NFS or an object store. Reading
takes every part in name order, the latest row per key winning. At the end of a run the parts are
compacted (one part replaces those it read) and `<output>/manifest.parquet` and `manifest.csv` are
rewritten from it: a view for people and tools. `read_manifest` of an output reads the dataset.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import socket
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from batchscribe import storage, urls
from batchscribe.options import ALL_FORMATS
from batchscribe.storage import StorageOptions

MANIFEST_PARQUET = "manifest.parquet"
MANIFEST_CSV = "manifest.csv"
DATASET = "manifest"  # the folder of part files under the output root
PART_SUFFIX = ".parquet"
COMPACTED = "~c"  # a compacted part's name: the newest part it covers, then this and a token of its own
ADOPTED_VIEW = "part-00000000T000000.000000Z-view"  # an older output's manifest.parquet, as its first part
READ_ATTEMPTS = 12  # listings of the dataset tried while other workers compact parts away (~10 s in all)


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
    "diarize": "string",  # the diarization options (DiarizeOptions) as JSON when --diarize ran; NULL without
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
    "unsure_s": "Float64",  # seconds of speech unsure after every check or of low word confidence: listen to these
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
        location: an output folder (its manifest dataset is read), or a manifest.parquet or manifest.csv
            file (the dataset beside it when there is one, else the file itself); a local path or an fsspec URL.
        storage_options: fsspec options per protocol for a URL.

    Returns:
        One row per key (the latest written), sorted by key, with COLUMNS' dtypes.
    """
    path = os.fspath(location)
    if path.endswith((".parquet", ".csv")):
        root, name = _parent(path)
        if name in (MANIFEST_PARQUET, MANIFEST_CSV) and _part_paths(root, storage_options):
            return read_dataset(root, storage_options)
        return _read_file(path, storage_options)
    if _part_paths(path, storage_options):
        return read_dataset(path, storage_options)
    return _read_file(storage.join(path, MANIFEST_PARQUET), storage_options)  # an output written before datasets


def read_dataset(output_root: str, storage_options: StorageOptions | None = None) -> pd.DataFrame:
    """Every part under `<output_root>/manifest/`, the latest row per key winning (parts in name order)."""
    return _latest(_read_parts(output_root, storage_options)[1])


def _read_parts(root: str, storage_options: StorageOptions | None) -> tuple[list[str], list[pd.DataFrame]]:
    """The dataset's part paths and tables, listed again (after a growing pause) while other workers'
    compactions remove parts between the listing and the reading."""
    for attempt in range(READ_ATTEMPTS):
        parts = _part_paths(root, storage_options)
        try:
            return parts, [_read_part(p, storage_options) for p in parts]
        except FileNotFoundError:
            time.sleep(min(0.01 * 2**attempt, 1.0))
    raise RuntimeError(f"the manifest dataset under {root} kept changing while it was read")


def _latest(tables: list[pd.DataFrame]) -> pd.DataFrame:
    tables = [t for t in tables if len(t)]
    if not tables:
        return empty_manifest()
    rows = pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0]
    rows = rows.drop_duplicates(KEY, keep="last")
    return normalize(rows.sort_values(KEY, kind="stable"))


def _read_file(path: str, storage_options: StorageOptions | None) -> pd.DataFrame:
    data = storage.read_bytes(path, storage_options)
    if data is None:
        return empty_manifest()
    if path.endswith(".csv"):
        return _read_csv(data)
    return normalize(pd.read_parquet(io.BytesIO(data)))


def _read_part(path: str, storage_options: StorageOptions | None) -> pd.DataFrame:
    data = storage.read_bytes(path, storage_options)
    if data is None:
        raise FileNotFoundError(path)
    return pd.read_parquet(io.BytesIO(data))


def _parent(path: str) -> tuple[str, str]:
    if urls.is_url(path):
        return posixpath.dirname(path.rstrip("/")), posixpath.basename(path)
    return os.path.dirname(os.path.abspath(path)), os.path.basename(path)


def _part_paths(output_root: str, storage_options: StorageOptions | None = None) -> list[str]:
    """The dataset's part files, in name order (oldest first); none when there is no dataset."""
    folder = storage.join(output_root, DATASET)
    if urls.is_url(output_root):
        fs, inner = storage.filesystem(folder, storage_options)
        try:
            names = [posixpath.basename(p) for p in fs.ls(inner, detail=False, refresh=True)]
        except FileNotFoundError:
            return []
    else:
        try:
            names = os.listdir(folder)
        except (FileNotFoundError, NotADirectoryError):
            return []
    return [
        storage.join(folder, n) for n in sorted(n for n in names if n.startswith("part-") and n.endswith(".parquet"))
    ]


def _part_name() -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    host = "".join(c if c.isalnum() else "_" for c in socket.gethostname())[:40]
    return f"part-{stamp}-{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}{PART_SUFFIX}"


def _parquet_bytes(rows: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    rows.to_parquet(buffer, index=False)
    return buffer.getvalue()


def append_rows(
    output_root: str | Path, rows: list[dict[str, Any]], storage_options: StorageOptions | None = None
) -> str | None:
    """Write `rows` as one new part of the output's manifest dataset; its path (None for no rows)."""
    if not rows:
        return None
    return _append_part(os.fspath(output_root), _parquet_bytes(normalize(rows)), storage_options)


def _append_part(root: str, data: bytes, storage_options: StorageOptions | None) -> str:
    path = storage.join(root, DATASET, _part_name())
    _write(path, data, storage_options)
    return path


def adopt_view(output_root: str | Path, storage_options: StorageOptions | None = None) -> bool:
    """An output written before the dataset existed: its manifest.parquet becomes the dataset's first part."""
    root = os.fspath(output_root)
    if _part_paths(root, storage_options):
        return False
    data = storage.read_bytes(storage.join(root, MANIFEST_PARQUET), storage_options)
    if data is None:
        return False
    _write(storage.join(root, DATASET, ADOPTED_VIEW + PART_SUFFIX), data, storage_options)
    return True


def compact(output_root: str | Path, storage_options: StorageOptions | None = None) -> pd.DataFrame:
    """Replace the dataset's parts by one and rewrite the manifest.parquet/.csv view from it; the rows.

    Safe while other workers append or compact: the new part is named after the newest part it read (so
    it sorts where they did, before any part written since), with a token of its own (two compactions
    whose newest part is the same compacted part never write one file, the second erasing what only the
    first read), and only the parts it read are removed.
    """
    root = os.fspath(output_root)
    parts, tables = _read_parts(root, storage_options)
    manifest = _latest(tables)
    if len(parts) > 1:
        newest = max(posixpath.basename(p).removesuffix(PART_SUFFIX).split(COMPACTED)[0] for p in parts)
        target = storage.join(root, DATASET, f"{newest}{COMPACTED}-{uuid.uuid4().hex[:8]}{PART_SUFFIX}")
        _write(target, _parquet_bytes(manifest), storage_options)
        for part in parts:
            if part != target:
                _remove(part, storage_options)
    _write_view(manifest, root, storage_options)  # already normalized by _latest
    return manifest


def _write(path: str, data: bytes, storage_options: StorageOptions | None) -> None:
    if not urls.is_url(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    storage.write_bytes_atomic(path, data, storage_options)


def _remove(path: str, storage_options: StorageOptions | None) -> None:
    if urls.is_url(path):
        fs, inner = storage.filesystem(path, storage_options)
        try:
            fs.rm_file(inner)
        except FileNotFoundError:
            pass
    else:
        Path(path).unlink(missing_ok=True)


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
    """Write the manifest.parquet and .csv view, each replaced in one step (see `batchscribe.storage`).

    Returns the parquet path (a local path, or a URL when `output_root` is one).
    """
    return _write_view(normalize(manifest), os.fspath(output_root), storage_options)


def _write_view(manifest: pd.DataFrame, root: str, storage_options: StorageOptions | None) -> str:
    parquet = io.BytesIO()
    manifest.to_parquet(parquet, index=False)
    csv = manifest.to_csv(index=False).encode("utf-8")
    for name, data in ((MANIFEST_PARQUET, parquet.getvalue()), (MANIFEST_CSV, csv)):
        storage.write_bytes_atomic(storage.join(root, name), data, storage_options)
    return storage.join(root, MANIFEST_PARQUET)


def options_json(options: Any) -> str:
    return json.dumps(options.model_dump(mode="json"), sort_keys=True)


class ManifestWriter:
    """A worker's rows, appended to the output's manifest dataset as files finish: at once for the first,
    then batched; compacted, with the view rewritten, on `close()`.

    Rows are buffered and flushed as one part when `min_interval_s` has passed since the last flush
    (stretched to `cost_factor` times the last flush's own duration), and always on `close()`. A flush
    writes only its own rows, so its cost does not grow with the manifest. A worker killed between
    flushes loses at most those buffered rows from the manifest, never their work: the re-run finds them
    in the cache. Past a flush the writer keeps only the set of its rows' keys (the key strings themselves
    belong to the caller's rows), so that `written()` reads its rows back from the manifest at the end.
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
        self.keys: set[str] = set()  # the key of every row added
        self._compacted: pd.DataFrame | None = None  # the manifest as `close()` compacted it, until `written()`
        self.flushes = 0
        self._next_flush = 0.0  # monotonic time; the first row flushes at once

    def add(self, row: dict[str, Any]) -> bool:
        """Buffer `row`; returns True when this call flushed the manifest."""
        self.pending.append(row)
        self.keys.add(row[KEY])
        if time.monotonic() < self._next_flush:
            return False
        self.flush()
        return True

    def flush(self) -> None:
        """Append the buffered rows to the dataset now, as one part."""
        if not self.pending:
            return
        started = time.monotonic()
        if self.flushes == 0:
            adopt_view(self.output_root, self.storage_options)
        _append_part(self.output_root, _parquet_bytes(normalize(self.pending)), self.storage_options)
        self.pending = []
        self.flushes += 1
        finished = time.monotonic()
        self._next_flush = finished + max(self.min_interval_s, self.cost_factor * (finished - started))

    def written(self) -> pd.DataFrame:
        """The manifest's rows for the keys of the rows this writer flushed (the latest row per key), by key.

        After `close()`, taken from the manifest it compacted (handed over once); before, read from the dataset.
        """
        if not self.flushes:
            return empty_manifest()
        manifest, self._compacted = self._compacted, None
        if manifest is None:
            manifest = read_dataset(self.output_root, self.storage_options)
        ours = manifest[KEY].isin(self.keys)
        return manifest if ours.all() else manifest[ours].reset_index(drop=True)

    def close(self) -> None:
        """Flush, then compact the dataset and rewrite the manifest.parquet/.csv view."""
        self.flush()
        if self.flushes:
            self._compacted = compact(self.output_root, self.storage_options)

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
