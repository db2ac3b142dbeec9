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

`BATCHSCRIBE_POOL_TRACE=1000,4000` (files done) makes each run also say what grew between those points:
the `tracemalloc` allocations that grew most, by traceback, the live objects by type, and glibc's and
pyarrow's allocators (slower: tracemalloc traces every allocation). It prints them and writes
`<out>/trace-<files>.txt`.
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
TRACE_ENV = "BATCHSCRIBE_POOL_TRACE"
TRACE_FRAMES = 12
TRACE_TOP = 25


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


class Tracer:
    """Snapshots of the flow process at given files done, and what grew between the first and the last."""

    def __init__(self, at: list[int]) -> None:
        import tracemalloc

        self.at = sorted(at)
        self.points: list[dict] = []
        tracemalloc.start(TRACE_FRAMES)

    def maybe(self, done: int) -> None:
        if done in self.at:
            self.points.append(self.snapshot(done))

    @staticmethod
    def snapshot(done: int) -> dict:
        import collections
        import gc
        import tracemalloc

        gc.collect()
        types = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
        return {
            "done": done,
            "rss_kib": rss_kib(),
            "traced": tracemalloc.get_traced_memory()[0],
            "types": types,
            "snapshot": tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)]),
            **allocators(),
        }

    def report(self) -> str:
        if len(self.points) < 2:
            return f"trace: {len(self.points)} of {self.at} points reached"
        a, b = self.points[0], self.points[-1]
        files = b["done"] - a["done"]
        lines = [f"trace: {a['done']} -> {b['done']} files ({files})"]
        for key in (
            "rss_kib",
            "rss_anon",
            "traced",
            "glibc_in_use",
            "glibc_free",
            "glibc_mmap",
            "arrow_allocated",
            "arrow_peak",
        ):
            unit = 1024 if key == "rss_kib" else 1
            delta = (b[key] - a[key]) * unit
            lines.append(
                f"  {key}: {a[key] * unit / 2**20:.1f} -> {b[key] * unit / 2**20:.1f} MiB, {delta / files:.0f} B/file"
            )
        lines.append("  live objects by type, growth per 1,000 files:")
        grown = {t: b["types"][t] - a["types"].get(t, 0) for t in b["types"]}
        for name, n in sorted(grown.items(), key=lambda kv: -kv[1])[:TRACE_TOP]:
            lines.append(f"    {name}: +{n * 1000 / files:.0f} ({b['types'][name]} live)")
        lines.append("  allocations that grew most, by traceback:")
        for stat in b["snapshot"].compare_to(a["snapshot"], "traceback")[:TRACE_TOP]:
            lines.append(
                f"    {stat.size_diff / files:+.0f} B/file, {stat.count_diff:+d} blocks, {stat.size / 2**20:.2f} MiB"
            )
            lines += [
                f"      {line.strip()}"
                for line in stat.traceback.format(limit=TRACE_FRAMES, most_recent_first=True)[::2]
            ]
        return "\n".join(lines)


def allocators() -> dict:
    """Bytes glibc's malloc holds (in use, free, mmapped: mallinfo2), pyarrow's pool (allocated, peak), and
    the thousands of blocks Python's own allocator holds."""
    import ctypes
    import ctypes.util

    import pyarrow as pa

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks")] + [
            (n, ctypes.c_size_t) for n in ("fsmblks", "uordblks", "fordblks", "keepcost")
        ]

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallinfo2.restype = MallInfo2
    info = libc.mallinfo2()
    pool = pa.default_memory_pool()
    return {
        "glibc_in_use": info.uordblks,
        "glibc_free": info.fordblks,
        "glibc_mmap": info.hblkhd,
        "arrow_allocated": pool.bytes_allocated(),
        "arrow_peak": pool.max_memory(),
        "python_blocks": sys.getallocatedblocks() // 1000,
        "rss_anon": rss_kib("RssAnon") * 1024,  # the heaps: RSS less the mapped files (code, libraries)
        **anon_mappings(),
        "threads": threading.active_count(),
    }


def anon_mappings() -> dict:
    """Resident bytes of the anonymous mappings by what their size says they are (/proc/self/smaps): the
    main heap, 1 MiB ones (Python's arenas), 8 MiB ones (thread stacks, less their guard page), the rest
    (glibc's thread arenas, pyarrow's mimalloc, merged neighbours)."""
    found = dict.fromkeys(["anon_heap", "anon_1mib", "anon_8mib", "anon_other"], 0)
    kind = None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5 and not fields[0].endswith(":"):
            start, end = (int(x, 16) for x in fields[0].split("-"))
            path, size = (fields[5] if len(fields) > 5 else ""), end - start
            kind = None
            if fields[4] == "0" and path == "[heap]":
                kind = "anon_heap"
            elif fields[4] == "0" and not path:
                kind = {1 << 20: "anon_1mib"}.get(
                    size, "anon_8mib" if (8 << 20) - (64 << 10) <= size <= 8 << 20 else "anon_other"
                )
        elif fields[0] == "Rss:" and kind:
            found[kind] += int(fields[1]) * 1024
    return found


class Recorder:
    """Told of each finished file (`batchscribe.progress`) and each manifest flush: RSS and flush cost by files done."""

    def __init__(self, tracer: Tracer | None = None) -> None:
        self.tracer = tracer
        self.done = 0
        self.rss_at: dict[int, int] = {}  # files done -> RSS KiB
        self.alloc_at: dict[int, dict] = {}  # files done -> allocators()
        self.flushes: list[tuple[int, int, float]] = []  # (files done, rows in the flush, seconds)
        self.close_s = 0.0
        self._lock = threading.Lock()

    def batch_started(self, total_files: int) -> None:
        self.rss_at[0] = rss_kib()
        self.alloc_at[0] = allocators()

    def file_finished(self, row: dict) -> None:
        with self._lock:
            self.done += 1
            if self.done % CHECKPOINT_FILES == 0:
                self.rss_at[self.done] = rss_kib()
                self.alloc_at[self.done] = allocators()
            if self.tracer:
                self.tracer.maybe(self.done)

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

    trace_at = os.environ.get(TRACE_ENV)
    tracer = Tracer([int(n) for n in trace_at.split(",")]) if trace_at else None
    recorder = Recorder(tracer)
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
        "alloc_at": recorder.alloc_at,
        "rss_end_kib": rss_end,
        "rss_after_gc_kib": rss_kib(),
        "rss_peak_kib": rss_kib("VmHWM"),
        "flush_first": flush_cost(recorder.flushes, 0, CHECKPOINT_FILES),
        "flush_last": flush_cost(recorder.flushes, files - CHECKPOINT_FILES, files + 1),
        "flush_all": flush_cost(recorder.flushes, 0, files + 1),
        "close_s": recorder.close_s,
    }
    args.result.write_text(json.dumps(result))
    if tracer:
        report = tracer.report()
        print(report, flush=True)
        (args.work.parent / f"trace-{files}.txt").write_text(report + "\n")


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
    keys = ("rss_anon", "anon_heap", "anon_1mib", "anon_8mib", "anon_other")
    for key in (*keys, "glibc_in_use", "glibc_free", "python_blocks", "threads"):
        unit = 1 if key in ("python_blocks", "threads") else 2**20
        at = ", ".join(f"{int(k):,}: {v[key] / unit:.0f}" for k, v in r["alloc_at"].items())
        print(f"  {key} {'MiB' if unit > 1 else '(thousands)' if key == 'python_blocks' else ''} by files done: {at}")
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
