"""Pipeline ceiling: the real flow with an engine that answers at once, on hundreds of short real clips.

    .venv/bin/python bench/ceiling.py [--files 300] [--workers 8] [--out bench/out/ceiling] [--profile]

Everything but the model runs as in production: staging and hashing, decoding, Prefect task runs against a
real Prefect server, the subtitle writers and the manifest. The engine (`InstantEngine`) is a real `Engine`
that returns one segment per file without running a model; the bench installs it in its own process only
(`batchscribe.engines.register_engine`), so it is no product option. What is left is the most files a second
the pipeline can feed any model: the GPU-readiness figure measurable without a GPU.

Prints, for a first run and a cached re-run: files/s, ms per file (wall, and CPU by process: the flow, its
child processes, the Prefect server), the manifest's stage columns, and the Prefect database's growth in bytes
per file. `--profile` samples the first run with py-spy and prints where the flow process's CPU went (py-spy takes CPU
of its own: take the timings from a run without it).
Corpus: clips of 1-3 s cut from Debian's recorded English voice prompts (asterisk-core-sounds-en-wav), encoded
as mp3 and wav, each clip unique.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VOICE_DIR = Path("/usr/share/asterisk/sounds/en_US_f_Allison")  # apt-get install asterisk-core-sounds-en-wav
CLIP_S = (1.0, 3.0)  # clip lengths drawn from this range
PROFILE_RATE_HZ = 200  # py-spy samples per second

# Where the flow process's CPU went: the first matching frame (innermost first) names the stage.
STAGES = (
    ("decode (ffmpeg process or in-process)", ("decode_audio", "declared_duration_s", "decode_pcm", "_decode")),
    ("hash and stage", ("sha256", "stage_local", "stage_input", "hash_file")),
    ("write outputs", ("write_outputs", "export_subtitles")),
    ("manifest", ("ManifestWriter", "update_manifest", "write_manifest", "merge_rows", "normalize")),
    ("cache lookup and results", ("ResultStore", "ResultRecord", "result_store", "cached_result", "cloudpickle")),
    ("locks", ("ProcessLockManager", "acquire_lock", "release_lock", "locks.py")),
    ("prefect task engine and API", ("prefect",)),
    ("http client (httpx/anyio)", ("httpx", "httpcore", "anyio", "h11")),
)


def instant_engine(options):
    """An `InstantEngine` for `options` (defined here, so that the product has no such option)."""
    import numpy as np

    from batchscribe.audio import SAMPLE_RATE
    from batchscribe.engines.base import Engine, FileTranscription
    from batchscribe.transcript import Segment, Transcript

    class InstantEngine(Engine):
        """Reads the decoded audio and answers one segment at once: the model taken out of the pipeline."""

        def transcribe(self, audio: np.ndarray, options) -> Transcript:
            duration_s = len(audio) / SAMPLE_RATE
            segment = Segment(id=0, start_s=0.0, end_s=duration_s, text=f" {duration_s:.2f} seconds of speech.")
            return Transcript(options.language or "en", 1.0, duration_s, (segment,))

        def transcribe_file(self, path: Path, options) -> FileTranscription:
            samples = np.fromfile(path, dtype="<i2").astype(np.float32) / 32768.0
            return FileTranscription(self.transcribe(samples, options), 0.0)

    return InstantEngine(options)


def make_corpus(dest: Path, files: int, seed: int = 0) -> list[Path]:
    """`files` unique clips of 1-3 s under `dest`, half mp3 and half wav, from real recorded prompts."""
    from batchscribe.audio import ffmpeg_exe

    sources = sorted(VOICE_DIR.rglob("*.wav"))
    if not sources:
        raise SystemExit(f"no voice prompts under {VOICE_DIR}: apt-get install asterisk-core-sounds-en-wav")
    rng = random.Random(seed)
    made = []
    for i in range(files):
        ext = "mp3" if i % 2 == 0 else "wav"
        clip = dest / f"{i // 100:02d}" / f"clip{i:04d}.{ext}"
        if not clip.exists():
            clip.parent.mkdir(parents=True, exist_ok=True)
            src = sources[i % len(sources)]
            start_s = 0.05 * (i // len(sources))  # a source used twice is cut at another point: unique content
            length_s = rng.uniform(*CLIP_S)
            argv = [ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-ss", f"{start_s:.2f}", "-t", f"{length_s:.2f}"]
            argv += ["-i", f"file:{src}", "-ac", "1", "-ar", "16000" if ext == "wav" else "22050", f"file:{clip}"]
            subprocess.run(argv, check=True, capture_output=True)
        made.append(clip)
    return made


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def db_bytes(prefect_home: Path) -> int:
    return sum(p.stat().st_size for p in prefect_home.glob("prefect.db*"))


def timed_run(request, server_pid: int, prefect_home: Path, profile_to: Path | None) -> dict:
    """One flow run: wall, CPU by process, DB growth, and the manifest's rows."""
    from batchscribe.manifest import read_manifest
    from flows.transcribe_batch import transcribe_batch

    spy = None
    if profile_to is not None:
        argv = [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(os.getpid()), "--nonblocking"]
        argv += ["--rate", str(PROFILE_RATE_HZ), "--format", "raw", "--output", str(profile_to)]
        spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        time.sleep(1.0)  # py-spy attaches
    before = (time.perf_counter(), time.process_time(), children_cpu_s(), cpu_s(server_pid), db_bytes(prefect_home))
    state = transcribe_batch(request, return_state=True)
    wall_s = time.perf_counter() - before[0]
    flow_cpu_s = time.process_time() - before[1]
    child_cpu_s = children_cpu_s() - before[2]
    server_cpu_s = cpu_s(server_pid) - before[3]
    if spy is not None:
        spy.send_signal(2)  # SIGINT: py-spy writes its samples and exits
        spy.wait(timeout=120)
    time.sleep(3.0)  # the server writes the run's events a little after the flow returns
    grown = db_bytes(prefect_home) - before[4]
    rows = read_manifest(request.output)
    return {
        "state": state.type.value,
        "wall_s": wall_s,
        "flow_cpu_s": flow_cpu_s,
        "child_cpu_s": child_cpu_s,
        "server_cpu_s": server_cpu_s,
        "db_bytes": grown,
        "ok": int((rows["status"] == "ok").sum()),
        "decode_s_mean": float(rows["decode_s"].mean()),
        "transcribe_s_mean": float(rows["transcribe_s"].mean()),
        "wall_s_mean": float(rows["wall_s"].mean()),
    }


def profile_stages(raw: Path) -> dict[str, float]:
    """Share of the flow process's sampled CPU per stage (py-spy's raw output: folded stacks and counts)."""
    shares: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")[::-1]  # innermost first
        stage = next(
            (name for frame in frames for name, marks in STAGES if any(m in frame for m in marks)),
            "other (flow body, threads, pandas, logging)",
        )
        shares[stage] += int(count)
    total = sum(shares.values()) or 1
    return {stage: n / total for stage, n in shares.most_common()}


def print_run(name: str, run: dict, files: int, fixed_s: float) -> None:
    per = 1000.0 / files
    print(f"\n{name}: {run['state']}, {run['ok']}/{files} ok")
    beyond = (run["wall_s"] - fixed_s) * per
    wall = run["wall_s"] * per
    print(f"  files/s {files / run['wall_s']:.1f}   wall {wall:.1f} ms/file, {beyond:.1f} beyond the fixed cost")
    cpu = run["flow_cpu_s"] + run["child_cpu_s"] + run["server_cpu_s"]
    print(
        f"  CPU ms/file: flow process {run['flow_cpu_s'] * per:.1f}, its children (ffmpeg) "
        f"{run['child_cpu_s'] * per:.1f}, Prefect server {run['server_cpu_s'] * per:.1f}; total {cpu * per:.1f}"
    )
    print(
        f"  manifest means: decode_s {run['decode_s_mean'] * 1000:.1f} ms, transcribe_s "
        f"{run['transcribe_s_mean'] * 1000:.2f} ms, wall_s {run['wall_s_mean'] * 1000:.1f} ms"
    )
    print(f"  Prefect DB growth {run['db_bytes'] / files / 1024:.1f} KiB/file ({run['db_bytes'] / 1e6:.1f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "ceiling")
    parser.add_argument("--profile", action="store_true", help="sample the first run with py-spy")
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    clips = make_corpus(args.out / "corpus", args.files)
    work = Path(tempfile.mkdtemp(prefix="ceiling-", dir=args.out))
    inbox = work / "inbox"
    for clip in clips:  # a fresh copy per bench: no page cache or stat cache from an earlier run helps
        target = inbox / clip.relative_to(args.out / "corpus")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(clip, target)

    from batchscribe.server import OFFLINE_ENV, free_port, start_server, wait_healthy

    prefect_home = work / "prefect-home"
    api_url = f"http://127.0.0.1:{free_port()}/api"
    env = {**os.environ, **OFFLINE_ENV, "PREFECT_HOME": str(prefect_home), "PREFECT_LOGGING_LEVEL": "WARNING"}
    os.environ.update(env, PREFECT_API_URL=api_url)  # before Prefect is imported
    log = (work / "server.log").open("wb")
    server = start_server(int(api_url.rsplit(":", 1)[1].split("/")[0]), env, log)
    try:
        if not wait_healthy(api_url, server):
            raise SystemExit(f"the Prefect server did not start; see {work / 'server.log'}")
        results = run_bench(args, inbox, work, server.pid, prefect_home)
    finally:
        server.terminate()
        server.wait(timeout=30)
    (args.out / "ceiling.json").write_text(json.dumps(results, indent=2))
    shutil.rmtree(work, ignore_errors=True)


def run_bench(args: argparse.Namespace, inbox: Path, work: Path, server_pid: int, prefect_home: Path) -> dict:
    from batchscribe.engines import register_engine
    from batchscribe.options import BatchRequest, TranscribeOptions

    options = TranscribeOptions(engine="faster-whisper", device="cpu")
    cache_dir = work / "cache"
    register_engine(instant_engine(options), cache_dir)
    request = BatchRequest(
        inputs=[str(inbox)],
        output=str(work / "out"),
        cache_dir=str(cache_dir),
        transcribe=options,
        max_workers=args.workers,
    )
    # One file first: the flow's fixed cost (flow run, first API calls), not counted per file below.
    warm = BatchRequest(**{**request.model_dump(), "inputs": [str(next(inbox.rglob("*.wav")))], "output": str(work)})
    from flows.transcribe_batch import transcribe_batch

    transcribe_batch(warm)  # imports, first API calls
    started = time.perf_counter()
    transcribe_batch(warm)  # cached: what any run costs before its files
    fixed_s = time.perf_counter() - started
    print(f"fixed cost of a flow run (one cached file): {fixed_s:.2f} s")

    raw = work / "profile.txt" if args.profile else None
    first = timed_run(request, server_pid, prefect_home, raw)
    print_run("first run", first, args.files, fixed_s)
    cached = timed_run(request, server_pid, prefect_home, None)
    print_run("cached re-run", cached, args.files, fixed_s)
    results = {"files": args.files, "workers": args.workers, "cpus": os.cpu_count(), "fixed_s": fixed_s}
    results.update(first=first, cached=cached)
    if raw is not None and raw.exists():
        results["profile"] = profile_stages(raw)
        print("\nflow process CPU by stage (py-spy samples, first run):")
        for stage, share in results["profile"].items():
            print(f"  {share * 100:5.1f}%  {stage}")
    return results


if __name__ == "__main__":
    main()
