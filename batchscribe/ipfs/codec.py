"""IPFS content, decoded and verified: CARv1 streams, dag-pb/UnixFS blocks, and block hashes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from multiformats import CID

from batchscribe.errors import IncompleteError, VerificationError

MAX_BLOCK_BYTES = 4 << 20  # kubo's hard limit is 4 MiB (2 MiB by default)
MAX_CAR_HEADER_BYTES = 64 << 10

# UnixFS node types (unixfs.proto).
UNIXFS_RAW, UNIXFS_DIRECTORY, UNIXFS_FILE, UNIXFS_METADATA, UNIXFS_SYMLINK, UNIXFS_HAMT = range(6)


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
        raise VerificationError(f"unsupported IPLD codec {cid.codec.name} for {cid}")
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
        raise VerificationError(f"malformed dag-pb block {cid}: {e}") from e
    return Node(cid, kind, data, tuple(links), filesize)


def iter_car(chunks: Iterator[bytes]) -> Iterator[tuple[CID, bytes]]:
    """(CID, block) pairs of a CARv1 byte stream; the header (and its roots) is skipped, never trusted."""
    reader = _StreamReader(chunks)
    header_len = reader.varint()
    if header_len is None:
        raise VerificationError("empty CAR response")
    if header_len > MAX_CAR_HEADER_BYTES:
        raise VerificationError(f"CAR header of {header_len} bytes is implausibly large")
    reader.exact(header_len)
    while (size := reader.varint()) is not None:
        if size > MAX_BLOCK_BYTES + 128:
            raise VerificationError(f"CAR section of {size} bytes exceeds the block size limit")
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
            raise VerificationError(f"malformed CID in CAR section: {e}") from e


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
            raise IncompleteError("CAR response truncated inside a length prefix") from e
        del self._buf[:pos]
        return value

    def exact(self, n: int) -> bytes:
        if not self._fill(n):
            raise IncompleteError("CAR response truncated: blocks are missing")
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out


def verify_block(cid: CID, block: bytes) -> None:
    """Raise VerificationError unless `block` hashes to `cid`."""
    if cid.hashfun.name == "identity":
        ok = cid.raw_digest == block
    else:
        ok = cid.hashfun.digest(block) == cid.digest
    if not ok:
        raise VerificationError(f"block {cid} does not match its hash: tampered or corrupted content")
