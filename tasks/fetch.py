"""Inputs: expand files, folders and globs into a batch, then stage each file locally and hash its content."""

from __future__ import annotations

import glob
import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from prefect import task
from prefect.context import TaskRunContext

from batchscribe import storage
from batchscribe.retries import retry_when
from batchscribe.storage import StorageOptions

# Containers and codecs ffmpeg decodes that people keep speech in; a folder expands to these.
MEDIA_EXTENSIONS = frozenset(
    ".wav .mp3 .m4a .mp4 .m4v .mkv .mov .webm .ogg .oga .opus .flac .aac .wma .avi .mpeg .mpg .ts .3gp "
    ".amr .aif .aiff .caf .wv .mka .ac3".split()
)
HASH_CHUNK_BYTES = 1 << 20  # 1 MiB
RETRYABLE_HTTP_STATUSES = frozenset({408, 425, 429})  # and every 5xx; other 4xx answers are final


class InputError(Exception):
    """An input that cannot be read: permanent, never retried."""


@dataclass(frozen=True)
class InputItem:
    """One file of the batch, before it is read."""

    source: str  # what the user named (an absolute local path or a URL)
    relative_path: str  # where its outputs go under the output root (posix, never escapes it)
    error: str = ""  # set when the input could not even be listed (a missing path, an empty folder)


@dataclass(frozen=True)
class StagedFile:
    """A local, hashed copy of one input (the original file itself when it is already local)."""

    source: str
    relative_path: str
    local_path: str
    sha256: str
    size_bytes: int
    attempts: int = 1  # the stage task's runs, retries of a flaky download included


def read_input_list(location: str, storage_options: StorageOptions | None = None) -> list[str]:
    """The inputs listed in a .txt (one per line, `#` comments), .csv or .parquet file (local or a URL).

    Tables use their `source` column (a manifest works as is), else their first column. Relative local
    paths are taken relative to the list's own folder.
    """
    import io

    import pandas as pd

    data = storage.read_bytes(location, storage_options)
    if data is None:
        raise InputError(f"input list not found: {location}")
    suffix = PurePosixPath(location.split("?", 1)[0]).suffix.lower()
    if suffix in (".csv", ".parquet"):
        table = pd.read_parquet(io.BytesIO(data)) if suffix == ".parquet" else pd.read_csv(io.BytesIO(data))
        column = table["source"] if "source" in table else table.iloc[:, 0]
        entries = [str(v).strip() for v in column.dropna()]
    else:
        lines = data.decode("utf-8-sig").splitlines()
        entries = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    base = None if storage.is_remote(location) else Path(location).expanduser().resolve().parent
    return [e if base is None or is_url(e) or Path(e).is_absolute() else str(base / e) for e in entries if e]


def is_url(text: str) -> bool:
    return "://" in text and not Path(text).exists()


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
        if is_url(raw):
            remote.extend(expand_url(raw, storage_options))
            continue
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
            name = _safe_relative(Path(source).name or "input")
            items.setdefault(source, InputItem(source, name, f"no media files found in {source}"))
        else:
            rel = _safe_relative(file.relative_to(root).as_posix() if file.is_relative_to(root) else file.name)
            error = "" if file.exists() or file.is_symlink() else f"file not found: {source}"
            items.setdefault(source, InputItem(source, rel, error))
    pinned = relative_paths or {}
    return [
        replace(i, relative_path=_safe_relative(pinned[i.source])) if i.source in pinned else i for i in items.values()
    ]


def expand_url(url: str, storage_options: StorageOptions | None = None) -> list[InputItem]:
    """One item per media file a URL names; a URL that cannot be listed becomes one item carrying its error.

    Relative paths are the URL's host and path (`s3://bucket/a/x.mp3` -> `bucket/a/x.mp3`), and for IPFS
    the CID and the path inside it (`ipfs://CID/a/x.mp3` -> `CID/a/x.mp3`), so outputs mirror the source.
    """
    try:
        if storage.protocol(url) == "ipfs":
            return _expand_ipfs(url, storage_options)
        return _expand_fsspec(url, storage_options)
    except Exception as e:  # noqa: BLE001 - any listing failure becomes that input's row
        return [InputItem(url, _url_relative_path(url), f"cannot list {storage.redact(url)}: {_describe(e)}")]


def _expand_ipfs(url: str, storage_options: StorageOptions | None) -> list[InputItem]:
    from batchscribe import ipfs

    root, path = ipfs.parse_ipfs_url(url)
    files = ipfs.list_files(url, **_ipfs_options(storage_options))
    base = "/".join([str(root), *path])
    if len(files) == 1 and files[0].path == "":
        return [InputItem(f"ipfs://{base}", _safe_relative(base))]
    items = [
        InputItem(f"ipfs://{base}/{f.path}", _safe_relative(f"{base}/{f.path}"), f.error)
        for f in files
        if f.error
        or (PurePosixPath(f.path).suffix.lower() in MEDIA_EXTENSIONS and not f.path.split("/")[-1].startswith("."))
    ]
    return items or [InputItem(url, _safe_relative(base), f"no media files found in {storage.redact(url)}")]


def _expand_fsspec(url: str, storage_options: StorageOptions | None) -> list[InputItem]:
    if storage.protocol(url) in ("http", "https"):
        return [InputItem(url, _url_relative_path(url))]  # a web server has no listing to trust
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
        return [InputItem(url, _url_relative_path(url))]
    items = [InputItem(u, _url_relative_path(u)) for u in (fs.unstrip_protocol(p) for p in sorted(files))]
    return items or [InputItem(url, _url_relative_path(url), f"no media files found in {storage.redact(url)}")]


def _ipfs_options(storage_options: StorageOptions | None) -> dict[str, str | None]:
    options = (storage_options or {}).get("ipfs", {})
    return {"gateway": options.get("gateway"), "rpc": options.get("api")}


def _describe(error: BaseException) -> str:
    return str(error) if isinstance(error, InputError) else f"{type(error).__name__}: {error}"


def stage_local(item: InputItem, max_bytes: int | None = None) -> StagedFile:
    """Hash a local file in place (it is never copied). Raises InputError with the cause in words."""
    path = Path(item.source)
    try:
        if not path.exists():
            if path.is_symlink():
                raise InputError(f"broken or looping symlink: {item.source}")
            raise InputError(f"file not found: {item.source}")
        if path.is_dir():
            raise InputError(f"is a folder, not a file: {item.source}")
        if not path.is_file():
            raise InputError(f"not a regular file (a pipe, socket or device): {item.source}")
        size = path.stat().st_size
        if size == 0:
            raise InputError(f"file is empty (0 bytes): {item.source}")
        if max_bytes is not None and size > max_bytes:
            raise InputError(_too_big(item.source, size, max_bytes))
        digest = sha256_file(path)
    except PermissionError as e:
        raise InputError(f"permission denied reading {item.source}") from e
    except OSError as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"cannot read {item.source}: {e.strerror or e}") from e
    return StagedFile(item.source, item.relative_path, str(path), digest, size)


def stage_remote(
    item: InputItem,
    download_dir: Path,
    storage_options: StorageOptions | None = None,
    max_bytes: int | None = None,
) -> StagedFile:
    """Download a URL once into a content-addressed cache under `download_dir`, streaming, then hash it.

    The cache key is the IPFS CID and path (immutable), or the URL with its ETag, size and modification
    time, so a rerun finds the file already there and downloads nothing. IPFS content is verified against
    its CID. Network failures raise ConnectionError (retried); missing or bad content raises InputError.
    """
    if storage.protocol(item.source) == "ipfs":
        from batchscribe import ipfs

        key = "ipfs-" + hashlib.sha256(item.source.removeprefix("ipfs://").encode()).hexdigest()[:32]
        target = download_dir / key / _download_name(item)
        if not target.exists():
            ipfs.download(item.source, target, max_bytes=max_bytes, **_ipfs_options(storage_options))
    else:
        target = _download_fsspec(item, download_dir, storage_options, max_bytes)
    staged = stage_local(InputItem(str(target), item.relative_path))
    return StagedFile(item.source, item.relative_path, staged.local_path, staged.sha256, staged.size_bytes)


def _download_name(item: InputItem) -> str:
    return _safe_relative(PurePosixPath(item.relative_path).name)


def _download_fsspec(
    item: InputItem, download_dir: Path, storage_options: StorageOptions | None, max_bytes: int | None
) -> Path:
    shown = storage.redact(item.source)  # never credentials in an error (it reaches logs and the manifest)
    try:
        fs, path = storage.filesystem(item.source, storage_options)
        info = fs.info(path)
        size = info.get("size")
        if max_bytes is not None and size is not None and size > max_bytes:
            raise InputError(_too_big(item.source, size, max_bytes))
        version = [str(info.get(k, "")) for k in ("ETag", "etag", "LastModified", "mtime", "VersionId")]
        key = hashlib.sha256("\n".join([item.source, str(size), *version]).encode()).hexdigest()[:32]
        target = download_dir / key / _download_name(item)
        if target.exists() and (size is None or target.stat().st_size == size):
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
        try:
            written = 0
            with fs.open(path, "rb", block_size=HASH_CHUNK_BYTES * 5) as src, tmp.open("wb") as dst:
                while chunk := src.read(HASH_CHUNK_BYTES):
                    written += len(chunk)
                    if max_bytes is not None and written > max_bytes:
                        raise InputError(_too_big(item.source, None, max_bytes))
                    dst.write(chunk)
            if size is not None and written != size:
                raise ConnectionError(f"download of {shown} ended early: {written} of {size} bytes")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return target
    except (InputError, ConnectionError):
        raise
    except FileNotFoundError as e:
        # fsspec's HTTP filesystem reports every failed size probe as FileNotFoundError: look at the cause.
        if isinstance(e.__cause__, Exception) and not isinstance(e.__cause__, FileNotFoundError):
            status = getattr(e.__cause__, "status", None)
            if status not in (404, 410):
                raise _classify(e.__cause__, item.source, shown) from e
        raise InputError(f"not found: {shown}") from e
    except PermissionError as e:
        raise InputError(f"permission denied reading {shown}") from e
    except Exception as e:  # noqa: BLE001 - aiohttp/botocore errors are not OSErrors: classify by name
        raise _classify(e, item.source, shown) from e


def _classify(error: Exception, source: str, shown: str) -> Exception:
    """What a failed download means: a final InputError, a retryable ConnectionError, or `error` itself."""
    status = getattr(error, "status", None)  # an HTTP error answer (aiohttp's ClientResponseError)
    if isinstance(status, int) and 400 <= status < 500 and status not in RETRYABLE_HTTP_STATUSES:
        reason = getattr(error, "message", "") or ""
        return InputError(f"{shown}: the server answered HTTP {status} {reason}".strip())
    if _looks_transient(error):
        detail = str(error).replace(source, shown)
        return ConnectionError(f"download of {shown} failed: {type(error).__name__}: {detail}")
    return error


def _too_big(source: str, size: int | None, max_bytes: int) -> str:
    what = f"{size:,} bytes" if size is not None else f"over {max_bytes:,} bytes"
    return f"{storage.redact(source)} is {what}, larger than the size cap (--max-input-size) of {max_bytes:,} bytes"


def _looks_transient(error: BaseException) -> bool:
    names = {cls.__name__ for cls in type(error).__mro__}
    transient = {"ClientError", "ClientPayloadError", "ServerDisconnectedError", "TimeoutError", "IncompleteRead"}
    transient |= {"ReadTimeoutError", "EndpointConnectionError", "ConnectionClosedError", "OSError", "FSTimeoutError"}
    return bool(names & transient)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


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


def _url_relative_path(url: str) -> str:
    _, _, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    rest = authority.rsplit("@", 1)[-1] + slash + path  # never credentials in an output path
    return _safe_relative(rest.split("?", 1)[0].rstrip("/") or "input")


def _safe_relative(rel: str) -> str:
    """A posix relative path with no root, drive or '..' component: outputs stay under the output root."""
    parts = [p for p in PurePosixPath(rel.replace("\\", "/")).parts if p not in ("", ".", "..", "/")]
    parts = [p.replace(":", "_") for p in parts]
    return "/".join(parts) or "input"


def is_transient(error: BaseException) -> bool:
    """Network hiccups and timeouts are worth retrying; missing or unreadable files are not."""
    if isinstance(error, (InputError, FileNotFoundError, PermissionError, IsADirectoryError)):
        return False
    return isinstance(error, (ConnectionError, TimeoutError, OSError))


retry_if_transient = retry_when(is_transient)


@task(
    task_run_name="stage-{item.relative_path}",
    retries=3,
    retry_delay_seconds=[1, 2, 4],
    retry_jitter_factor=0.2,
    retry_condition_fn=retry_if_transient,
)
def stage_input(
    item: InputItem,
    cache_dir: str,
    storage_options: StorageOptions | None = None,
    max_bytes: int | None = None,
) -> StagedFile:
    """Make one input local and hash its content (sha256), which keys every cache downstream.

    Remote inputs (URLs, `ipfs://`) download once into `<cache_dir>/downloads`. Inputs over `max_bytes`
    fail with InputError (a remote one before or while it downloads, never after).
    """
    if item.error:
        raise InputError(item.error)
    if is_url(item.source):
        staged = stage_remote(item, Path(cache_dir) / "downloads", storage_options, max_bytes)
    else:
        staged = stage_local(item, max_bytes)
    context = TaskRunContext.get()
    return replace(staged, attempts=context.task_run.run_count) if context else staged
