"""The manifest: one row per input, written as parquet and CSV, replaced atomically after every file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from batchscribe.options import ALL_FORMATS

MANIFEST_PARQUET = "manifest.parquet"
MANIFEST_CSV = "manifest.csv"

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


def read_manifest(output_root: str | Path) -> pd.DataFrame:
    """The manifest in `output_root`, or an empty one."""
    path = Path(output_root) / MANIFEST_PARQUET
    if not path.exists():
        return empty_manifest()
    return normalize(pd.read_parquet(path))


def merge_rows(manifest: pd.DataFrame, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """`manifest` with `rows` replacing those of the same relative path; every other row is kept."""
    if not rows:
        return manifest
    new = normalize(rows)
    kept = manifest[~manifest[KEY].isin(new[KEY])]
    merged = pd.concat([kept, new], ignore_index=True) if len(kept) else new
    return normalize(merged.sort_values(KEY, kind="stable"))


def write_manifest(manifest: pd.DataFrame, output_root: str | Path) -> Path:
    """Write parquet and CSV, each to a temp file then renamed over the old one: never a torn manifest."""
    root = Path(output_root)
    root.mkdir(parents=True, exist_ok=True)
    manifest = normalize(manifest)
    for name, write in (
        (MANIFEST_PARQUET, lambda p: manifest.to_parquet(p, index=False)),
        (MANIFEST_CSV, lambda p: manifest.to_csv(p, index=False)),
    ):
        tmp = root / f".{name}.{os.getpid()}.tmp"
        try:
            write(tmp)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, root / name)
        finally:
            tmp.unlink(missing_ok=True)
    return root / MANIFEST_PARQUET


def options_json(options: Any) -> str:
    return json.dumps(options.model_dump(mode="json"), sort_keys=True)
