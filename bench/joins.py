"""How much silence keeps words from bleeding across a join between two files' clips in one row.

    .venv/bin/python bench/joins.py [--clips 120] [--gaps 0.25,0.5,1.0,1.5]

The clips are the scheduler bench's English 1-3 s prompts (one voice talent, known text), packed into
shared rows by the real scheduler with each join gap in turn. Printed per gap: WER, words that landed in a
neighbour's transcript (a word of the neighbour's text that its own text lacks), clips left with no words,
and rows decoded.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from scheduler import build_clips, words  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=120)
    parser.add_argument("--gaps", default="0.25,0.5,1.0,1.5")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out-joins"))
    parser.add_argument("--show", action="store_true", help="print every clip whose words differ from its text")
    args = parser.parse_args()
    import jiwer
    from corpus import decode

    from batchscribe import packing
    from batchscribe.decoding import BatchDecoder
    from batchscribe.engines import load_engine
    from batchscribe.options import TranscribeOptions
    from batchscribe.scheduler import FileJob, WindowScheduler
    from batchscribe.windows import speech_windows

    out = Path(args.out)
    clips = [c for c in build_clips(out / "clips", args.clips * 2) if c["language"] == "en"][: args.clips]
    options = TranscribeOptions(device="cpu").resolved()
    engine = load_engine(options, out / "cache")
    audio = [decode(c["path"]).astype(np.float32) / 32768.0 for c in clips]
    print(f"\n{len(clips)} English clips of 1-3 s, packed into shared rows")
    print(f"{'gap s':>6} {'WER':>7} {'bled words':>11} {'empty clips':>12} {'rows':>5}")
    for gap in (float(g) for g in args.gaps.split(",")):
        packing.JOIN_GAP_S = gap
        scheduler = WindowScheduler(BatchDecoder(engine.model), start=False)
        futures = [
            scheduler.submit(
                FileJob(c["path"], "en"),
                speech_windows(a, vad=True),
                task="transcribe",
                initial_prompt=None,
                beam_size=5,
                temperatures=options.temperatures,
                batch_size=8,
            )  # fmt: skip
            for c, a in zip(clips, audio)
        ]
        scheduler.start()
        texts = ["".join(r.text for r in (f.result() for f in fs)) for fs in futures]
        bled = 0
        for i, text in enumerate(texts):
            own = set(words(clips[i]["text"]).split())
            near = set()
            for j in (i - 1, i + 1):
                if 0 <= j < len(clips):
                    near |= set(words(clips[j]["text"]).split())
            bled += sum(1 for w in words(text).split() if w not in own and w in near)
            if args.show and words(text) != words(clips[i]["text"]):
                print(f"  {Path(clips[i]['path']).name}: {words(clips[i]['text'])!r} -> {words(text)!r}")
        error = jiwer.wer([words(c["text"]) for c in clips], [words(t) or "-" for t in texts])
        empty = sum(1 for t in texts if not re.search(r"\w", t))
        print(f"{gap:6.2f} {100 * error:6.1f}% {bled:11d} {empty:12d} {sum(scheduler.batch_sizes):5d}")


if __name__ == "__main__":
    main()
