"""URLs, parsed in one place: what counts as a URL, its protocol, its parts, and its credentials hidden.

A string is a URL when it has a scheme (`s3://`, `https://`, `ipfs://`, `memory://`, ...) other than
`file://`, and is not the name of an existing local file (a local name may contain `://`). `file://` URLs
are local paths.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import parse_qsl, urlencode

from batchscribe.paths import safe_relative

# Query parameters that sign or authorize a link rather than name what it serves (AWS, GCS and Azure
# signed URLs, CloudFront, tokens): left out of keys, so a link signed again keeps its key.
_SIGNING = re.compile(
    r"^(x-amz-.*|x-goog-.*|awsaccesskeyid|signature|sig|se|sp|sv|sr|st|spr|skoid|sktid|skt|ske|sks|skv|"
    r"expires|key-pair-id|policy|token|access_token|auth|api_key|apikey)$",
    re.IGNORECASE,
)
_QUERY_TAG_CHARS = 40  # a longer (or unsafe) query is named by its hash


@dataclass(frozen=True)
class Location:
    """A source parsed once: its protocol ("file" for local paths), the path inside that filesystem, its query."""

    source: str  # as the user named it
    protocol: str
    path: str  # an absolute-or-relative local path, or the URL's path inside its filesystem (no query)
    authority: str = ""  # the URL's host (credentials included, as given); "" for local paths
    query: str = ""

    @property
    def is_remote(self) -> bool:
        return self.protocol != "file"


def parse(text: str) -> Location:
    """`text` (a local path, a `file://` URL or any URL) as a Location."""
    if not is_url(text):
        return Location(text, "file", local_path(text))
    return parse_url(text)


def local(path: str) -> Location:
    """`path`, known to be a local path (found on the disk), as a Location."""
    return Location(path, "file", path)


def parse_url(url: str) -> Location:
    """`url`, known to be a URL (it came from a listing of one), as a Location: no look at the local disk."""
    scheme, authority, rest = split(url)
    path, _, query = rest.partition("?")
    return Location(url, scheme, path, authority, query)


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


def relative_path(url: str | Location) -> str:
    """Where a URL's outputs go under the output root: host and path, no credentials, and its query's tag.

    `s3://bucket/a/x.mp3` -> `bucket/a/x.mp3`; `https://u:p@host/x.mp3?sig=1` -> `host/x.mp3` (a signing
    parameter names no content); `https://host/get.mp3?id=2` -> `host/get~id=2.mp3`, so links that differ in
    what their query asks for never share a key.
    """
    location = url if isinstance(url, Location) else parse(url)
    host = location.authority.rsplit("@", 1)[-1]
    relative = safe_relative((host + location.path).rstrip("/") or "input")
    tag = query_tag(location.query)
    if not tag:
        return relative
    folder, _, name = relative.rpartition("/")
    stem, suffix = (name[: -len(PurePosixPath(name).suffix)], PurePosixPath(name).suffix) if "." in name else (name, "")
    return f"{folder}/{stem}~{tag}{suffix}" if folder else f"{stem}~{tag}{suffix}"


def query_tag(query: str) -> str:
    """The part of a file name that tells a query apart: its non-signing parameters, sorted; "" for none."""
    params = sorted((k, v) for k, v in parse_qsl(query, keep_blank_values=True) if not _SIGNING.match(k))
    if not params:
        return ""
    text = urlencode(params)
    if len(text) <= _QUERY_TAG_CHARS and re.fullmatch(r"[A-Za-z0-9._=&-]+", text):
        return text
    return hashlib.sha256(text.encode()).hexdigest()[:12]
