"""Inputs: files, folders, globs, URLs and input lists expanded into one item per file of the batch."""

from __future__ import annotations

import glob
import io
import os
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

from batchscribe import storage, urls
from batchscribe.errors import InputError
from batchscribe.media import InputItem
from batchscribe.paths import safe_relative
from batchscribe.storage import StorageOptions

# Containers and codecs ffmpeg decodes that people keep speech in; a folder expands to these.
MEDIA_EXTENSIONS = frozenset(
    ".wav .mp3 .m4a .mp4 .m4v .mkv .mov .webm .ogg .oga .opus .flac .aac .wma .avi .mpeg .mpg .ts .3gp "
    ".amr .aif .aiff .caf .wv .mka .ac3".split()
)


FILE_OPTION_COLUMNS = ("language", "initial_prompt", "num_speakers")  # per-file options a table may carry


def read_input_list(location: str, storage_options: StorageOptions | None = None) -> list[str]:
    """The inputs listed in a .txt (one per line, `#` comments), .csv or .parquet file (local or a URL).

    Tables use their `source` column (a manifest works as is), else their first column. Relative local
    paths are taken relative to the list's own folder.
    """
    return [entry for entry, _ in read_input_rows(location, storage_options)]


def read_input_rows(location: str, storage_options: StorageOptions | None = None) -> list[tuple[str, dict[str, Any]]]:
    """`read_input_list`'s inputs, each with the options its table row sets (FILE_OPTION_COLUMNS; a
    manifest's `options` JSON for `initial_prompt`); empty cells, and every row of a .txt list, set none."""
    import pandas as pd

    data = storage.read_bytes(location, storage_options)
    if data is None:
        raise InputError(f"input list not found: {location}")
    suffix = PurePosixPath(location.split("?", 1)[0]).suffix.lower()
    if suffix in (".csv", ".parquet"):
        table = pd.read_parquet(io.BytesIO(data)) if suffix == ".parquet" else pd.read_csv(io.BytesIO(data))
        column = table["source"] if "source" in table else table.iloc[:, 0]
        rows = [(str(v).strip(), _row_options(table.loc[i])) for i, v in column.dropna().items()]
    else:
        lines = data.decode("utf-8-sig").splitlines()
        rows = [(line.strip(), {}) for line in lines if line.strip() and not line.lstrip().startswith("#")]
    base = None if urls.is_url(location) else Path(location).expanduser().resolve().parent
    return [
        (e if base is None or urls.is_url(e) or Path(e).is_absolute() else str(base / e), options)
        for e, options in rows
        if e
    ]


def _row_options(row: Any) -> dict[str, Any]:
    import json

    import pandas as pd

    options = {name: row[name] for name in FILE_OPTION_COLUMNS if name in row and pd.notna(row[name])}
    if "initial_prompt" not in options and isinstance(row.get("options"), str):  # a manifest row: what ran
        if prompt := json.loads(row["options"]).get("initial_prompt"):
            options["initial_prompt"] = prompt
    options = {k: v.strip() if isinstance(v, str) else v for k, v in options.items() if str(v).strip()}
    if "num_speakers" in options:
        options["num_speakers"] = int(options["num_speakers"])
    return options


def resolve_inputs(
    inputs: list[str], relative_paths: dict[str, str] | None = None, storage_options: StorageOptions | None = None
) -> list[InputItem]:
    """Expand files, folders (recursively, media files only) and globs into one item per file.

    Relative paths are taken from the deepest folder that holds every input, so `a/talk.mp3` and
    `b/talk.mp3` keep their folders and never share an output path. A missing path or a folder or glob
    with no media becomes an item carrying its error, so it ends as a manifest row of its own.
    `relative_paths` (source -> relative path) pins the relative path of the sources it names, so a rerun of
    some rows of a manifest keeps their keys whatever folder the rerun's inputs have in common.
    URLs expand too (see `expand_url`): `ipfs://CID[/path]` to the media files under it (verified), a
    folder-like fsspec URL (`s3://bucket/prefix/`, `memory://dir`) or a glob to its media files, any other
    URL (`https://...`) to itself. `storage_options` holds fsspec options per protocol (never logged).
    """
    found: list[tuple[str, Path | None]] = []  # (source, the file) or (source, None) when nothing matched
    roots: list[Path] = []
    remote: list[InputItem] = []
    for raw in inputs:
        if urls.is_url(raw):
            remote.extend(expand_url(raw, storage_options))
            continue
        raw = urls.local_path(raw)
        path = Path(raw).expanduser()
        if glob.has_magic(raw):
            matches = sorted(Path(m) for m in glob.glob(str(path), recursive=True) if Path(m).is_file())
            roots.append(_glob_root(path))
            found.extend((str(m.resolve()), m.resolve()) for m in matches) if matches else found.append((raw, None))
        elif path.is_dir():
            files = _walk_media(path)
            roots.append(path.resolve())
            found.extend((str(f), f) for f in files) if files else found.append((raw, None))
        else:
            resolved = path.resolve() if path.exists() or path.is_symlink() else path.absolute()
            roots.append(resolved.parent)
            found.append((str(resolved), resolved))
    root = Path(os.path.commonpath([str(r) for r in roots])) if roots else Path("/")

    items: dict[str, InputItem] = {}
    for item in remote:
        items.setdefault(item.source, item)
    for source, file in found:
        if file is None:
            name = safe_relative(Path(source).name or "input")
            items.setdefault(source, InputItem(source, name, f"no media files found in {source}"))
        else:
            rel = safe_relative(file.relative_to(root).as_posix() if file.is_relative_to(root) else file.name)
            error = "" if file.exists() or file.is_symlink() else f"file not found: {source}"
            items.setdefault(source, InputItem(source, rel, error))
    pinned = relative_paths or {}
    return [
        replace(i, relative_path=safe_relative(pinned[i.source])) if i.source in pinned else i for i in items.values()
    ]


def expand_url(url: str, storage_options: StorageOptions | None = None) -> list[InputItem]:
    """One item per media file a URL names; a URL that cannot be listed becomes one item carrying its error.

    Relative paths are the URL's host and path (`s3://bucket/a/x.mp3` -> `bucket/a/x.mp3`), and for IPFS
    the CID and the path inside it (`ipfs://CID/a/x.mp3` -> `CID/a/x.mp3`), so outputs mirror the source.
    """
    try:
        if urls.protocol(url) == "ipfs":
            return _expand_ipfs(url, storage_options)
        return _expand_fsspec(url, storage_options)
    except Exception as e:  # noqa: BLE001 - any listing failure becomes that input's row
        return [InputItem(url, urls.relative_path(url), f"cannot list {urls.redact(url)}: {describe(e)}")]


def _expand_ipfs(url: str, storage_options: StorageOptions | None) -> list[InputItem]:
    from batchscribe import ipfs

    root, path = ipfs.parse_ipfs_url(url)
    files = ipfs.list_files(url, **ipfs_options(storage_options))
    base = "/".join([str(root), *path])
    if len(files) == 1 and files[0].path == "":
        return [InputItem(f"ipfs://{base}", safe_relative(base))]
    items = [
        InputItem(f"ipfs://{base}/{f.path}", safe_relative(f"{base}/{f.path}"), f.error)
        for f in files
        if f.error
        or (PurePosixPath(f.path).suffix.lower() in MEDIA_EXTENSIONS and not f.path.split("/")[-1].startswith("."))
    ]
    return items or [InputItem(url, safe_relative(base), f"no media files found in {urls.redact(url)}")]


def _expand_fsspec(url: str, storage_options: StorageOptions | None) -> list[InputItem]:
    if urls.protocol(url) in ("http", "https"):
        return [InputItem(url, urls.relative_path(url))]  # a web server has no listing to trust
    fs, path = storage.filesystem(url, storage_options)
    if glob.has_magic(path):
        files = [p for p in fs.glob(path) if fs.isfile(p)]
    elif url.endswith("/") or fs.isdir(path):
        files = [
            p
            for p in fs.find(path)
            if PurePosixPath(p).suffix.lower() in MEDIA_EXTENSIONS
            and not any(part.startswith(".") for part in PurePosixPath(p).relative_to(path.rstrip("/") or "/").parts)
        ]
    else:
        return [InputItem(url, urls.relative_path(url))]
    items = [InputItem(u, urls.relative_path(u)) for u in (fs.unstrip_protocol(p) for p in sorted(files))]
    return items or [InputItem(url, urls.relative_path(url), f"no media files found in {urls.redact(url)}")]


def ipfs_options(storage_options: StorageOptions | None) -> dict[str, str | None]:
    options = (storage_options or {}).get("ipfs", {})
    return {"gateway": options.get("gateway"), "rpc": options.get("api")}


def describe(error: BaseException) -> str:
    return str(error) if isinstance(error, InputError) else f"{type(error).__name__}: {error}"


def _walk_media(folder: Path) -> list[Path]:
    # os.walk does not follow symlinked folders, so a symlink loop cannot recurse forever.
    files = []
    for dirpath, dirnames, filenames in os.walk(folder.resolve()):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files.extend(
            Path(dirpath) / f
            for f in sorted(filenames)
            if not f.startswith(".") and Path(f).suffix.lower() in MEDIA_EXTENSIONS
        )
    return sorted(files)


def _glob_root(pattern: Path) -> Path:
    parts = []
    for part in pattern.parts:
        if glob.has_magic(part):
            break
        parts.append(part)
    return Path(*parts).resolve() if parts else Path.cwd()
