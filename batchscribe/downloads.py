"""Staging: an input made local (downloaded into a cache keyed by its version when remote) and hashed.

A download is kept only while its file is on its way: `evict` removes it once the file's row is ready
(written or failed). What a rerun needs of a finished remote file is its content hash, which keys every
cache downstream: a small record of it stays under `HASHES_DIR`, so staging it again costs one metadata
request (`fetch=False`), and the bytes come down again only when something has to be computed from them.

A failed download says what it means: an `InputError` when the answer is final (not found, HTTP 403, over
the size cap), an `UnavailableError` when another try may succeed (a timeout, a reset, HTTP 5xx/408/429).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path, PurePosixPath

from batchscribe import storage, urls
from batchscribe.atomic import atomic_file
from batchscribe.errors import BatchscribeError, InputError, UnavailableError
from batchscribe.inputs import ipfs_options
from batchscribe.media import InputItem, StagedFile
from batchscribe.paths import safe_relative
from batchscribe.storage import StorageOptions

HASH_CHUNK_BYTES = 1 << 20  # 1 MiB
IN_MEMORY_MAX_BYTES = 16 << 20  # a local input up to 16 MiB is read once: hashed, then decoded from memory
RETRYABLE_HTTP_STATUSES = frozenset({408, 425, 429})  # and every 5xx; other 4xx answers are final
DOWNLOADS_DIR = "downloads"  # under the cache folder: <version key>/<name>, removed once the file's row is ready
HASHES_DIR = "download-hashes"  # under the cache folder: <xx>/<version key> -> "<sha256> <size>", kept (~80 B each)


def stage_local(item: InputItem, max_bytes: int | None = None) -> StagedFile:
    """Hash a local file in place (it is never copied). Raises InputError with the cause in words.

    A file up to IN_MEMORY_MAX_BYTES is read whole, once: its bytes are hashed and kept in the StagedFile,
    so decoding reads no file again.
    """
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
        data = path.read_bytes() if size <= IN_MEMORY_MAX_BYTES else None
        digest = hashlib.sha256(data).hexdigest() if data is not None else sha256_file(path)
    except PermissionError as e:
        raise InputError(f"permission denied reading {item.source}") from e
    except OSError as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"cannot read {item.source}: {e.strerror or e}") from e
    return StagedFile(item.source, item.relative_path, str(path), digest, len(data) if data else size, data=data)


def stage_remote(
    item: InputItem,
    download_dir: Path,
    storage_options: StorageOptions | None = None,
    max_bytes: int | None = None,
    *,
    hash_dir: Path | None = None,
    fetch: bool = True,
) -> StagedFile:
    """Download a URL into a cache keyed by its version under `download_dir`, streaming, then hash it.

    The key is the IPFS CID and path (immutable), or the URL with its ETag, size and modification time,
    so a copy still there (a retry, another file of the batch) is not downloaded again. With `hash_dir`,
    the content hash is recorded there by the same key; with `fetch=False` too, a recorded version is not
    downloaded at all: the StagedFile names where its copy would be (`present` is False). IPFS content is
    verified against its CID. Network failures raise ConnectionError (retried); missing or bad content
    raises InputError.
    """
    if item.location.protocol == "ipfs":
        from batchscribe import ipfs

        key = "ipfs-" + hashlib.sha256(item.source.removeprefix("ipfs://").encode()).hexdigest()[:32]
        target = download_dir / key / _download_name(item)
        if not fetch and not target.exists() and (known := _recorded(hash_dir, key)):
            return StagedFile(item.source, item.relative_path, str(target), *known)
        if not target.exists():
            with _tidy(target):
                ipfs.download(item.source, target, max_bytes=max_bytes, **ipfs_options(storage_options))
    else:
        key, target, size = _version(item, download_dir, storage_options, max_bytes)
        if not fetch and not target.exists() and (known := _recorded(hash_dir, key)) and known[1] == size:
            return StagedFile(item.source, item.relative_path, str(target), *known)
        with _tidy(target):
            _download_fsspec(item, target, size, storage_options, max_bytes)
    staged = stage_local(InputItem(str(target), item.relative_path, location=urls.local(str(target))))
    if hash_dir is not None:
        with atomic_file(_record_path(hash_dir, key), durable=False) as record:  # a cache entry: rebuilt if lost
            record.write(f"{staged.sha256} {staged.size_bytes}\n".encode())
    return replace(staged, source=item.source, relative_path=item.relative_path)  # a small file's bytes kept


def evict(staged: StagedFile, download_dir: Path) -> None:
    """Remove `staged`'s downloaded copy (and its key folder) from `download_dir`; a local input is never touched."""
    path = Path(staged.local_path)
    if not staged.local_path or not path.is_relative_to(download_dir):
        return
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty: another file's copy under the same key
        path.parent.rmdir()


def _recorded(hash_dir: Path | None, key: str) -> tuple[str, int] | None:
    """The (sha256, size) recorded for a download key, or None."""
    try:
        sha256, size = _record_path(hash_dir, key).read_text().split() if hash_dir is not None else ("", "")
    except (OSError, ValueError):
        return None
    return (sha256, int(size)) if sha256 else None


def _record_path(hash_dir: Path, key: str) -> Path:
    return hash_dir / key[-2:] / key  # 256 folders: no folder of a million files


@contextlib.contextmanager
def _tidy(target: Path) -> Iterator[None]:
    """A download that fails leaves no empty key folder behind."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(OSError):
            target.parent.rmdir()
        raise


def _download_name(item: InputItem) -> str:
    return safe_relative(PurePosixPath(item.relative_path).name)


def _version(
    item: InputItem, download_dir: Path, storage_options: StorageOptions | None, max_bytes: int | None
) -> tuple[str, Path, int | None]:
    """The download key of the version `item.source` names now, where its copy goes, and its size."""
    with _classified(item.source):
        fs, path = storage.filesystem(item.source, storage_options)
        info = fs.info(path)
        size = info.get("size")
        if max_bytes is not None and size is not None and size > max_bytes:
            raise InputError(_too_big(item.source, size, max_bytes))
        version = [str(info.get(k, "")) for k in ("ETag", "etag", "LastModified", "mtime", "VersionId")]
        key = hashlib.sha256("\n".join([item.source, str(size), *version]).encode()).hexdigest()[:32]
        return key, download_dir / key / _download_name(item), size


def _download_fsspec(
    item: InputItem, target: Path, size: int | None, storage_options: StorageOptions | None, max_bytes: int | None
) -> None:
    """Stream `item.source` into `target` (atomically), unless a whole copy is already there."""
    if target.exists() and (size is None or target.stat().st_size == size):
        return
    shown = urls.redact(item.source)
    with _classified(item.source):
        fs, path = storage.filesystem(item.source, storage_options)
        written = 0
        with fs.open(path, "rb", block_size=HASH_CHUNK_BYTES * 5) as src, atomic_file(target, durable=False) as dst:
            while chunk := src.read(HASH_CHUNK_BYTES):
                written += len(chunk)
                if max_bytes is not None and written > max_bytes:
                    raise InputError(_too_big(item.source, None, max_bytes))
                dst.write(chunk)
            if size is not None and written != size:
                raise UnavailableError(f"download of {shown} ended early: {written} of {size} bytes")


@contextlib.contextmanager
def _classified(source: str) -> Iterator[None]:
    """What a failure of the block means for `source`: a final InputError or a retryable UnavailableError."""
    shown = urls.redact(source)  # never credentials in an error (it reaches logs and the manifest)
    try:
        yield
    except BatchscribeError:
        raise
    except FileNotFoundError as e:
        # fsspec's HTTP filesystem reports every failed size probe as FileNotFoundError: look at the cause.
        if isinstance(e.__cause__, Exception) and not isinstance(e.__cause__, FileNotFoundError):
            status = getattr(e.__cause__, "status", None)
            if status not in (404, 410):
                raise classify(e.__cause__, source, shown) from e
        raise InputError(f"not found: {shown}") from e
    except PermissionError as e:
        raise InputError(f"permission denied reading {shown}") from e
    except Exception as e:  # noqa: BLE001 - aiohttp/botocore errors are not OSErrors: classify by name
        raise classify(e, source, shown) from e


def classify(error: Exception, source: str, shown: str) -> Exception:
    """What a failed download means: a final InputError, a retryable ConnectionError, or `error` itself."""
    status = getattr(error, "status", None)  # an HTTP error answer (aiohttp's ClientResponseError)
    if isinstance(status, int) and 400 <= status < 500 and status not in RETRYABLE_HTTP_STATUSES:
        reason = getattr(error, "message", "") or ""
        return InputError(f"{shown}: the server answered HTTP {status} {reason}".strip())
    if _looks_transient(error):
        detail = str(error).replace(source, shown)
        return UnavailableError(f"download of {shown} failed: {type(error).__name__}: {detail}")
    return error


def _too_big(source: str, size: int | None, max_bytes: int) -> str:
    what = f"{size:,} bytes" if size is not None else f"over {max_bytes:,} bytes"
    return f"{urls.redact(source)} is {what}, larger than the size cap (--max-input-size) of {max_bytes:,} bytes"


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
