"""Search speed over a corpus: `batchscribe search` on 1,000 files' segments.

    flock /tmp/batchscribe-bench.lock .venv/bin/python bench/search.py --files 1000 --segments 300

Writes a segments dataset as batches write it (part files of a few files each, through SegmentsWriter),
with sentences made of the committed clips' words, then times a phrase search in-process (best and median
of 5) and as a command (`python -m flows.cli search`, process start included), before and after the
parts are merged into one.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FILES_PER_PART = 8  # a batch on 2 cores finishes a few files between two flushes


def corpus(root: str, files: int, segments: int, seed: int = 0) -> int:
    """Write `files` transcripts of `segments` segments each into root's dataset; returns the part count."""
    from batchscribe.segment_table import SegmentsWriter, part_files
    from batchscribe.transcript import Segment, Transcript

    texts = json.loads((ROOT / "tests/fixtures/speech/clips.json").read_text())
    vocabulary = " ".join(clip["text"] for clip in texts.values()).split()
    rng = random.Random(seed)
    for first in range(0, files, FILES_PER_PART):
        with SegmentsWriter(root, min_interval_s=3600.0) as writer:
            for n in range(first, min(first + FILES_PER_PART, files)):
                rows = tuple(
                    Segment(i, 4.0 * i, 4.0 * i + 3.5, " " + " ".join(rng.choices(vocabulary, k=rng.randint(6, 14))))
                    for i in range(segments)
                )
                writer.add(f"archive/{n // 100:02d}/talk-{n:04d}.mp3", Transcript("en", 0.9, 4.0 * segments, rows))
    return len(part_files(root))


def timed(root: str, phrase: str) -> dict[str, float]:
    from batchscribe.search import search_segments

    runs, hits = [], 0
    for _ in range(5):
        started = time.perf_counter()
        hits = search_segments(root, phrase).num_rows
        runs.append(time.perf_counter() - started)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "flows.cli", "search", root, phrase], capture_output=True, cwd=ROOT)
    command_s = time.perf_counter() - started
    assert done.returncode in (0, 1), done.stderr
    return {"hits": hits, "best_s": min(runs), "median_s": statistics.median(runs), "command_s": command_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--segments", type=int, default=300, help="segments a file (300: a 20-minute talk)")
    parser.add_argument("--phrase", default="the library")
    args = parser.parse_args()
    from batchscribe.segment_table import compact

    with tempfile.TemporaryDirectory() as root:
        started = time.perf_counter()
        parts = corpus(root, args.files, args.segments)
        took_s = time.perf_counter() - started
        print(f"wrote {args.files} files x {args.segments} segments in {parts} parts ({took_s:.1f} s)")
        size_mb = sum(f.stat().st_size for f in Path(root).rglob("*.parquet")) / 1e6
        print(f"dataset: {size_mb:.1f} MB on disk; cores: {os.cpu_count()}")
        for label in (f"{parts} parts", "merged into 1 part"):
            if label.startswith("merged"):
                compact(root)
            result = timed(root, args.phrase)
            print(
                f"{label}: {result['hits']} hits for {args.phrase!r}: in-process best {result['best_s']:.3f} s, "
                f"median {result['median_s']:.3f} s; command {result['command_s']:.2f} s"
            )


if __name__ == "__main__":
    main()
