"""The production shape on one machine: three workers, each in its own UTS and PID namespace (its own
hostname, as containers and pods have), share a cache folder and an output (a folder, or a bucket on a
local S3 server); one is SIGKILLed while it holds a file's lease. The others take the lease over once it
lapses and finish the batch."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from batchscribe import storage
from batchscribe.manifest import DATASET, read_manifest
from tests.conftest import ffmpeg
from tests.s3_fixtures import environment, moto_s3

SPEECH = Path(__file__).resolve().parents[1] / "fixtures" / "speech"
CLIPS = ("en2.mp3", "es.mp3", "de.mp3", "fr.mp3", "en.wav", "en2.mp3")
LEASE_S = 4
WORKERS = ("pod-a", "pod-b", "pod-c")


def _unshare_allowed() -> bool:
    try:
        probe = ["unshare", "--uts", "--pid", "--fork", "sh", "-c", "hostname probe"]
        return subprocess.run(probe, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


pytestmark = pytest.mark.skipif(
    os.name != "posix" or os.geteuid() != 0 or not _unshare_allowed(), reason="needs root and unshare (UTS, PID)"
)


@pytest.fixture(params=["folder", "s3"])
def output(request, tmp_path) -> Iterator[tuple[str, dict, dict[str, str]]]:
    """The shared output: its location, the storage options that reach it, and the workers' environment."""
    if request.param == "folder":
        yield str(tmp_path / "out"), {}, {}
        return
    with moto_s3("out") as options:
        yield "s3://out/batch", options, environment(options)


def manifest_parts(out: str, options: dict) -> pd.DataFrame:
    """Every row of every part file left in the output's manifest dataset."""
    folder = storage.join(out, DATASET)
    fs, inner = storage.filesystem(folder, options)
    return pd.concat([pd.read_parquet(io.BytesIO(fs.cat_file(p))) for p in sorted(fs.ls(inner, detail=False))])


def test_a_killed_worker_never_stalls_the_others(prefect_server, cache_dir, tmp_path, output) -> None:
    out, options, out_env = output
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i, clip in enumerate(CLIPS):  # distinct files: each its own cache key
        delayed = f"adelay={150 * (i + 1)}"
        ffmpeg("-i", f"file:{SPEECH / clip}", "-af", delayed, "-ac", "1", f"file:{inbox / f'{i}.mp3'}")
    run = [sys.executable, "-m", "flows.cli", "run", str(inbox), "-o", out, "-f", "txt", "--no-progress"]
    run += ["--cache-dir", str(cache_dir), "--workers", "1"]
    env = {**os.environ, **out_env, "BATCHSCRIBE_LEASE_S": str(LEASE_S)}
    logs = {name: (tmp_path / f"{name}.log").open("w") for name in WORKERS}

    def start(name: str) -> subprocess.Popen:
        return subprocess.Popen(
            ["unshare", "--uts", "--pid", "--fork", "sh", "-c", f'hostname {name} && exec "$@"', "sh", *run],
            stdout=logs[name], stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip

    # pod-a starts first, so that it surely takes a file's lease before the others could take them all.
    workers = {"pod-a": start("pod-a")}
    deadline = time.monotonic() + 600
    held = None
    while held is None:  # pod-a is working on a file: it holds that file's lease
        assert time.monotonic() < deadline and workers["pod-a"].poll() is None, "pod-a never held a lease"
        for lock in (cache_dir / "locks").glob("*.lock"):
            try:
                if json.loads(lock.read_text()).get("host") == "pod-a":
                    held = lock
            except (OSError, ValueError):
                pass
        time.sleep(0.05)
    workers.update((name, start(name)) for name in WORKERS[1:])
    os.killpg(workers["pod-a"].pid, signal.SIGKILL)
    killed = time.monotonic()
    workers["pod-a"].wait()

    for name in ("pod-b", "pod-c"):
        assert workers[name].wait(timeout=600) == 0, (tmp_path / f"{name}.log").read_text()[-3000:]
    after_kill_s = time.monotonic() - killed
    manifest = read_manifest(out, options)
    assert sorted(manifest["relative_path"]) == sorted(f"{i}.mp3" for i in range(len(CLIPS)))
    assert set(manifest["status"]) == {"ok"}
    assert not list((cache_dir / "locks").glob("*.lock"))  # the dead holder's lease was taken over and released
    # Every file was transcribed once: every row any worker wrote for it carries the same transcription run.
    parts = manifest_parts(out, options)
    assert (parts.groupby("relative_path")["finished_at"].nunique() == 1).all()
    print(f"\nfault injection ({out}): survivors finished {after_kill_s:.1f} s after pod-a's kill (lease {LEASE_S} s)")
