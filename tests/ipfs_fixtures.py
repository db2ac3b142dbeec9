"""Test-only IPFS: a kubo-identical UnixFS importer and an in-process trustless gateway on 127.0.0.1.

The importer follows kubo's defaults (fixed 262144-byte chunks, balanced DAG, at most 174 links per node;
CIDv0 with dag-pb leaves, or CIDv1 with raw leaves; directories with links sorted by name) and is pinned by
golden CIDs that kubo and js-ipfs produce for the same content.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from multiformats import CID, multihash

from batchscribe.ipfs import decode_block

CHUNK = 262144
MAX_LINKS = 174


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _bytes_field(number: int, value: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def _int_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _unixfs(kind: int, data: bytes = b"", filesize: int | None = None, blocksizes: tuple[int, ...] = ()) -> bytes:
    out = _int_field(1, kind)
    if data:
        out += _bytes_field(2, data)
    if filesize is not None:
        out += _int_field(3, filesize)
    return out + b"".join(_int_field(4, size) for size in blocksizes)


def _pbnode(links: list[tuple[CID, str, int]], unixfs: bytes) -> bytes:
    out = b"".join(
        _bytes_field(2, _bytes_field(1, bytes(cid)) + _bytes_field(2, name.encode()) + _int_field(3, tsize))
        for cid, name, tsize in links
    )
    return out + _bytes_field(1, unixfs)


@dataclass
class Dag:
    """Blocks by CID string, in the order they were made."""

    version: int = 0
    blocks: dict[str, tuple[CID, bytes]] = field(default_factory=dict)

    def _put(self, codec: str, block: bytes) -> CID:
        mh = multihash.digest(block, "sha2-256")
        cid = CID("base58btc", 0, "dag-pb", mh) if self.version == 0 else CID("base32", 1, codec, mh)
        self.blocks[str(cid)] = (cid, block)
        return cid

    def add_file(self, data: bytes) -> tuple[CID, int]:
        """Import file bytes; returns (root CID, cumulative size for a parent's link Tsize)."""
        chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""]
        # (cid, tsize, filesize) per node at the current level
        level: list[tuple[CID, int, int]] = []
        for chunk in chunks:
            if self.version == 1:
                level.append((self._put("raw", chunk), len(chunk), len(chunk)))
            else:
                block = _pbnode([], _unixfs(2, chunk, len(chunk)))
                level.append((self._put("dag-pb", block), len(block), len(chunk)))
        while len(level) > 1:
            parents = []
            for i in range(0, len(level), MAX_LINKS):
                group = level[i : i + MAX_LINKS]
                sizes = tuple(size for _, _, size in group)
                block = _pbnode([(cid, "", tsize) for cid, tsize, _ in group], _unixfs(2, b"", sum(sizes), sizes))
                cid = self._put("dag-pb", block)
                parents.append((cid, len(block) + sum(t for _, t, _ in group), sum(sizes)))
            level = parents
        return level[0][0], level[0][1]

    def add_dir(self, entries: dict[str, bytes | dict]) -> tuple[CID, int]:
        """Import a directory: names map to file bytes or to nested dicts."""
        links = []
        for name in sorted(entries, key=lambda n: n.encode()):
            value = entries[name]
            cid, tsize = self.add_dir(value) if isinstance(value, dict) else self.add_file(value)
            links.append((cid, name, tsize))
        block = _pbnode(links, _unixfs(1))
        return self._put("dag-pb", block), len(block) + sum(t for _, _, t in links)

    def get(self, cid: CID | str) -> bytes:
        return self.blocks[str(CID.decode(str(cid)) if isinstance(cid, CID) else cid)][1]


def car_bytes(roots: list[CID], blocks: list[tuple[CID, bytes]]) -> bytes:
    """A CARv1: dag-cbor header {"roots": [...], "version": 1}, then varint-framed CID + block sections."""
    header = b"\xa2\x65roots" + bytes([0x80 + len(roots)])
    for root in roots:
        raw = b"\x00" + bytes(root)
        header += b"\xd8\x2a\x58" + bytes([len(raw)]) + raw
    header += b"\x67version\x01"
    out = _varint(len(header)) + header
    for cid, block in blocks:
        section = bytes(cid) + block
        out += _varint(len(section)) + section
    return out


# ---------------------------------------------------------------------------------------------- gateway


@dataclass
class GatewayControls:
    """Switches the tests flip to make the gateway misbehave."""

    tamper: set[str] = field(default_factory=set)  # CIDs whose block is served with a flipped byte
    missing: set[str] = field(default_factory=set)  # root CIDs answered with 404
    substitute: dict[str, Dag] = field(default_factory=dict)  # path -> serve this other DAG's root instead
    lying_roots: str | None = None  # an X-Ipfs-Roots header to send
    requests: list[str] = field(default_factory=list)  # request paths seen


class TrustlessGateway:
    """A threaded HTTP gateway on 127.0.0.1 serving `dags` by `?format=car` (block/entity/all) and `?format=raw`."""

    def __init__(self, *dags: Dag) -> None:
        self.blocks: dict[bytes, tuple[CID, bytes]] = {}
        for dag in dags:
            self.add(dag)
        self.controls = GatewayControls()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                gateway._handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add(self, dag: Dag) -> None:
        for cid, block in dag.blocks.values():
            self.blocks[bytes(cid.digest)] = (cid, block)

    def __enter__(self) -> TrustlessGateway:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _block(self, cid: CID) -> bytes:
        block = self.blocks[bytes(cid.digest)][1]
        if any(CID.decode(t).digest == cid.digest for t in self.controls.tamper):
            block = block[:-1] + bytes([block[-1] ^ 1])
        return block

    def _walk(self, cid: CID, path: list[str]) -> tuple[list[CID], CID]:
        """Unverified path resolution: (CIDs along the path before the terminal, the terminal CID)."""
        along = []
        for name in path:
            node = decode_block(cid, self.blocks[bytes(cid.digest)][1])
            along.append(cid)
            cid = next(link.cid for link in node.links if link.name == name)
        return along, cid

    def _dfs(self, cid: CID, scope: str) -> Iterator[CID]:
        yield cid
        if scope == "block":
            return
        node = decode_block(cid, self.blocks[bytes(cid.digest)][1])
        if scope == "entity" and node.kind == 1:
            return
        for link in node.links:
            yield from self._dfs(link.cid, scope)

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        url = urlsplit(req.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.controls.requests.append(req.path)
        parts = [unquote(p) for p in url.path.split("/") if p]
        if len(parts) < 2 or parts[0] != "ipfs":
            return req.send_error(400)
        root_text, path = parts[1], parts[2:]
        if root_text in self.controls.missing:
            return req.send_error(404)
        try:
            root = CID.decode(root_text)
            along, terminal = self._walk(root, path)
            if "/".join(path) in self.controls.substitute:
                other = self.controls.substitute["/".join(path)]
                terminal = list(other.blocks.values())[-1][0]
                self.add(other)
        except (KeyError, StopIteration):
            return req.send_error(404)
        fmt = query.get("format") or ("car" if "vnd.ipld.car" in req.headers.get("Accept", "") else "")
        if fmt == "raw":
            body, ctype = self._block(root), "application/vnd.ipld.raw"
        elif fmt == "car":
            cids = along + list(self._dfs(terminal, query.get("dag-scope", "all")))
            body = car_bytes([root], [(cid, self._block(cid)) for cid in cids])
            ctype = "application/vnd.ipld.car; version=1; order=dfs; dups=y"
        else:
            return req.send_error(406)
        req.send_response(200)
        req.send_header("Content-Type", ctype)
        req.send_header("Content-Length", str(len(body)))
        req.send_header("X-Ipfs-Roots", self.controls.lying_roots or ",".join(str(c) for c in [*along, terminal]))
        req.end_headers()
        req.wfile.write(body)
