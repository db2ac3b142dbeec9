"""Verified IPFS reads against an in-test trustless gateway serving kubo-identical DAGs."""

from __future__ import annotations

import hashlib
import random
import threading
from pathlib import Path

import pytest
from multiformats import CID

from batchscribe import ipfs
from batchscribe.errors import (
    ContentNotFoundError,
    IncompleteError,
    InputError,
    UnavailableError,
    VerificationError,
    is_transient,
)
from tests.ipfs_fixtures import Dag, TrustlessGateway, car_bytes

HELLO = b"hello ipfs\n"
BIG = random.Random(0).randbytes(3 * 2**20 + 12345)  # 13 chunks: a multi-block file
GOLDEN = {
    0: (
        "QmSoASxb8aNVGk3pNWpZvXEZTQKxjGeu9bvpYHuo5bP1VJ",
        "QmReTXsJWC27iWc6rwwitmGyn9HKybFKs2EXtTeZE9PZRH",
        "QmYECNso9RSH41PSJTo1YWoaEiNWvQyg3dNzSpJeXUT2Zq",
    ),
    1: (
        "bafkreid3yvacrpfyy4vl5imho46qghn5c3clq5vxhrqqvpzfxkdjm3i4g4",
        "bafybeig327icsevk32htkb7jxejjvo5alfiysr63sngpgkwnkgb2b2rs7m",
        "bafybeiahdbreyz4pnphwk2onknufliekrdh26lcl6o2hyqoauhdvp6q5be",
    ),
}
NESTED = {
    "a": {"talk.mp3": b"A" * 1000, "deeper": {"x.wav": BIG[:300_000]}},
    "b": {"talk.mp3": b"B" * 10},
    "r.txt": HELLO,
}


@pytest.mark.parametrize("version", [0, 1])
def test_importer_matches_kubo_golden_cids(version: int) -> None:
    dag = Dag(version)
    hello, big = dag.add_file(HELLO)[0], dag.add_file(BIG)[0]
    root = dag.add_dir({"Apollo_11_moonwalk_montage_720p.mp4": BIG, "readme.txt": HELLO})[0]
    assert (str(hello), str(big), str(root)) == GOLDEN[version]


@pytest.fixture(params=[0, 1], ids=["cidv0", "cidv1"])
def served(request: pytest.FixtureRequest):
    dag = Dag(request.param)
    root = dag.add_dir({"Apollo_11_moonwalk_montage_720p.mp4": BIG, "readme.txt": HELLO, "nested": NESTED})[0]
    with TrustlessGateway(dag) as gateway:
        yield gateway, dag, root


def test_verified_download_of_multi_block_and_single_block_files(served, tmp_path: Path) -> None:
    gateway, dag, root = served
    big = tmp_path / "big.mp4"
    assert ipfs.download(f"ipfs://{root}/Apollo_11_moonwalk_montage_720p.mp4", big, gateway=gateway.url) == len(BIG)
    assert hashlib.sha256(big.read_bytes()).digest() == hashlib.sha256(BIG).digest()
    file_cid = dag.add_file(BIG)[0]
    assert ipfs.download(f"ipfs://{file_cid}", tmp_path / "direct", gateway=gateway.url) == len(BIG)
    ipfs.download(f"ipfs://{root}/readme.txt", tmp_path / "r.txt", gateway=gateway.url)
    assert (tmp_path / "r.txt").read_bytes() == HELLO
    assert not list(tmp_path.glob(".*.part"))


def test_directory_listing_mirrors_nested_paths(served) -> None:
    gateway, _, root = served
    files = ipfs.list_files(f"ipfs://{root}", gateway=gateway.url)
    assert [(f.path, f.size) for f in files] == [
        ("Apollo_11_moonwalk_montage_720p.mp4", len(BIG)),
        ("nested/a/deeper/x.wav", 300_000),
        ("nested/a/talk.mp3", 1000),
        ("nested/b/talk.mp3", 10),
        ("nested/r.txt", len(HELLO)),
        ("readme.txt", len(HELLO)),
    ]
    sub = ipfs.list_files(f"ipfs://{root}/nested/a", gateway=gateway.url)
    assert [f.path for f in sub] == ["deeper/x.wav", "talk.mp3"]
    assert [f.path for f in ipfs.list_files(f"ipfs://{root}/readme.txt", gateway=gateway.url)] == [""]


def test_tampered_leaf_block_is_rejected_and_nothing_is_left_behind(served, tmp_path: Path) -> None:
    gateway, dag, root = served
    leaf = list(dag.blocks)[5]  # a middle chunk of the big file
    gateway.controls.tamper.add(leaf)
    target = tmp_path / "out.mp4"
    with pytest.raises(VerificationError, match="does not match its hash"):
        ipfs.download(f"ipfs://{root}/Apollo_11_moonwalk_montage_720p.mp4", target, gateway=gateway.url)
    assert not target.exists() and not list(tmp_path.iterdir())


def test_tampered_directory_block_is_rejected(served) -> None:
    gateway, _, root = served
    gateway.controls.tamper.add(str(root))
    with pytest.raises(VerificationError):
        ipfs.list_files(f"ipfs://{root}", gateway=gateway.url)


def test_substituted_file_with_lying_roots_header_is_rejected(served, tmp_path: Path) -> None:
    gateway, dag, root = served
    other = Dag(dag.version)
    other_cid = other.add_file(b"not the file you asked for" * 100)[0]
    gateway.controls.substitute["readme.txt"] = other
    gateway.controls.lying_roots = f"{root},{other_cid}"
    with pytest.raises(VerificationError, match="unexpected block"):
        ipfs.download(f"ipfs://{root}/readme.txt", tmp_path / "r.txt", gateway=gateway.url)


def test_wrong_root_is_rejected(tmp_path: Path) -> None:
    # Asked for one CID, the gateway answers with a valid CAR of another DAG (every block hashes fine).
    dag = Dag(1)
    asked = dag.add_file(b"the real content")[0]
    decoy = Dag(1)
    decoy.add_file(b"some other content")
    with TrustlessGateway(dag) as gateway:
        gateway.controls.substitute[""] = decoy
        with pytest.raises(VerificationError, match="unexpected block"):
            ipfs.download(f"ipfs://{asked}", tmp_path / "f", gateway=gateway.url)
        gateway.controls.substitute.clear()
        gateway.blocks[bytes(asked.digest)] = list(decoy.blocks.values())[0]  # same CID, other bytes
        with pytest.raises(VerificationError, match="does not match its hash"):
            ipfs.download(f"ipfs://{asked}", tmp_path / "f", gateway=gateway.url)


def test_missing_cid_fails_clearly_and_is_left_to_the_task_to_retry(tmp_path: Path) -> None:
    dag = Dag(1)
    cid = dag.add_file(b"never served")[0]
    with TrustlessGateway() as gateway:
        with pytest.raises(UnavailableError, match="not available from") as info:
            ipfs.Gateway(gateway.url).car(cid, [], "entity")
        assert len(gateway.controls.requests) == 1  # no backoff loop of its own under the retrying task
    assert is_transient(info.value)  # Prefect's stage_input retries it (bounded, with backoff)


def test_missing_path_and_bad_urls_are_permanent_errors(served, tmp_path: Path) -> None:
    gateway, _, root = served
    with pytest.raises(ContentNotFoundError, match="no such file"):
        ipfs.download(f"ipfs://{root}/nope.mp3", tmp_path / "x", gateway=gateway.url)
    with pytest.raises(InputError, match="not a valid IPFS CID"):
        ipfs.parse_ipfs_url("ipfs://not-a-cid/x")
    with pytest.raises(InputError, match=r"'\.\.'"):
        ipfs.parse_ipfs_url(f"ipfs://{root}/../x")
    with pytest.raises(IsADirectoryError):
        ipfs.download(f"ipfs://{root}/nested", tmp_path / "x", gateway=gateway.url)


def test_size_cap_and_missing_gateway(served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gateway, _, root = served
    with pytest.raises(InputError, match="size cap"):
        ipfs.download(
            f"ipfs://{root}/Apollo_11_moonwalk_montage_720p.mp4", tmp_path / "x", gateway=gateway.url, max_bytes=1000
        )
    monkeypatch.delenv("IPFS_GATEWAY", raising=False)
    with pytest.raises(InputError, match="IPFS_GATEWAY"):
        ipfs.download(f"ipfs://{root}/readme.txt", tmp_path / "x")
    monkeypatch.setenv("IPFS_GATEWAY", gateway.url)
    ipfs.download(f"ipfs://{root}/readme.txt", tmp_path / "x")
    assert (tmp_path / "x").read_bytes() == HELLO


def test_gateway_without_trustless_responses_is_refused(tmp_path: Path) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class PlainBytes(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - js-ipfs answers ?format=car with the plain file
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"bytes")

    server = ThreadingHTTPServer(("127.0.0.1", 0), PlainBytes)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(VerificationError, match="verifiable CAR"):
            ipfs.download(
                f"ipfs://{GOLDEN[1][0]}", tmp_path / "x", gateway=f"http://127.0.0.1:{server.server_address[1]}"
            )
    finally:
        server.shutdown()
        server.server_close()


def test_unsafe_directory_entry_names_are_rejected(tmp_path: Path) -> None:
    dag = Dag(1)
    root = dag.add_dir({"..": {"evil.mp3": b"x"}, "ok.mp3": b"y"})[0]
    with TrustlessGateway(dag) as gateway, pytest.raises(VerificationError, match="unsafe entry name"):
        ipfs.list_files(f"ipfs://{root}", gateway=gateway.url)


def test_kubo_rpc_source_is_verified_too(tmp_path: Path) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs, urlsplit

    dag = Dag(0)
    root = dag.add_dir({"talks": {"big.mp4": BIG}, "readme.txt": HELLO})[0]
    blocks = {bytes(cid.digest): block for cid, block in dag.blocks.values()}
    tampered: set[bytes] = set()

    class Rpc(BaseHTTPRequestHandler):  # the part of kubo's RPC the reader uses: POST /api/v0/block/get?arg=CID
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            url = urlsplit(self.path)
            digest = bytes(CID.decode(parse_qs(url.query)["arg"][0]).digest)
            if url.path != "/api/v0/block/get" or digest not in blocks:
                return self.send_error(500)
            body = blocks[digest] + (b"!" if digest in tampered else b"")
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Rpc)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert [f.path for f in ipfs.list_files(f"ipfs://{root}", rpc=api)] == ["readme.txt", "talks/big.mp4"]
        assert ipfs.download(f"ipfs://{root}/talks/big.mp4", tmp_path / "b", rpc=api) == len(BIG)
        assert (tmp_path / "b").read_bytes() == BIG
        tampered.add(bytes(list(dag.blocks.values())[3][0].digest))
        with pytest.raises(VerificationError):
            ipfs.download(f"ipfs://{root}/talks/big.mp4", tmp_path / "c", rpc=api)
    finally:
        server.shutdown()
        server.server_close()


def test_truncated_or_incomplete_car_is_retryable_and_extra_blocks_are_rejected(tmp_path: Path) -> None:
    dag = Dag(1)
    root = dag.add_file(BIG)[0]
    blocks = [dag.blocks[str(root)], *(v for k, v in dag.blocks.items() if k != str(root))]
    car = car_bytes([root], blocks)

    def read(data: bytes) -> bytes:
        source = ipfs.CarBlocks(ipfs.iter_car(iter([data[i : i + 4096] for i in range(0, len(data), 4096)])))
        out = bytearray()
        ipfs.stream_file(source, ipfs.resolve_path(source, root, []), out.extend)
        source.finish()
        return bytes(out)

    assert read(car) == BIG
    for cut in (car[:-1000], car[: len(car) // 2], car[: -len(blocks[-1][1]) - 40]):
        with pytest.raises(IncompleteError) as info:
            read(cut)
        assert is_transient(info.value)
    extra = car + car_bytes([root], [(Dag(1).add_file(b"x")[0], b"x")])[-(1 + 36 + 1) :]
    with pytest.raises(VerificationError, match="extra block"):
        read(extra)
