"""Where files live: local paths or any fsspec URL (`s3://bucket/out`, `memory://out`, ...).

One small set of helpers that outputs (subtitles, manifest) and remote inputs share. Local writes go to a
temp file, are fsynced and renamed over the target (atomic on POSIX). Remote writes are one whole-object
put (`pipe_file`): object stores replace an object atomically, so readers see the old or the new object,
never a torn one. `storage_options` maps a protocol (`"s3"`) to that filesystem's keyword arguments
(endpoint, credentials); they are passed to fsspec and never logged.
"""

from __future__ import annotations

import os
import posixpath
from typing import Any

import fsspec
from fsspec import AbstractFileSystem

from batchscribe import atomic, urls
from batchscribe.urls import is_url, local_path

StorageOptions = dict[str, dict[str, Any]]


def output_root(output: str) -> str:
    """The output location as used everywhere: a URL as given, a local path made absolute."""
    return output if is_url(output) else os.path.abspath(os.path.expanduser(local_path(output)))


# HTTP(S) timeouts: give up on a server that does not answer or stalls, never on a long, steady download
# (aiohttp's default is 300 s for the whole request, which cuts any download that takes longer).
HTTP_CONNECT_TIMEOUT_S = 30.0
HTTP_READ_TIMEOUT_S = 60.0  # longest wait for the next bytes


def filesystem(url: str, storage_options: StorageOptions | None = None) -> tuple[AbstractFileSystem, str]:
    """The fsspec filesystem for `url`, built with the options for its protocol, and the path inside it.

    HTTP(S) gets connect and read timeouts (HTTP_CONNECT_TIMEOUT_S, HTTP_READ_TIMEOUT_S) and no limit on
    the whole download, unless `storage_options` sets its own `client_kwargs.timeout`.
    """
    kind = urls.protocol(url)
    options = dict((storage_options or {}).get(kind, {}))
    if kind in ("http", "https"):
        import aiohttp

        client_kwargs = dict(options.get("client_kwargs") or {})
        client_kwargs.setdefault(
            "timeout",
            aiohttp.ClientTimeout(total=None, sock_connect=HTTP_CONNECT_TIMEOUT_S, sock_read=HTTP_READ_TIMEOUT_S),
        )
        options["client_kwargs"] = client_kwargs
    return fsspec.core.url_to_fs(url, **options)


def join(root: str, *parts: str) -> str:
    """`root` joined with `/`-separated parts: posix for URLs, the OS's separator for local paths."""
    return posixpath.join(root, *parts) if is_url(root) else os.path.join(root, *parts)


def write_bytes_atomic(path: str, data: bytes, storage_options: StorageOptions | None = None) -> None:
    """Replace the file at `path` with `data` in one step (temp + fsync + rename locally; one put remotely)."""
    if is_url(path):
        fs, inner = filesystem(path, storage_options)
        fs.pipe_file(inner, data)
        return
    atomic.write_bytes(local_path(path), data)


def read_bytes(path: str, storage_options: StorageOptions | None = None) -> bytes | None:
    """The file's bytes, or None when it does not exist."""
    if not is_url(path):
        try:
            with open(local_path(path), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None
    fs, inner = filesystem(path, storage_options)
    try:
        return fs.cat_file(inner)
    except FileNotFoundError:
        return None
