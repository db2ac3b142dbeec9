"""URLs, parsed in one place: what counts as a URL, its protocol, its parts, and its credentials hidden.

A string is a URL when it has a scheme (`s3://`, `https://`, `ipfs://`, `memory://`, ...) other than
`file://`, and is not the name of an existing local file (a local name may contain `://`). `file://` URLs
are local paths.
"""

from __future__ import annotations

import os

from batchscribe.paths import safe_relative


def split(url: str) -> tuple[str, str, str]:
    """`scheme://authority/path?query` -> (scheme in lower case, authority, path with its query); no scheme:
    ("", "", url)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "", "", url
    authority, slash, path = rest.partition("/")
    return scheme.lower(), authority, slash + path


def is_url(text: str) -> bool:
    """True for a URL other than `file://` (a local path that exists is never a URL)."""
    scheme = split(text)[0]
    return bool(scheme) and scheme != "file" and not os.path.exists(text)


def protocol(url: str) -> str:
    """The URL's scheme in lower case; "file" for local paths and `file://` URLs."""
    return split(url)[0] or "file"


def local_path(text: str) -> str:
    """A local path with any `file://` prefix removed."""
    return text[len("file://") :] if text[:7].lower() == "file://" else text


def redact(url: str) -> str:
    """`url` without credentials (`https://user:secret@host/x` -> `https://***@host/x`), for manifests and logs."""
    scheme, authority, path = split(url)
    if not scheme or "@" not in authority:
        return url
    return f"{url.partition('://')[0]}://***@{authority.rsplit('@', 1)[1]}{path}"


def relative_path(url: str) -> str:
    """Where a URL's outputs go under the output root: host and path, no credentials, no query.

    `s3://bucket/a/x.mp3` -> `bucket/a/x.mp3`; `https://u:p@host/x.mp3?sig=1` -> `host/x.mp3`.
    """
    _, authority, path = split(url)
    host = authority.rsplit("@", 1)[-1]
    return safe_relative((host + path).split("?", 1)[0].rstrip("/") or "input")
