"""Inputs: files, folders, globs, URLs and input lists expanded into one item per file of the batch."""

from __future__ import annotations

import glob
import hashlib
import io
import os
import time
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from batchscribe import storage, urls
from batchscribe.errors import InputError, is_transient
from batchscribe.media import InputItem
from batchscribe.paths import safe_relative
from batchscribe.storage import StorageOptions

LIST_RETRY_DELAYS_S = (1.0, 2.0, 4.0)  # a listing that failed transiently is tried again after these waits

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
    inputs: list[str],
    relative_paths: dict[str, str] | None = None,
    storage_options: StorageOptions | None = None,
    known: Mapping[str, str] | None = None,
) -> list[InputItem]:
    """Expand files, folders (recursively, media files only) and globs into one item per file.

    Relative paths are taken from the deepest folder that holds every input, so `a/talk.mp3` and
    `b/talk.mp3` keep their folders and never share an output path. A missing path or a folder or glob
    with no media becomes an item carrying its error, so it ends as a manifest row of its own.
    `relative_paths` (source -> relative path) pins the relative path of the sources it names, so a rerun of
    some rows of a manifest keeps their keys whatever folder the rerun's inputs have in common.
    `known` (source as the manifest records it -> its key) are the output's manifest rows: a source already
    there keeps its key, and a new source never takes a key another source holds (docs/keys.md).
    URLs expand too (see `expand_url`): `ipfs://CID[/path]` to the media files under it (verified), a
    folder-like fsspec URL (`s3://bucket/prefix/`, `memory://dir`) or a glob to its media files, any other
    URL (`https://...`) to itself. `storage_options` holds fsspec options per protocol (never logged).
    """
    found: list[tuple[str, Path | None]] = []  # (source, the file) or (source, None) when nothing matched
    roots: list[Path] = []
    remote: list[InputItem] = []
    for raw in inputs:
        location = urls.parse(raw)
        if location.is_remote:
            remote.extend(expand_url(location, storage_options))
            continue
        raw = location.path
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
        local = urls.local(source)  # found on the disk (or named as a path): no second look at whether it is a URL
        if file is None:
            name = safe_relative(Path(source).name or "input")
            items.setdefault(source, InputItem(source, name, f"no media files found in {source}", local))
        else:
            rel = safe_relative(file.relative_to(root).as_posix() if file.is_relative_to(root) else file.name)
            error = "" if file.exists() or file.is_symlink() else f"file not found: {source}"
            items.setdefault(source, InputItem(source, rel, error, local))
    return assign_keys(list(items.values()), relative_paths or {}, known or {})


def assign_keys(items: list[InputItem], pinned: Mapping[str, str], known: Mapping[str, str]) -> list[InputItem]:
    """Each item's final key: pinned by the request, else the one the manifest already holds for its source,
    else its own, made longer (more parent folders, else a hash of the source) while another source holds it."""
    holders: dict[str, str] = {key: source for source, key in known.items()}  # key -> the source holding it
    keys: dict[str, str] = {}
    for item in items:  # first the keys that are already decided
        recorded = urls.redact(item.source)
        if item.source in pinned or recorded in known:
            keys[item.source] = safe_relative(pinned[item.source]) if item.source in pinned else known[recorded]
            holders.setdefault(keys[item.source], recorded)
    for item in items:
        if item.source not in keys:
            keys[item.source] = _free_key(item, holders)
            holders[keys[item.source]] = urls.redact(item.source)
    return [InputItem(item.source, keys[item.source], item.error, item.location) for item in items]


def _free_key(item: InputItem, holders: Mapping[str, str]) -> str:
    recorded = urls.redact(item.source)
    candidates = [item.relative_path]
    location = item.location
    if not location.is_remote:  # more of the file's own path: 2024/a.mp3, data/2024/a.mp3, ...
        parts = Path(location.path).parts[1:]
        depth = len(item.relative_path.split("/"))
        candidates += [safe_relative("/".join(parts[-n:])) for n in range(depth + 1, len(parts) + 1)]
    for key in candidates:
        if holders.get(key, recorded) == recorded:
            return key
    folder, _, name = item.relative_path.rpartition("/")
    stem, dot, suffix = name.rpartition(".") if "." in name else (name, "", "")
    tagged = f"{stem}~{hashlib.sha256(recorded.encode()).hexdigest()[:8]}{dot}{suffix}"
    return f"{folder}/{tagged}" if folder else tagged


def expand_url(url: str | urls.Location, storage_options: StorageOptions | None = None) -> list[InputItem]:
    """One item per media file a URL names; a URL that cannot be listed becomes one item carrying its error.

    Relative paths are the URL's host and path (`s3://bucket/a/x.mp3` -> `bucket/a/x.mp3`), and for IPFS
    the CID and the path inside it (`ipfs://CID/a/x.mp3` -> `CID/a/x.mp3`), so outputs mirror the source.
    """
    location = url if isinstance(url, urls.Location) else urls.parse_url(url)
    url = location.source
    for delay_s in (*LIST_RETRY_DELAYS_S, None):
        try:
            if location.protocol == "ipfs":
                return _expand_ipfs(url, storage_options)
            return _expand_fsspec(location, storage_options)
        except Exception as e:  # noqa: BLE001 - any listing failure becomes that input's row
            from batchscribe.downloads import classify  # downloads imports this module

            error = classify(e, url, urls.redact(url))
            if delay_s is None or not is_transient(error):  # a 504 or a reset is tried again, like a download
                reason = f"cannot list {urls.redact(url)}: {describe(e)}"
                return [InputItem(url, urls.relative_path(location), reason, location)]
            time.sleep(delay_s)
    raise AssertionError("unreachable")


def _expand_ipfs(url: str, storage_options: StorageOptions | None) -> list[InputItem]:
    from batchscribe import ipfs

    root, path = ipfs.parse_ipfs_url(url)
    files = ipfs.list_files(url, **ipfs_options(storage_options))
    base = "/".join([str(root), *path])
    if len(files) == 1 and files[0].path == "":
        return [_remote_item(f"ipfs://{base}", safe_relative(base))]
    items = [
        _remote_item(f"ipfs://{base}/{f.path}", safe_relative(f"{base}/{f.path}"), f.error)
        for f in files
        if f.error
        or (PurePosixPath(f.path).suffix.lower() in MEDIA_EXTENSIONS and not f.path.split("/")[-1].startswith("."))
    ]
    return items or [_remote_item(url, safe_relative(base), f"no media files found in {urls.redact(url)}")]


def _remote_item(url: str, relative_path: str | None = None, error: str = "") -> InputItem:
    """The item of a URL found by listing a remote location (a URL, whatever the local disk holds); its key
    is `relative_path`, else the URL's own (`urls.relative_path`)."""
    location = urls.parse_url(url)
    return InputItem(url, relative_path or urls.relative_path(location), error, location)


def _expand_fsspec(location: urls.Location, storage_options: StorageOptions | None) -> list[InputItem]:
    url = location.source
    if location.protocol in ("http", "https"):
        return [InputItem(url, urls.relative_path(location), location=location)]  # a web server has no listing to trust
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
        return [InputItem(url, urls.relative_path(location), location=location)]
    items = [_remote_item(fs.unstrip_protocol(p)) for p in sorted(files)]
    empty = f"no media files found in {urls.redact(url)}"
    return items or [InputItem(url, urls.relative_path(location), empty, location)]


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
