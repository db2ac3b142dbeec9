"""Verified IPFS reads: trustless-gateway CAR responses (or a kubo RPC node), checked block by block.

The requested CID is the only trust anchor. Every block's hash is checked against the CID that names it,
and every block must be the one the DAG walk expects next (from the root, through the path's directory
links, down a file's links in order), so a gateway cannot substitute, reorder, drop or tamper with
content, and its `X-Ipfs-Roots` header is never read. File bytes stream to disk; memory holds the stack of
pending CIDs and a small cache of recent blocks (for gateways that de-duplicate).
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import quote

import requests
from multiformats import CID

from tasks.fetch import InputError

log = logging.getLogger(__name__)

CAR_MEDIA_TYPE = "application/vnd.ipld.car"
CHUNK_BYTES = 1 << 20
MAX_BLOCK_BYTES = 4 << 20  # kubo's hard limit is 4 MiB (2 MiB by default)
MAX_CAR_HEADER_BYTES = 64 << 10
CACHE_BLOCKS = 64
TIMEOUT_S = (10.0, 60.0)  # connect, read

# UnixFS node types (unixfs.proto).
UNIXFS_RAW, UNIXFS_DIRECTORY, UNIXFS_FILE, UNIXFS_METADATA, UNIXFS_SYMLINK, UNIXFS_HAMT = range(6)
_RETRY_STATUS = frozenset({404, 408, 410, 429, 500, 502, 503, 504})


class IpfsVerificationError(InputError):
    """The content does not match its CID (tampered, substituted, missing or extra blocks). Permanent."""


class IpfsNotFoundError(InputError, FileNotFoundError):
    """A path that the verified DAG does not contain. Permanent."""


class IpfsUnavailableError(ConnectionError):
    """The gateway or node could not deliver the content (network error, 404/5xx): worth retrying later."""


class IpfsIncompleteError(IpfsUnavailableError):
    """The response ended before every block arrived (what came was verified): retried like a network error."""


@dataclass(frozen=True)
class Link:
    name: str
    cid: CID
    tsize: int


@dataclass(frozen=True)
class Node:
    """A decoded block: a raw leaf (`kind` -1) or a dag-pb node with its UnixFS data."""

    cid: CID
    kind: int  # UNIXFS_* for dag-pb; -1 for a raw block
    data: bytes  # the file bytes this node carries itself
    links: tuple[Link, ...]
    filesize: int | None = None


@dataclass(frozen=True)
class IpfsFile:
    """A file found under a CID: its path inside the root (posix, '' for the root itself)."""

    path: str
    cid: CID
    size: int | None
    error: str = ""  # set when this entry's own block failed verification: the file cannot be trusted


# ---------------------------------------------------------------------------------------------- parsing


def parse_ipfs_url(url: str) -> tuple[CID, list[str]]:
    """`ipfs://CID/a/b` (or `/ipfs/CID/a/b`) -> (CID, ["a", "b"]). Raises InputError for a bad CID or path."""
    rest = url.split("://", 1)[1] if "://" in url else url.removeprefix("/ipfs/")
    head, _, path = rest.strip("/").partition("/")
    try:
        root = CID.decode(head)
    except Exception as e:  # noqa: BLE001 - multiformats raises several types
        raise InputError(f"not a valid IPFS CID: {head!r} in {url}") from e
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise InputError(f"'.' and '..' are not allowed in an IPFS path: {url}")
    return root, parts


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated or oversized varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """Protobuf fields as (number, value): varints as int, length-delimited as bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield number, value
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise ValueError("truncated protobuf field")
            yield number, buf[pos : pos + size]
            pos += size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def decode_block(cid: CID, block: bytes) -> Node:
    """Decode a verified block into a Node (raw leaf or dag-pb/UnixFS)."""
    if cid.codec.name == "raw":
        return Node(cid, -1, block, ())
    if cid.codec.name != "dag-pb":
        raise IpfsVerificationError(f"unsupported IPLD codec {cid.codec.name} for {cid}")
    try:
        links, unixfs = [], b""
        for number, value in _fields(block):
            if number == 2 and isinstance(value, bytes):
                fields = dict(_fields(value))
                links.append(Link(bytes(fields.get(2, b"")).decode(), CID.decode(fields[1]), int(fields.get(3, 0))))
            elif number == 1 and isinstance(value, bytes):
                unixfs = value
        kind, data, filesize = UNIXFS_RAW, b"", None
        for number, value in _fields(unixfs):
            if number == 1:
                kind = int(value)
            elif number == 2:
                data = bytes(value)
            elif number == 3:
                filesize = int(value)
    except (ValueError, KeyError, UnicodeDecodeError) as e:
        raise IpfsVerificationError(f"malformed dag-pb block {cid}: {e}") from e
    return Node(cid, kind, data, tuple(links), filesize)


def iter_car(chunks: Iterator[bytes]) -> Iterator[tuple[CID, bytes]]:
    """(CID, block) pairs of a CARv1 byte stream; the header (and its roots) is skipped, never trusted."""
    reader = _StreamReader(chunks)
    header_len = reader.varint()
    if header_len is None:
        raise IpfsVerificationError("empty CAR response")
    if header_len > MAX_CAR_HEADER_BYTES:
        raise IpfsVerificationError(f"CAR header of {header_len} bytes is implausibly large")
    reader.exact(header_len)
    while (size := reader.varint()) is not None:
        if size > MAX_BLOCK_BYTES + 128:
            raise IpfsVerificationError(f"CAR section of {size} bytes exceeds the block size limit")
        section = reader.exact(size)
        try:
            if section[:2] == b"\x12\x20":  # CIDv0: a bare sha2-256 multihash
                cid_len = 34
            else:
                pos = 0
                for _ in range(3):  # version, codec, hash code
                    _, pos = _varint(section, pos)
                digest_len, pos = _varint(section, pos)
                cid_len = pos + digest_len
            yield CID.decode(section[:cid_len]), section[cid_len:]
        except (ValueError, KeyError) as e:
            raise IpfsVerificationError(f"malformed CID in CAR section: {e}") from e


class _StreamReader:
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = bytearray()

    def _fill(self, n: int) -> bool:
        while len(self._buf) < n:
            chunk = next(self._chunks, None)
            if chunk is None:
                return False
            self._buf += chunk
        return True

    def varint(self) -> int | None:
        if not self._fill(1):
            return None
        self._fill(10)
        try:
            value, pos = _varint(bytes(self._buf[:10]), 0)
        except ValueError as e:
            raise IpfsIncompleteError("CAR response truncated inside a length prefix") from e
        del self._buf[:pos]
        return value

    def exact(self, n: int) -> bytes:
        if not self._fill(n):
            raise IpfsIncompleteError("CAR response truncated: blocks are missing")
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out


def verify_block(cid: CID, block: bytes) -> None:
    """Raise IpfsVerificationError unless `block` hashes to `cid`."""
    if cid.hashfun.name == "identity":
        ok = cid.raw_digest == block
    else:
        ok = cid.hashfun.digest(block) == cid.digest
    if not ok:
        raise IpfsVerificationError(f"block {cid} does not match its hash: tampered or corrupted content")


# ---------------------------------------------------------------------------------------------- block sources


class BlockSource(Protocol):
    def get(self, cid: CID) -> bytes:
        """The verified block named `cid`."""
        ...


class CarBlocks:
    """Blocks served in the order a DAG walk asks for them, from one CAR stream, each verified."""

    def __init__(self, blocks: Iterator[tuple[CID, bytes]]) -> None:
        self._blocks = blocks
        self._cache: OrderedDict[bytes, bytes] = OrderedDict()

    def get(self, cid: CID) -> bytes:
        key = bytes(cid.digest)
        if key in self._cache:  # a repeat the gateway may have left out (dups=n)
            self._cache.move_to_end(key)
            return self._cache[key]
        for got, block in self._blocks:
            if got.digest == cid.digest:
                verify_block(cid, block)
                self._cache[key] = block
                if len(self._cache) > CACHE_BLOCKS:
                    self._cache.popitem(last=False)
                return block
            if bytes(got.digest) not in self._cache:  # a repeat we already verified (dups=y) is skipped
                raise IpfsVerificationError(
                    f"unexpected block {got} where {cid} was expected: wrong or substituted DAG"
                )
        raise IpfsIncompleteError(f"block {cid} is missing from the response")

    def finish(self) -> None:
        """Raise if the response carries blocks the walk did not need."""
        for got, _ in self._blocks:
            if bytes(got.digest) not in self._cache:
                raise IpfsVerificationError(f"unexpected extra block {got} in the response")


def _gateway_from(gateway: str | None) -> str:
    gateway = gateway or os.environ.get("IPFS_GATEWAY")
    if not gateway:
        raise InputError(
            "no IPFS gateway configured: set IPFS_GATEWAY (e.g. https://trustless-gateway.link) "
            "or pass a gateway; a local node's gateway is http://127.0.0.1:8080"
        )
    return gateway.rstrip("/")


class Gateway:
    """A trustless HTTP gateway (`?format=car`, `?format=raw`); every response is verified by the caller."""

    def __init__(
        self,
        gateway: str | None = None,
        *,
        session: requests.Session | None = None,
        attempts: int = 3,
        backoff_s: float = 0.5,
    ) -> None:
        self.url = _gateway_from(gateway)
        self.session = session or requests.Session()
        self.attempts = attempts
        self.backoff_s = backoff_s

    def _request(self, path: str, params: dict[str, str], accept: str) -> requests.Response:
        url = f"{self.url}/ipfs/{quote(path)}"
        headers = {"Accept": accept, "Accept-Encoding": "identity"}
        last = ""
        for attempt in range(1, self.attempts + 1):
            try:
                response = self.session.get(url, params=params, headers=headers, stream=True, timeout=TIMEOUT_S)
            except requests.RequestException as e:
                last = f"{type(e).__name__}: {e}"
            else:
                if response.status_code == 200:
                    return response
                last = f"HTTP {response.status_code}"
                response.close()
                if response.status_code not in _RETRY_STATUS:
                    raise InputError(f"IPFS gateway {self.url} refused /ipfs/{path}: {last}")
            if attempt < self.attempts:
                log.debug("IPFS gateway attempt %d for %s failed (%s); retrying", attempt, path, last)
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
        raise IpfsUnavailableError(
            f"IPFS content /ipfs/{path} not available from {self.url} after {self.attempts} attempts ({last})"
        )

    def car(self, root: CID, path: list[str], scope: str) -> CarBlocks:
        """A CAR for `root/path` with `dag-scope` = block | entity | all, as a verifying block source."""
        response = self._request(
            "/".join([str(root), *path]), {"format": "car", "dag-scope": scope, "dups": "y"}, CAR_MEDIA_TYPE
        )
        content_type = response.headers.get("Content-Type", "")
        if not content_type.startswith(CAR_MEDIA_TYPE):
            response.close()
            raise IpfsVerificationError(
                f"IPFS gateway {self.url} does not serve verifiable CAR responses (got {content_type or 'no type'})"
            )
        return CarBlocks(iter_car(_chunks(response)))


class KuboRpc:
    """A kubo-compatible node's RPC API (`/api/v0/block/get`), one verified block per request."""

    def __init__(self, api: str, *, session: requests.Session | None = None) -> None:
        self.url = api.rstrip("/")
        self.session = session or requests.Session()

    def get(self, cid: CID) -> bytes:
        try:
            response = self.session.post(
                f"{self.url}/api/v0/block/get",
                # The node's own deadline: a block it lacks is searched for until then, not forever.
                params={"arg": str(cid), "timeout": f"{TIMEOUT_S[1]:g}s"},
                timeout=(TIMEOUT_S[0], TIMEOUT_S[1] + 5),
            )
        except requests.RequestException as e:
            raise IpfsUnavailableError(f"IPFS node {self.url} unreachable: {e}") from e
        if response.status_code != 200:
            raise IpfsUnavailableError(f"IPFS node {self.url} has no block {cid} (HTTP {response.status_code})")
        verify_block(cid, response.content)
        return response.content


def _chunks(response: requests.Response) -> Iterator[bytes]:
    try:
        yield from response.iter_content(CHUNK_BYTES)
    except requests.RequestException as e:
        raise IpfsUnavailableError(f"IPFS download interrupted: {e}") from e
    finally:
        response.close()


# ---------------------------------------------------------------------------------------------- DAG walks


def resolve_path(blocks: BlockSource, root: CID, path: list[str]) -> Node:
    """Walk `path` from `root` through verified directory links; returns the terminal node."""
    node = decode_block(root, blocks.get(root))
    for depth, name in enumerate(path):
        if node.kind == UNIXFS_HAMT:
            raise IpfsVerificationError("HAMT-sharded IPFS directories are not supported yet")
        if node.kind != UNIXFS_DIRECTORY:
            raise IpfsNotFoundError(f"not a directory in IPFS: /ipfs/{root}/{'/'.join(path[: depth + 1])}")
        link = next((link for link in node.links if link.name == name), None)
        if link is None:
            raise IpfsNotFoundError(f"no such file in IPFS: /ipfs/{root}/{'/'.join(path[: depth + 1])}")
        node = decode_block(link.cid, blocks.get(link.cid))
    return node


def stream_file(blocks: BlockSource, node: Node, write: Callable[[bytes], object]) -> int:
    """Write the bytes of the file rooted at `node` in order (depth first), fetching each block from `blocks`."""
    if node.kind not in (-1, UNIXFS_FILE, UNIXFS_RAW):
        raise IsADirectoryError(f"not a file in IPFS: {node.cid}")
    total = 0
    stack: list[Node | CID] = [node]
    while stack:
        item = stack.pop()
        current = item if isinstance(item, Node) else decode_block(item, blocks.get(item))
        if current.kind not in (-1, UNIXFS_FILE, UNIXFS_RAW):
            raise IpfsVerificationError(f"block {current.cid} inside a file is not file data")
        if current.data:
            write(current.data)
            total += len(current.data)
        stack.extend(link.cid for link in reversed(current.links))
    if node.filesize is not None and node.kind != -1 and total != node.filesize:
        raise IpfsVerificationError(f"file {node.cid} has {total} bytes, its root says {node.filesize}")
    return total


def _check_name(name: str, where: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise IpfsVerificationError(f"unsafe entry name {name!r} in IPFS directory {where}")
    return name


# ---------------------------------------------------------------------------------------------- public API


def download(
    url: str, target: Path | str, *, gateway: str | None = None, rpc: str | None = None, max_bytes: int | None = None
) -> int:
    """Download the file at `ipfs://CID[/path]` to `target`, verified against the CID; returns its size.

    Streams through a temp file next to `target` and renames it into place only once every block checked
    out. `rpc` (a kubo API URL) is used instead of the gateway when given.

    Raises:
        IpfsVerificationError: tampered, substituted or incomplete content (permanent).
        IpfsNotFoundError: the path does not exist under the CID (permanent).
        IpfsUnavailableError: the gateway or node could not deliver it (retryable).
    """
    root, path = parse_ipfs_url(url)
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        blocks: BlockSource = KuboRpc(rpc) if rpc else Gateway(gateway).car(root, path, "entity")
    except IpfsUnavailableError:
        if path:
            _prove_absent(Gateway(gateway, attempts=1), root, path)
        raise
    try:
        with tmp.open("wb") as fh:
            node = resolve_path(blocks, root, path)
            size = stream_file(blocks, node, _capped(fh, max_bytes, url))
        if isinstance(blocks, CarBlocks):
            blocks.finish()
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return size


def _prove_absent(gateway: Gateway, root: CID, path: list[str]) -> None:
    """Raise IpfsNotFoundError when the verified parent directory has no such entry (gateways answer 404)."""
    try:
        blocks = gateway.car(root, path[:-1], "block")
        parent = resolve_path(blocks, root, path[:-1])
    except (IpfsUnavailableError, IpfsNotFoundError):
        return
    if parent.kind == UNIXFS_DIRECTORY and all(link.name != path[-1] for link in parent.links):
        raise IpfsNotFoundError(f"no such file in IPFS: /ipfs/{root}/{'/'.join(path)}")


def _capped(fh: BinaryIO, max_bytes: int | None, url: str) -> Callable[[bytes], object]:
    written = 0

    def write(data: bytes) -> None:
        nonlocal written
        written += len(data)
        if max_bytes is not None and written > max_bytes:
            raise InputError(f"{url} is over {max_bytes:,} bytes, larger than the size cap (--max-input-size)")
        fh.write(data)

    return write


def list_files(url: str, *, gateway: str | None = None, rpc: str | None = None) -> list[IpfsFile]:
    """Every file under `ipfs://CID[/path]` (recursively), with its path relative to that directory.

    A file URL gives one entry with path ''. Directory blocks come from verified CARs (`dag-scope=block`),
    one request per directory or dag-pb file node; raw-leaf files need no request. An entry whose own
    block fails verification is returned with `error` set (its siblings are unaffected).
    """
    root, path = parse_ipfs_url(url)
    source = KuboRpc(rpc) if rpc else None
    gw = None if rpc else Gateway(gateway)

    def fetch(cid: CID, sub: list[str]) -> Node:
        blocks = source if source is not None else gw.car(cid, sub, "block")  # type: ignore[union-attr]
        node = resolve_path(blocks, cid, sub)
        if isinstance(blocks, CarBlocks):
            blocks.finish()
        return node

    top = fetch(root, path)
    if top.kind != UNIXFS_DIRECTORY:
        if top.kind not in (-1, UNIXFS_FILE, UNIXFS_RAW):
            raise IpfsVerificationError(f"unsupported UnixFS node type {top.kind} at {url}")
        return [IpfsFile("", top.cid, top.filesize if top.kind != -1 else len(top.data))]
    found: list[IpfsFile] = []
    pending: list[tuple[str, Node]] = [("", top)]
    while pending:
        prefix, directory = pending.pop()
        for link in sorted(directory.links, key=lambda link: link.name):
            name = f"{prefix}{_check_name(link.name, url)}"
            if link.cid.codec.name == "raw":
                found.append(IpfsFile(name, link.cid, link.tsize))
                continue
            try:
                child = fetch(link.cid, [])
            except IpfsVerificationError as e:  # one bad entry fails that entry, not its siblings
                found.append(IpfsFile(name, link.cid, None, str(e)))
                continue
            if child.kind == UNIXFS_DIRECTORY:
                pending.append((f"{name}/", child))
            elif child.kind in (UNIXFS_FILE, UNIXFS_RAW):
                found.append(IpfsFile(name, link.cid, child.filesize))
            elif child.kind == UNIXFS_HAMT:
                raise IpfsVerificationError(f"HAMT-sharded IPFS directories are not supported yet: {name}")
    return sorted(found, key=lambda f: f.path)
