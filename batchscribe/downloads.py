"""Staging: an input made local (downloaded once into a content-addressed cache when remote) and hashed.

A failed download says what it means: an `InputError` when the answer is final (not found, HTTP 403, over
the size cap), an `UnavailableError` when another try may succeed (a timeout, a reset, HTTP 5xx/408/429).
"""

from __future__ import annotations

import hashlib
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
) -> StagedFile:
    """Download a URL once into a content-addressed cache under `download_dir`, streaming, then hash it.

    The cache key is the IPFS CID and path (immutable), or the URL with its ETag, size and modification
    time, so a rerun finds the file already there and downloads nothing. IPFS content is verified against
    its CID. Network failures raise ConnectionError (retried); missing or bad content raises InputError.
    """
    if item.location.protocol == "ipfs":
        from batchscribe import ipfs

        key = "ipfs-" + hashlib.sha256(item.source.removeprefix("ipfs://").encode()).hexdigest()[:32]
        target = download_dir / key / _download_name(item)
        if not target.exists():
            ipfs.download(item.source, target, max_bytes=max_bytes, **ipfs_options(storage_options))
    else:
        target = _download_fsspec(item, download_dir, storage_options, max_bytes)
    staged = stage_local(InputItem(str(target), item.relative_path, location=urls.local(str(target))))
    return StagedFile(item.source, item.relative_path, staged.local_path, staged.sha256, staged.size_bytes)


def _download_name(item: InputItem) -> str:
    return safe_relative(PurePosixPath(item.relative_path).name)


def _download_fsspec(
    item: InputItem, download_dir: Path, storage_options: StorageOptions | None, max_bytes: int | None
) -> Path:
    shown = urls.redact(item.source)  # never credentials in an error (it reaches logs and the manifest)
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
        written = 0
        with fs.open(path, "rb", block_size=HASH_CHUNK_BYTES * 5) as src, atomic_file(target, durable=False) as dst:
            while chunk := src.read(HASH_CHUNK_BYTES):
                written += len(chunk)
                if max_bytes is not None and written > max_bytes:
                    raise InputError(_too_big(item.source, None, max_bytes))
                dst.write(chunk)
            if size is not None and written != size:
                raise UnavailableError(f"download of {shown} ended early: {written} of {size} bytes")
        return target
    except BatchscribeError:
        raise
    except FileNotFoundError as e:
        # fsspec's HTTP filesystem reports every failed size probe as FileNotFoundError: look at the cause.
        if isinstance(e.__cause__, Exception) and not isinstance(e.__cause__, FileNotFoundError):
            status = getattr(e.__cause__, "status", None)
            if status not in (404, 410):
                raise classify(e.__cause__, item.source, shown) from e
        raise InputError(f"not found: {shown}") from e
    except PermissionError as e:
        raise InputError(f"permission denied reading {shown}") from e
    except Exception as e:  # noqa: BLE001 - aiohttp/botocore errors are not OSErrors: classify by name
        raise classify(e, item.source, shown) from e


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
