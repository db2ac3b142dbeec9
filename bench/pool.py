"""Scale: does the flow's cost per file stay flat from 1,000 to 10,000 files?

    .venv/bin/python bench/pool.py [--files 1000 10000] [--workers 8] [--out bench/out/pool]

Each size runs the real flow (`transcribe_batch`, against a real Prefect server on SQLite) in a fresh
process with the instant engine of `bench/ceiling.py` (the model taken out), over unique tiny files:
0.5-1 s wav clips cut by ffmpeg from `tests/fixtures/speech`, copied with a few bytes changed so that
every file has its own content hash (nothing is a cache hit). Per size it prints:

- the manifest's cost per flush (ms per flush and per row, in the first and the last 1,000 files) and the
  compaction that ends the run;
- the flow process's memory: resident set (RSS) after every 1,000 files, its peak (VmHWM) and at the end;
- the Prefect database's growth in bytes per file (its SQLite files, a few seconds after the run).

The target: all of them flat as the files grow.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SPEECH = ROOT / "tests" / "fixtures" / "speech"
BASE_CLIPS = 24  # distinct cuts; every file is one of them with its own bytes changed
CLIP_S = (0.5, 1.0)
FILES_PER_FOLDER = 100
CHECKPOINT_FILES = 1000  # RSS and flush cost are reported per this many files
DB_SETTLE_S = 5.0  # the server writes a run's events a little after the flow returns


def base_clips(dest: Path) -> list[bytes]:
    """BASE_CLIPS wav clips of 0.5-1 s (16 kHz mono) cut by ffmpeg from the committed speech fixtures."""
    from batchscribe.audio import ffmpeg_exe

    sources = sorted(p for p in SPEECH.iterdir() if p.suffix in (".wav", ".mp3"))
    dest.mkdir(parents=True, exist_ok=True)
    clips = []
    for i in range(BASE_CLIPS):
        clip = dest / f"base{i:02d}.wav"
        if not clip.exists():
            length_s = CLIP_S[0] + (CLIP_S[1] - CLIP_S[0]) * i / (BASE_CLIPS - 1)
            argv = [ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-ss", f"{0.4 * (i // len(sources)):.2f}"]
            argv += ["-t", f"{length_s:.2f}", "-i", f"file:{sources[i % len(sources)]}", "-ac", "1", "-ar", "16000"]
            subprocess.run([*argv, f"file:{clip}"], check=True, capture_output=True)
        clips.append(clip.read_bytes())
    return clips


def make_inbox(dest: Path, files: int, clips: list[bytes]) -> None:
    """`files` unique wav files under `dest`: a base clip whose last four sample bytes carry the file's number."""
    for i in range(files):
        data = bytearray(clips[i % len(clips)])
        data[-4:] = i.to_bytes(4, "little")  # the last two samples: inaudible, and a content hash of its own
        path = dest / f"{i // FILES_PER_FOLDER:03d}" / f"clip{i:05d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes(data))


def rss_kib(field: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


class Recorder:
    """Told of each finished file (`batchscribe.progress`) and each manifest flush: RSS and flush cost by files done."""

    def __init__(self) -> None:
        self.done = 0
        self.rss_at: dict[int, int] = {}  # files done -> RSS KiB
        self.flushes: list[tuple[int, int, float]] = []  # (files done, rows in the flush, seconds)
        self.close_s = 0.0
        self._lock = threading.Lock()

    def batch_started(self, total_files: int) -> None:
        self.rss_at[0] = rss_kib()

    def file_finished(self, row: dict) -> None:
        with self._lock:
            self.done += 1
            if self.done % CHECKPOINT_FILES == 0:
                self.rss_at[self.done] = rss_kib()

    def watch_manifest(self) -> None:
        """Time ManifestWriter.flush and .close (the writer the flow creates) in this process."""
        from batchscribe.manifest import ManifestWriter

        flush, close = ManifestWriter.flush, ManifestWriter.close
        recorder = self

        def timed_flush(writer: ManifestWriter) -> None:
            rows, started = len(writer.pending), time.perf_counter()
            flush(writer)
            if rows:
                recorder.flushes.append((recorder.done, rows, time.perf_counter() - started))

        def timed_close(writer: ManifestWriter) -> None:
            started = time.perf_counter()
            close(writer)
            recorder.close_s = time.perf_counter() - started

        ManifestWriter.flush, ManifestWriter.close = timed_flush, timed_close


def flush_cost(flushes: list[tuple[int, int, float]], lo: int, hi: int) -> dict:
    """Flushes made while `lo` <= files done < `hi`: how many, ms per flush and per row."""
    picked = [(rows, s) for done, rows, s in flushes if lo <= done < hi]
    rows = sum(r for r, _ in picked)
    seconds = sum(s for _, s in picked)
    return {
        "flushes": len(picked),
        "rows": rows,
        "ms_per_flush": 1000 * seconds / len(picked) if picked else None,
        "max_ms": 1000 * max((s for _, s in picked), default=0.0),
        "ms_per_row": 1000 * seconds / rows if rows else None,
    }


def child(args: argparse.Namespace) -> None:
    """One flow run over `args.inbox`, in this fresh process; its figures as JSON on `args.result`."""
    import gc

    from ceiling import instant_engine

    from batchscribe import progress
    from batchscribe.engines import register_engine
    from batchscribe.options import BatchRequest, TranscribeOptions

    recorder = Recorder()
    recorder.watch_manifest()
    progress.subscribe(recorder)
    options = TranscribeOptions(engine="faster-whisper", device="cpu")
    cache_dir = args.work / "cache"
    register_engine(instant_engine(options), cache_dir)
    request = BatchRequest(
        inputs=[str(args.inbox)],
        output=str(args.work / "out"),
        cache_dir=str(cache_dir),
        transcribe=options,
        max_workers=args.workers,
    )
    from flows.transcribe_batch import transcribe_batch

    rss_before = rss_kib()
    started = time.perf_counter()
    state = transcribe_batch(request, return_state=True)
    wall_s = time.perf_counter() - started
    rss_end = rss_kib()
    del state
    gc.collect()
    files = recorder.done
    result = {
        "files": files,
        "wall_s": wall_s,
        "rss_before_kib": rss_before,
        "rss_at_kib": recorder.rss_at,
        "rss_end_kib": rss_end,
        "rss_after_gc_kib": rss_kib(),
        "rss_peak_kib": rss_kib("VmHWM"),
        "flush_first": flush_cost(recorder.flushes, 0, CHECKPOINT_FILES),
        "flush_last": flush_cost(recorder.flushes, files - CHECKPOINT_FILES, files + 1),
        "flush_all": flush_cost(recorder.flushes, 0, files + 1),
        "close_s": recorder.close_s,
    }
    args.result.write_text(json.dumps(result))


def run_size(files: int, args: argparse.Namespace, env: dict, prefect_home: Path, clips: list[bytes]) -> dict:
    """Make the inbox, run one child over it, and add the database's growth."""
    from ceiling import db_bytes

    work = Path(tempfile.mkdtemp(prefix=f"pool-{files}-", dir=args.out))
    make_inbox(work / "inbox", files, clips)
    result_path = work / "result.json"
    argv = [sys.executable, __file__, "--child", "--inbox", str(work / "inbox"), "--work", str(work)]
    argv += ["--workers", str(args.workers), "--result", str(result_path)]
    before = db_bytes(prefect_home)
    subprocess.run(argv, env=env, check=True)
    time.sleep(DB_SETTLE_S)
    result = json.loads(result_path.read_text())
    result["db_bytes"] = db_bytes(prefect_home) - before
    shutil.rmtree(work, ignore_errors=True)
    return result


def print_size(r: dict) -> None:
    files = r["files"]
    print(f"\n{files} files: {r['wall_s']:.1f} s, {files / r['wall_s']:.1f} files/s")
    for name, f in (("first 1,000 files", r["flush_first"]), ("last 1,000 files", r["flush_last"])):
        if f["flushes"]:
            print(
                f"  manifest flush, {name}: {f['flushes']} flushes of {f['rows'] / f['flushes']:.0f} rows, "
                f"{f['ms_per_flush']:.1f} ms/flush (max {f['max_ms']:.1f}), {f['ms_per_row']:.2f} ms/row"
            )
    a = r["flush_all"]
    print(f"  manifest flush, whole run: {a['flushes']} flushes, {a['ms_per_flush']:.1f} ms/flush")
    print(f"  manifest close (last flush, compaction, view): {r['close_s'] * 1000:.0f} ms")
    at = ", ".join(f"{int(k):,}: {v / 1024:.0f}" for k, v in r["rss_at_kib"].items())
    print(f"  flow process RSS MiB by files done: {at}")
    print(
        f"  RSS MiB: before the flow {r['rss_before_kib'] / 1024:.0f}, at the end {r['rss_end_kib'] / 1024:.0f} "
        f"(after gc {r['rss_after_gc_kib'] / 1024:.0f}), peak {r['rss_peak_kib'] / 1024:.0f}"
    )
    print(f"  Prefect DB growth: {r['db_bytes'] / files:.0f} bytes/file ({r['db_bytes'] / 1e6:.1f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "pool")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--inbox", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    args.out.mkdir(parents=True, exist_ok=True)
    clips = base_clips(args.out / "base")
    from batchscribe.server import OFFLINE_ENV, free_port, start_server, wait_healthy

    server_dir = Path(tempfile.mkdtemp(prefix="pool-server-", dir=args.out))
    prefect_home = server_dir / "prefect-home"
    port = free_port()
    env = {**os.environ, **OFFLINE_ENV, "PREFECT_HOME": str(prefect_home), "PREFECT_LOGGING_LEVEL": "WARNING"}
    env["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    with (server_dir / "server.log").open("wb") as log:
        server = start_server(port, env, log)
        try:
            if not wait_healthy(env["PREFECT_API_URL"], server):
                raise SystemExit(f"the Prefect server did not start; see {server_dir / 'server.log'}")
            results = []
            for files in args.files:
                results.append(run_size(files, args, env, prefect_home, clips))
                print_size(results[-1])
        finally:
            server.terminate()
            server.wait(timeout=30)
    (args.out / "pool.json").write_text(json.dumps({"workers": args.workers, "runs": results}, indent=2))
    shutil.rmtree(server_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
