"""IPFS files by URL: walk the verified DAG from the requested CID, list a directory, stream a file to disk.

The requested CID is the only trust anchor. Every block's hash is checked against the CID that names it,
and every block must be the one the DAG walk expects next (from the root, through the path's directory
links, down a file's links in order), so a gateway cannot substitute, reorder, drop or tamper with
content, and its `X-Ipfs-Roots` header is never read. File bytes stream to disk; memory holds the stack of
pending CIDs and a small cache of recent blocks (for gateways that de-duplicate).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from multiformats import CID

from batchscribe import urls
from batchscribe.atomic import atomic_file
from batchscribe.errors import ContentNotFoundError, InputError, UnavailableError, VerificationError
from batchscribe.ipfs.codec import UNIXFS_DIRECTORY, UNIXFS_FILE, UNIXFS_HAMT, UNIXFS_RAW, Node, decode_block
from batchscribe.ipfs.transport import BlockSource, CarBlocks, Gateway, KuboRpc


@dataclass(frozen=True)
class IpfsFile:
    """A file found under a CID: its path inside the root (posix, '' for the root itself)."""

    path: str
    cid: CID
    size: int | None
    error: str = ""  # set when this entry's own block failed verification: the file cannot be trusted


def parse_ipfs_url(url: str) -> tuple[CID, list[str]]:
    """`ipfs://CID/a/b` (or `/ipfs/CID/a/b`) -> (CID, ["a", "b"]). Raises InputError for a bad CID or path."""
    scheme, authority, rest = urls.split(url)
    head, _, path = (f"{authority}{rest}" if scheme else url.removeprefix("/ipfs/")).strip("/").partition("/")
    try:
        root = CID.decode(head)
    except Exception as e:  # noqa: BLE001 - multiformats raises several types
        raise InputError(f"not a valid IPFS CID: {head!r} in {url}") from e
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise InputError(f"'.' and '..' are not allowed in an IPFS path: {url}")
    return root, parts


def resolve_path(blocks: BlockSource, root: CID, path: list[str]) -> Node:
    """Walk `path` from `root` through verified directory links; returns the terminal node."""
    node = decode_block(root, blocks.get(root))
    for depth, name in enumerate(path):
        if node.kind == UNIXFS_HAMT:
            raise VerificationError("HAMT-sharded IPFS directories are not supported yet")
        if node.kind != UNIXFS_DIRECTORY:
            raise ContentNotFoundError(f"not a directory in IPFS: /ipfs/{root}/{'/'.join(path[: depth + 1])}")
        link = next((link for link in node.links if link.name == name), None)
        if link is None:
            raise ContentNotFoundError(f"no such file in IPFS: /ipfs/{root}/{'/'.join(path[: depth + 1])}")
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
            raise VerificationError(f"block {current.cid} inside a file is not file data")
        if current.data:
            write(current.data)
            total += len(current.data)
        stack.extend(link.cid for link in reversed(current.links))
    if node.filesize is not None and node.kind != -1 and total != node.filesize:
        raise VerificationError(f"file {node.cid} has {total} bytes, its root says {node.filesize}")
    return total


def _check_name(name: str, where: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise VerificationError(f"unsafe entry name {name!r} in IPFS directory {where}")
    return name


def download(
    url: str, target: Path | str, *, gateway: str | None = None, rpc: str | None = None, max_bytes: int | None = None
) -> int:
    """Download the file at `ipfs://CID[/path]` to `target`, verified against the CID; returns its size.

    Streams through a temp file next to `target` and renames it into place only once every block checked
    out. `rpc` (a kubo API URL) is used instead of the gateway when given.

    Raises:
        VerificationError: tampered, substituted or incomplete content (permanent).
        ContentNotFoundError: the path does not exist under the CID (permanent).
        UnavailableError: the gateway or node could not deliver it (retryable).
    """
    root, path = parse_ipfs_url(url)
    try:
        blocks: BlockSource = KuboRpc(rpc) if rpc else Gateway(gateway).car(root, path, "entity")
    except UnavailableError:
        if path:
            _prove_absent(Gateway(gateway), root, path)
        raise
    with atomic_file(Path(target), durable=False) as fh:  # in place only once every block checked out
        node = resolve_path(blocks, root, path)
        size = stream_file(blocks, node, _capped(fh, max_bytes, url))
        if isinstance(blocks, CarBlocks):
            blocks.finish()
    return size


def _prove_absent(gateway: Gateway, root: CID, path: list[str]) -> None:
    """Raise ContentNotFoundError when the verified parent directory has no such entry (gateways answer 404)."""
    try:
        blocks = gateway.car(root, path[:-1], "block")
        parent = resolve_path(blocks, root, path[:-1])
    except (UnavailableError, ContentNotFoundError):
        return
    if parent.kind == UNIXFS_DIRECTORY and all(link.name != path[-1] for link in parent.links):
        raise ContentNotFoundError(f"no such file in IPFS: /ipfs/{root}/{'/'.join(path)}")


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
            raise VerificationError(f"unsupported UnixFS node type {top.kind} at {url}")
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
            except VerificationError as e:  # one bad entry fails that entry, not its siblings
                found.append(IpfsFile(name, link.cid, None, str(e)))
                continue
            if child.kind == UNIXFS_DIRECTORY:
                pending.append((f"{name}/", child))
            elif child.kind in (UNIXFS_FILE, UNIXFS_RAW):
                found.append(IpfsFile(name, link.cid, child.filesize))
            elif child.kind == UNIXFS_HAMT:
                raise VerificationError(f"HAMT-sharded IPFS directories are not supported yet: {name}")
    return sorted(found, key=lambda f: f.path)
