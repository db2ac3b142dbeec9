"""Remote inputs and outputs against real servers on 127.0.0.1: HTTP, S3 (moto + s3fs), memory://, IPFS."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pandas as pd
import pytest

from batchscribe import storage
from batchscribe.downloads import evict, stage_remote
from batchscribe.errors import InputError, is_transient
from batchscribe.inputs import resolve_inputs
from batchscribe.manifest import MANIFEST_CSV, MANIFEST_PARQUET, absolute_paths, read_manifest, write_manifest
from batchscribe.media import InputItem, StagedFile
from tests.http_fixtures import RangeHandler as _Handler
from tests.http_fixtures import serve_folder
from tests.ipfs_fixtures import Dag, TrustlessGateway
from tests.s3_fixtures import moto_s3

MEDIA = bytes(range(256)) * 4000  # ~1 MiB: several range requests at fsspec's block size


# ---------------------------------------------------------------------------------------------- HTTP


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[str]:
    root = tmp_path / "www"
    root.mkdir()
    (root / "talk.mp3").write_bytes(MEDIA)
    with serve_folder(root) as url:
        yield url


def test_http_file_downloads_with_ranges_once_into_the_cache(http_server: str, tmp_path: Path) -> None:
    [item] = resolve_inputs([f"{http_server}/talk.mp3"])
    assert item.relative_path == f"127.0.0.1_{http_server.rsplit(':', 1)[1]}/talk.mp3" and not item.error
    staged = stage_remote(item, tmp_path / "downloads")
    assert Path(staged.local_path).read_bytes() == MEDIA and staged.size_bytes == len(MEDIA)
    assert any(rng for _, rng in _Handler.hits)  # fetched by range requests
    gets = len(_Handler.hits)
    again = stage_remote(item, tmp_path / "downloads")
    assert again == staged
    assert all(rng == "" for _, rng in _Handler.hits[gets:])  # a rerun only asks for the size/ETag


def test_an_evicted_download_is_known_by_its_recorded_hash_and_fetched_again_on_demand(
    http_server: str, tmp_path: Path
) -> None:
    item = InputItem(f"{http_server}/talk.mp3", "talk.mp3")
    downloads, hashes = tmp_path / "downloads", tmp_path / "hashes"
    staged = stage_remote(item, downloads, hash_dir=hashes)
    evict(staged, downloads)
    assert not list(downloads.iterdir())  # the copy and its key folder are gone

    gets = len(_Handler.hits)
    known = stage_remote(item, downloads, hash_dir=hashes, fetch=False)
    assert (known.sha256, known.size_bytes, known.present) == (staged.sha256, len(MEDIA), False)
    assert all(rng == "" for _, rng in _Handler.hits[gets:])  # the size and ETag only, no byte of the body
    fetched = stage_remote(item, downloads, hash_dir=hashes)
    assert fetched.present and fetched.sha256 == staged.sha256 and Path(fetched.local_path).read_bytes() == MEDIA

    local = tmp_path / "www" / "talk.mp3"
    local.write_bytes(MEDIA[:-1])
    changed = stage_remote(item, downloads, hash_dir=hashes, fetch=False)  # a new version: its own key
    assert changed.present and changed.sha256 != staged.sha256

    evict(StagedFile(str(local), "talk.mp3", str(local), staged.sha256, 1), downloads)
    assert local.is_file()  # an input outside the downloads is never touched


def test_http_404_is_a_permanent_clear_error(http_server: str, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found: http://127.0.0.1:.*/missing.mp3") as info:
        stage_remote(InputItem(f"{http_server}/missing.mp3", "missing.mp3"), tmp_path)
    assert not is_transient(info.value)


def test_http_dropped_connection_is_transient_and_leaves_nothing(http_server: str, tmp_path: Path) -> None:
    with pytest.raises(ConnectionError, match="drop/talk.mp3") as info:
        stage_remote(InputItem(f"{http_server}/drop/talk.mp3", "talk.mp3"), tmp_path / "dl")
    assert is_transient(info.value)
    assert not [p for p in (tmp_path / "dl").rglob("*") if p.is_file()]


def test_dropped_connection_is_retried_by_prefect_then_fails_clearly(
    http_server: str, tmp_path: Path, prefect_server: str
) -> None:
    from prefect import flow

    from tasks.fetch import stage_input

    @flow
    def stage_one(item: InputItem) -> object:
        return stage_input.with_options(retry_delay_seconds=0)(item, str(tmp_path / "cache"), return_state=True)

    state = stage_one(InputItem(f"{http_server}/drop/talk.mp3", "talk.mp3"), return_state=True)
    assert state.is_failed()
    with pytest.raises(ConnectionError, match="drop/talk.mp3"):
        state.result()
    heads = [p for p, rng in _Handler.hits if rng == ""]
    assert len(heads) >= 4  # the first try and 3 retries each asked again


def test_http_refusal_other_than_404_is_permanent_and_names_the_status(http_server: str, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="HTTP 403") as info:
        stage_remote(InputItem(f"{http_server}/forbidden/talk.mp3", "talk.mp3"), tmp_path)
    assert not is_transient(info.value)


def test_http_server_error_is_transient(http_server: str, tmp_path: Path) -> None:
    _Handler.flaky_left = 99
    with pytest.raises(ConnectionError, match="503") as info:
        stage_remote(InputItem(f"{http_server}/flaky/talk.mp3", "talk.mp3"), tmp_path)
    assert is_transient(info.value)


def test_stalled_download_times_out_instead_of_hanging(
    http_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage, "HTTP_READ_TIMEOUT_S", 1.0)  # 60 s in real use
    started = time.monotonic()
    with pytest.raises(ConnectionError, match="stall/talk.mp3") as info:
        stage_remote(InputItem(f"{http_server}/stall/talk.mp3", "talk.mp3"), tmp_path / "dl")
    assert time.monotonic() - started < _Handler.STALL_S  # it gave up, it did not wait the server out
    assert is_transient(info.value)
    assert not [p for p in (tmp_path / "dl").rglob("*") if p.is_file()]


def test_long_downloads_have_no_total_time_limit() -> None:
    fs, _ = storage.filesystem("https://media.example.org/ten-hours.mp4")
    timeout = fs.client_kwargs["timeout"]
    assert timeout.total is None and timeout.sock_read == storage.HTTP_READ_TIMEOUT_S
    assert timeout.sock_connect == storage.HTTP_CONNECT_TIMEOUT_S
    mine = {"https": {"client_kwargs": {"timeout": "user's own"}}}
    assert storage.filesystem("https://x.org/a.mp3", mine)[0].client_kwargs["timeout"] == "user's own"


def test_size_cap_refuses_before_downloading(http_server: str, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"1,024,000 bytes, larger than the size cap .* of 1,000 bytes") as info:
        stage_remote(InputItem(f"{http_server}/talk.mp3", "talk.mp3"), tmp_path / "dl", max_bytes=1000)
    assert not is_transient(info.value)
    assert all(rng == "" for _, rng in _Handler.hits)  # only the size was asked for: no body was fetched
    assert not [p for p in (tmp_path / "dl").rglob("*") if p.is_file()]


def test_credentials_in_a_url_never_reach_an_error(http_server: str, tmp_path: Path) -> None:
    authority = http_server.removeprefix("http://")
    for path, error in (("missing.mp3", InputError), ("forbidden/a.mp3", InputError), ("drop/talk.mp3", Exception)):
        with pytest.raises(error) as info:
            stage_remote(InputItem(f"http://me:hunter2@{authority}/{path}", "a.mp3"), tmp_path / "dl")
        assert "hunter2" not in str(info.value) and "***@" in str(info.value)


# ---------------------------------------------------------------------------------------------- memory://


def test_memory_folder_expands_to_media_and_outputs_round_trip(tmp_path: Path) -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe({"/in/a/talk.mp3": MEDIA, "/in/b/x.wav": b"wav", "/in/notes.txt": b"no", "/in/.hidden/y.mp3": b"h"})
    items = resolve_inputs(["memory://in/"])
    assert [(i.source, i.relative_path) for i in items] == [
        ("memory:///in/a/talk.mp3", "in/a/talk.mp3"),
        ("memory:///in/b/x.wav", "in/b/x.wav"),
    ]
    staged = stage_remote(items[0], tmp_path)
    assert Path(staged.local_path).read_bytes() == MEDIA
    assert resolve_inputs(["memory://nothing-here/"])[0].error

    write_manifest(pd.DataFrame([{"relative_path": "a/talk.mp3", "status": "ok"}]), "memory://out")
    assert fs.exists("/out/manifest.csv")
    assert read_manifest("memory://out")["relative_path"].tolist() == ["a/talk.mp3"]
    storage.write_bytes_atomic("memory://out/a/talk.mp3.srt", b"1\n")
    assert fs.cat_file("/out/a/talk.mp3.srt") == b"1\n"


# ---------------------------------------------------------------------------------------------- S3 (moto)


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, dict]]:
    with moto_s3("media", "out") as options:
        fs, _ = storage.filesystem("s3://media", options)
        fs.pipe({"media/talks/a/talk.mp3": MEDIA, "media/talks/b.wav": b"RIFF", "media/talks/readme.md": b"#"})
        yield options


def test_s3_prefix_expands_stages_once_and_outputs_write_back(s3: dict, tmp_path: Path) -> None:
    items = resolve_inputs(["s3://media/talks/"], storage_options=s3)
    assert [(i.source, i.relative_path) for i in items] == [
        ("s3://media/talks/a/talk.mp3", "media/talks/a/talk.mp3"),
        ("s3://media/talks/b.wav", "media/talks/b.wav"),
    ]
    staged = stage_remote(items[0], tmp_path / "dl", s3)
    assert Path(staged.local_path).read_bytes() == MEDIA
    assert stage_remote(items[0], tmp_path / "dl", s3).local_path == staged.local_path
    assert len(list((tmp_path / "dl").iterdir())) == 1

    with pytest.raises(InputError, match="not found"):
        stage_remote(InputItem("s3://media/talks/nope.mp3", "nope.mp3"), tmp_path / "dl", s3)
    with pytest.raises(InputError, match="size cap"):
        stage_remote(items[1], tmp_path / "dl2", s3, max_bytes=2)

    rows = pd.DataFrame([{"relative_path": "media/talks/a/talk.mp3", "status": "ok", "size_bytes": len(MEDIA)}])
    assert write_manifest(rows, "s3://out/run1", s3) == "s3://out/run1/manifest.parquet"
    back = read_manifest("s3://out/run1", s3)
    assert back["size_bytes"].tolist() == [len(MEDIA)]
    fs, _ = storage.filesystem("s3://out", s3)
    assert sorted(fs.ls("out/run1")) == [f"out/run1/{MANIFEST_CSV}", f"out/run1/{MANIFEST_PARQUET}"]


def test_workers_share_one_manifest_dataset_in_a_bucket_without_a_lock(s3: dict) -> None:
    import threading

    from batchscribe.manifest import DATASET, ManifestWriter

    def work(prefix: str) -> None:
        with ManifestWriter("s3://out/shared", s3, min_interval_s=0.0, cost_factor=0.0) as writer:
            for i in range(15):
                writer.add({"relative_path": f"{prefix}/{i:02d}.mp3", "status": "ok"})

    workers = [threading.Thread(target=work, args=(prefix,)) for prefix in ("pod-a", "pod-b", "pod-c")]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    manifest = read_manifest("s3://out/shared", s3)
    assert len(manifest) == 45 and manifest["relative_path"].is_unique
    assert len(read_manifest("s3://out/shared/manifest.parquet", s3)) == 45  # the view's path reads the dataset
    fs, _ = storage.filesystem("s3://out", s3)
    assert 1 <= len(fs.ls(f"out/shared/{DATASET}", refresh=True)) <= 3  # each closing worker compacted


def test_a_listing_that_fails_for_a_while_is_tried_again_like_a_download() -> None:
    import threading

    from moto.server import ThreadedMotoServer

    from batchscribe.server import free_port

    port = free_port()
    options = {
        "s3": {
            "endpoint_url": f"http://127.0.0.1:{port}",
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"region_name": "eu-west-1"},
            "skip_instance_cache": True,
        }
    }
    # The bucket and its file go into moto's state (one per process, shared by its servers) through a
    # server of their own first, so that the listing never sees the bucket without the file; the server it
    # lists comes up later. (Not `moto_s3`: it resets the state that this module's `s3` fixture filled.)
    first = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    first.start()
    host, first_port = first.get_host_and_port()
    try:
        reach = {"s3": {**options["s3"], "endpoint_url": f"http://{host}:{first_port}"}}
        fs, _ = storage.filesystem("s3://late", reach)
        fs.mkdir("late")
        fs.pipe({"late/talks/a.mp3": MEDIA})
    finally:
        first.stop()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    timer = threading.Timer(8.0, server.start)  # after the S3 client's own retries (~7 s) have given up once
    timer.start()
    try:
        items = resolve_inputs(["s3://late/talks/"], storage_options=options)
    finally:
        timer.join()
        server.stop()
    assert [(i.relative_path, i.error) for i in items] == [("late/talks/a.mp3", "")]


def test_s3_without_credentials_becomes_an_error_row_not_a_crash() -> None:
    [item] = resolve_inputs(["s3://media/talks/"], storage_options={"s3": {"endpoint_url": "http://127.0.0.1:9"}})
    assert item.error.startswith("cannot list s3://media/talks/")


# ---------------------------------------------------------------------------------------------- IPFS


@pytest.fixture
def ipfs_gateway() -> Iterator[tuple[TrustlessGateway, Dag, str]]:
    dag = Dag(1)
    tree = {"talks": {"a": {"talk.mp3": MEDIA}, "b.wav": b"RIFF"}, "notes.txt": b"no", "intro.mp3": b"ID3"}
    root = str(dag.add_dir(tree)[0])
    with TrustlessGateway(dag) as gateway:
        yield gateway, dag, root


def test_ipfs_directory_cid_expands_with_mirrored_paths(ipfs_gateway, tmp_path: Path) -> None:
    gateway, _, root = ipfs_gateway
    opts = {"ipfs": {"gateway": gateway.url}}
    items = resolve_inputs([f"ipfs://{root}"], storage_options=opts)
    assert [(i.source, i.relative_path) for i in items] == [
        (f"ipfs://{root}/intro.mp3", f"{root}/intro.mp3"),
        (f"ipfs://{root}/talks/a/talk.mp3", f"{root}/talks/a/talk.mp3"),
        (f"ipfs://{root}/talks/b.wav", f"{root}/talks/b.wav"),
    ]
    sub = resolve_inputs([f"ipfs://{root}/talks/a"], storage_options=opts)
    assert [i.relative_path for i in sub] == [f"{root}/talks/a/talk.mp3"]

    staged = stage_remote(items[1], tmp_path / "dl", opts)
    assert Path(staged.local_path).read_bytes() == MEDIA
    seen = len(gateway.controls.requests)
    assert stage_remote(items[1], tmp_path / "dl", opts) == staged
    assert len(gateway.controls.requests) == seen  # cached by CID: no second download


def test_ipfs_tampered_content_fails_the_file(ipfs_gateway, tmp_path: Path) -> None:
    gateway, dag, root = ipfs_gateway
    gateway.controls.tamper.add(str(dag.add_file(MEDIA)[0]))
    with pytest.raises(InputError, match="does not match its hash") as info:
        stage_remote(InputItem(f"ipfs://{root}/talks/a/talk.mp3", "x"), tmp_path, {"ipfs": {"gateway": gateway.url}})
    assert not is_transient(info.value)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_ipfs_tampered_file_root_fails_only_that_file(ipfs_gateway) -> None:
    gateway, dag, root = ipfs_gateway
    gateway.controls.tamper.add(str(dag.add_file(MEDIA)[0]))  # the root block of talks/a/talk.mp3
    items = resolve_inputs([f"ipfs://{root}"], storage_options={"ipfs": {"gateway": gateway.url}})
    errors = {i.relative_path: i.error for i in items}
    assert errors[f"{root}/intro.mp3"] == "" and errors[f"{root}/talks/b.wav"] == ""
    assert "does not match its hash" in errors[f"{root}/talks/a/talk.mp3"]


def test_ipfs_unreachable_or_missing_cid_becomes_an_error_row(ipfs_gateway) -> None:
    gateway, _, root = ipfs_gateway
    gateway.controls.missing.add(root)
    [item] = resolve_inputs([f"ipfs://{root}"], storage_options={"ipfs": {"gateway": gateway.url}})
    assert item.error.startswith(f"cannot list ipfs://{root}") and "not available" in item.error


# ---------------------------------------------------------------------------------------------- the flow


@pytest.mark.slow
def test_flow_reads_an_ipfs_directory_and_writes_to_s3(s3, prefect_server, cache_dir, clips) -> None:
    from batchscribe.options import BatchRequest
    from flows.transcribe_batch import BatchFailed, transcribe_batch

    speech = Path(__file__).resolve().parents[1] / "fixtures" / "speech" / "en2.mp3"
    dag = Dag(1)
    root = str(dag.add_dir({"talks": {"en2.mp3": speech.read_bytes(), "bad.mp3": MEDIA}, "notes.txt": b"no"})[0])
    options = {**s3, "ipfs": {}}
    with TrustlessGateway(dag) as gateway:
        options["ipfs"]["gateway"] = gateway.url
        gateway.controls.tamper.add(str(dag.add_file(MEDIA[:262144])[0]))  # bad.mp3's first chunk is tampered with
        request = BatchRequest(
            inputs=[f"ipfs://{root}"],
            output="s3://out/batch",
            cache_dir=str(cache_dir),
            storage_options=options,
        )
        state = transcribe_batch(request, return_state=True)
    result = state.result(raise_on_failure=False)
    assert isinstance(result, BatchFailed)  # bad.mp3 failed; en2.mp3 finished

    manifest = read_manifest("s3://out/batch", s3).set_index("relative_path")
    ok, bad = manifest.loc[f"{root}/talks/en2.mp3"], manifest.loc[f"{root}/talks/bad.mp3"]
    assert ok["status"] == "ok", ok["error"]
    assert ok["language"] == "en" and ok["source"] == f"ipfs://{root}/talks/en2.mp3"
    assert bad["status"] == "failed" and "does not match its hash" in bad["error"] and pd.isna(bad["srt_path"])
    assert ok["srt_path"] == f"{root}/talks/en2.mp3.srt"  # relative to the manifest
    absolute = absolute_paths(manifest, "s3://out/batch").loc[f"{root}/talks/en2.mp3"]
    assert absolute["srt_path"] == f"s3://out/batch/{root}/talks/en2.mp3.srt"
    fs, _ = storage.filesystem("s3://out", s3)
    text = fs.cat_file(f"out/batch/{root}/talks/en2.mp3.txt").decode()
    assert "bakery" in text.lower()
    assert not fs.exists(f"out/batch/{root}/talks/bad.mp3.txt")
    csv = fs.cat_file(f"out/batch/{MANIFEST_CSV}").decode()
    assert "testing" not in csv and "endpoint_url" not in csv  # storage options never reach the manifest
