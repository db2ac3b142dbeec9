"""Opt-in: the verifying IPFS reader against a real local node (js-ipfs 0.66.1, offline, 127.0.0.1 only).

Run with `make test-ipfs` (`pytest -m ipfs_node tests/integration`); the default run deselects the
`ipfs_node` marker. The first run installs js-ipfs from the npm registry into
`~/.cache/batchscribe-test/js-ipfs` (about 4 minutes and 290 MB; `BATCHSCRIBE_JS_IPFS_DIR` moves it), later
runs reuse it. js-ipfs installs from npm; kubo does not install offline.

Checks: (1) `batchscribe.ipfs` over the node's RPC (`block/get`, every block verified) downloads
byte-identical files for CIDv0 and CIDv1 and lists a directory with nested folders; (2) the node's CIDs and
blocks equal those of the kubo-identical importer in tests/ipfs_fixtures.py for the same bytes; (3) the
node's gateway has no trustless (CAR) responses, so the gateway path refuses it with a clear error.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from batchscribe import ipfs
from batchscribe.errors import ContentNotFoundError, UnavailableError, VerificationError
from batchscribe.inputs import expand_url
from tests.ipfs_fixtures import CHUNK, MAX_LINKS, Dag

pytestmark = pytest.mark.ipfs_node

ROOT = Path(__file__).resolve().parents[2]
SPEECH = ROOT / "tests" / "fixtures" / "speech" / "en2.mp3"
JS_IPFS_VERSION = "0.66.1"
PACKAGE_JSON = {
    "name": "batchscribe-test-js-ipfs",
    "version": "1.0.0",
    "private": True,
    "dependencies": {"ipfs": JS_IPFS_VERSION},
    # Caret ranges pull mortice 3.3, whose it-queue needs Promise.withResolvers (Node 22+): on Node 20
    # `jsipfs init` fails with "Promise.withResolvers is not a function".
    "overrides": {"mortice": "3.0.6"},
}
NPM_TIMEOUT_S = 1200
START_TIMEOUT_S = 120  # ~3 s on an idle machine


def _install_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "batchscribe-test" / "js-ipfs"
    return Path(os.environ.get("BATCHSCRIBE_JS_IPFS_DIR") or default)


@pytest.fixture(scope="session")
def jsipfs() -> Path:
    """The `jsipfs` CLI, installed with npm into a cache folder once and reused while its package.json matches."""
    home = _install_dir()
    cli = home / "node_modules" / ".bin" / "jsipfs"
    stamp = home / ".batchscribe-installed"  # written last: a half-finished install is never reused
    wanted = json.dumps(PACKAGE_JSON, sort_keys=True)
    if cli.exists() and stamp.exists() and stamp.read_text() == wanted:
        return cli
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.skip("js-ipfs needs Node.js and npm on PATH")
    work = home.with_name(f"{home.name}.partial-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "package.json").write_text(json.dumps(PACKAGE_JSON, indent=2) + "\n")
    result = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=NPM_TIMEOUT_S,
    )
    if result.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        pytest.fail(f"npm install ipfs@{JS_IPFS_VERSION} failed:\n{(result.stdout + result.stderr)[-3000:]}")
    (work / stamp.name).write_text(wanted)
    shutil.rmtree(home, ignore_errors=True)
    work.rename(home)  # .bin links are relative, so the tree moves as is
    return cli


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class JsIpfsNode:
    api: str
    gateway: str
    session: requests.Session

    def rpc(self, command: str, *, stream: bool = False, **kwargs: object) -> requests.Response:
        response = self.session.post(f"{self.api}/api/v0/{command}", stream=stream, timeout=120, **kwargs)
        assert response.status_code == 200, f"{command}: HTTP {response.status_code} {response.text[:500]}"
        return response

    def add(self, entries: dict[str, bytes | None], *, version: int) -> dict[str, str]:
        """`/api/v0/add` of files (bytes) and directories (None) by path; returns path -> CID as the node prints it."""
        params = {"pin": "true"}
        if version == 1:
            params.update({"cid-version": "1", "cid-base": "base32"})  # else v1 CIDs come back as base58btc
        # js-ipfs answers 500 "No content-type in multipart part" unless every part has one.
        parts = [
            ("file", (quote(path, safe=""), b"", "application/x-directory"))
            if data is None
            else ("file", (quote(path, safe=""), data, "application/octet-stream"))
            for path, data in entries.items()
        ]
        lines = self.rpc("add", params=params, files=parts).text.splitlines()
        return {entry["Name"]: entry["Hash"] for entry in map(json.loads, lines)}


@pytest.fixture(scope="module")
def node(jsipfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[JsIpfsNode]:
    """An offline js-ipfs daemon with a fresh `--profile test` repo, API and gateway on free 127.0.0.1 ports."""
    repo = tmp_path_factory.mktemp("js-ipfs-repo")
    env = {**os.environ, "IPFS_PATH": str(repo)}
    init = subprocess.run(
        [str(jsipfs), "init", "--profile", "test"], env=env, capture_output=True, text=True, timeout=300
    )
    assert init.returncode == 0, f"jsipfs init failed:\n{(init.stdout + init.stderr)[-3000:]}"
    api_port, gateway_port, rpc_port = _free_ports(3)
    config_file = repo / "config"
    config = json.loads(config_file.read_text())
    config["Addresses"].update(
        API=f"/ip4/127.0.0.1/tcp/{api_port}",
        Gateway=f"/ip4/127.0.0.1/tcp/{gateway_port}",
        RPC=f"/ip4/127.0.0.1/tcp/{rpc_port}",
        Swarm=[],  # libp2p 0.42 under mixed multiaddr versions rejects every listen address; [] = dial-only
    )
    config_file.write_text(json.dumps(config, indent=2))
    log_file = repo.parent / "daemon.log"
    with log_file.open("wb") as log:
        daemon = subprocess.Popen(
            [str(jsipfs), "daemon", "--offline", "--enable-preload=false"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    session = requests.Session()
    try:
        node = JsIpfsNode(f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{gateway_port}", session)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert daemon.poll() is None, f"jsipfs daemon exited:\n{log_file.read_text()[-3000:]}"
            try:
                version = session.post(f"{node.api}/api/v0/version", timeout=5)
                if version.status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, f"no RPC in {START_TIMEOUT_S} s:\n{log_file.read_text()[-3000:]}"
            time.sleep(0.25)
        assert version.json()["Version"] == "0.18.1"  # js-ipfs 0.66.1 = ipfs-core 0.18.1
        yield node
    finally:
        session.close()
        daemon.terminate()
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


# ---------------------------------------------------------------------------------------------- content


def _long_payload() -> bytes:
    """MAX_LINKS chunks + 1 byte, from a sha256 counter: the root needs a second level of parents."""
    size = MAX_LINKS * CHUNK + 1
    return b"".join(hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(size // 32 + 1))[:size]


def _flatten(tree: dict, prefix: str) -> dict[str, bytes | None]:
    """Directory entries by path, parents first, as an `add` multipart body lists them."""
    out: dict[str, bytes | None] = {prefix: None}
    for name, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}/{name}"))
        else:
            out[f"{prefix}/{name}"] = value
    return out


def _import(dag: Dag, tree: dict, prefix: str) -> dict[str, str]:
    """Path -> CID from the kubo-identical importer, for every entry of `tree` and the tree itself."""
    out: dict[str, str] = {}
    for name, value in tree.items():
        if isinstance(value, dict):
            out.update(_import(dag, value, f"{prefix}/{name}"))
        else:
            out[f"{prefix}/{name}"] = str(dag.add_file(value)[0])
    out[prefix] = str(dag.add_dir(tree)[0])
    return out


@dataclass
class Added:
    version: int
    files: dict[str, bytes]  # path inside the root -> bytes
    node_cids: dict[str, str]  # what the node printed, path ("upload/...") -> CID
    clip_cid: str
    dag: Dag  # the importer's blocks for the same tree
    importer_cids: dict[str, str]  # the importer's CIDs, keyed like node_cids

    @property
    def root(self) -> str:
        return self.node_cids["upload"]


@pytest.fixture(scope="module")
def tree() -> dict:
    speech = SPEECH.read_bytes()
    return {
        "en2.mp3": speech,
        "readme.txt": b"hello ipfs\n",
        "talks": {
            "en2 copy.mp3": speech,
            "deeper": {"long.bin": _long_payload(), "empty.txt": b""},
        },
    }


@pytest.fixture(scope="module", params=[0, 1], ids=["cidv0", "cidv1"])
def added(request: pytest.FixtureRequest, node: JsIpfsNode, tree: dict) -> Added:
    version = request.param
    clip = node.add({"en2.mp3": SPEECH.read_bytes()}, version=version)
    entries = _flatten(tree, "upload")
    files = {path.removeprefix("upload/"): data for path, data in entries.items() if data is not None}
    dag = Dag(version)
    importer_cids = _import(dag, tree, "upload")
    return Added(version, files, node.add(entries, version=version), clip["en2.mp3"], dag, importer_cids)


# ---------------------------------------------------------------------------------------------- tests


def test_node_cids_and_blocks_equal_the_importers(added: Added, node: JsIpfsNode) -> None:
    assert added.node_cids == added.importer_cids
    assert added.clip_cid == str(Dag(added.version).add_file(SPEECH.read_bytes())[0])
    prefix = "Qm" if added.version == 0 else "bafy"
    assert added.root.startswith(prefix) and added.clip_cid.startswith("Qm" if added.version == 0 else "bafk")
    # Not only the root: the node's DAG is block for block the importer's (dag/export streams a CAR of it).
    response = node.rpc("dag/export", params={"arg": added.root}, stream=True)
    exported = {bytes(cid): block for cid, block in ipfs.iter_car(response.iter_content(1 << 20))}
    assert exported == {bytes(cid): block for cid, block in added.dag.blocks.values()}


def test_verified_rpc_download_is_byte_identical(added: Added, node: JsIpfsNode, tmp_path: Path) -> None:
    speech = SPEECH.read_bytes()
    assert ipfs.download(f"ipfs://{added.clip_cid}", tmp_path / "clip.mp3", rpc=node.api) == len(speech)
    assert (tmp_path / "clip.mp3").read_bytes() == speech
    for i, (path, data) in enumerate(added.files.items()):
        target = tmp_path / f"{i}.out"
        assert ipfs.download(f"ipfs://{added.root}/{path}", target, rpc=node.api) == len(data), path
        assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(data).digest(), path
        file_cid = added.node_cids[f"upload/{path}"]
        assert ipfs.download(f"ipfs://{file_cid}", target, rpc=node.api) == len(data), path
    with pytest.raises(ContentNotFoundError):
        ipfs.download(f"ipfs://{added.root}/talks/nope.mp3", tmp_path / "nope", rpc=node.api)
    with pytest.raises(ContentNotFoundError, match="not a directory"):
        ipfs.download(f"ipfs://{added.root}/en2.mp3/x", tmp_path / "nope", rpc=node.api)
    assert not (tmp_path / "nope").exists()


def test_rpc_listing_has_nested_paths(added: Added, node: JsIpfsNode) -> None:
    listed = ipfs.list_files(f"ipfs://{added.root}", rpc=node.api)
    assert [(f.path, f.size, f.error) for f in listed] == sorted((p, len(d), "") for p, d in added.files.items())
    assert [bytes(f.cid) for f in listed] == [
        bytes(ipfs.CID.decode(added.node_cids[f"upload/{f.path}"])) for f in listed
    ]
    talks = ipfs.list_files(f"ipfs://{added.root}/talks", rpc=node.api)
    assert [f.path for f in talks] == ["deeper/empty.txt", "deeper/long.bin", "en2 copy.mp3"]
    # The same listing through the input expansion a batch uses: media files only, paths mirror the CID.
    items = expand_url(f"ipfs://{added.root}", {"ipfs": {"api": node.api}})
    assert [(i.relative_path, i.error) for i in items] == [
        (f"{added.root}/en2.mp3", ""),
        (f"{added.root}/talks/en2 copy.mp3", ""),
    ]


def test_gateway_without_trustless_responses_is_refused(added: Added, node: JsIpfsNode, tmp_path: Path) -> None:
    # The gateway serves the content, but `?format=car` gets the plain file bytes, not a CAR (notes, section 2).
    plain = requests.get(f"{node.gateway}/ipfs/{added.root}/readme.txt", params={"format": "car"}, timeout=30)
    assert plain.status_code == 200 and plain.content == b"hello ipfs\n"
    assert not plain.headers.get("Content-Type", "").startswith(ipfs.CAR_MEDIA_TYPE)
    with pytest.raises(VerificationError, match="does not serve verifiable CAR responses"):
        ipfs.download(f"ipfs://{added.root}/en2.mp3", tmp_path / "x.mp3", gateway=node.gateway)
    with pytest.raises(VerificationError, match="does not serve verifiable CAR responses"):
        ipfs.list_files(f"ipfs://{added.root}", gateway=node.gateway)
    assert list(tmp_path.iterdir()) == []


def test_cid_the_node_lacks_is_unavailable_not_a_hang(
    node: JsIpfsNode, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # An offline js-ipfs answers `block/get` for a block it lacks by waiting for the network, forever: the
    # reader's read timeout ends it as a retryable error (shortened here from 60 s).
    monkeypatch.setattr(ipfs, "TIMEOUT_S", (5.0, 2.0))
    absent = Dag(1).add_file(b"never added to the node\n")[0]
    with pytest.raises(UnavailableError, match="timed out"):
        ipfs.download(f"ipfs://{absent}", tmp_path / "x", rpc=node.api)
    assert list(tmp_path.iterdir()) == []
