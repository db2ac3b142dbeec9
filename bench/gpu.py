"""GPU checks in one short run (under 8 minutes on one GPU): both engines in fp16, batch sizes 8/16/32.

    .venv/bin/python bench/gpu.py [--model base] [--batch-sizes 8,16,32] [--short-files 40] [--long-minutes 10]

Built from the committed speech (tests/fixtures/speech and samples/, with their known text): 40 short
files of one clip each and one long English file of rotating clips. Prints, per configuration, x realtime,
the ratio to openai-whisper fp16 (the PyTorch reference, one window at a time) and WER. Exits 2 when no
CUDA device is visible. `pytest -m requires_cuda` runs the GPU tests.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
SAMPLE_RATE = 16_000


def corpus(n_short: int, long_minutes: float) -> tuple[list[tuple[np.ndarray, str]], list[tuple[np.ndarray, str]]]:
    from speed import clips

    pool = [(pcm.astype(np.float32) / 32768.0, text) for pcm, text, _ in clips()]
    short = [pool[i % len(pool)] for i in range(n_short)]
    english = [(pcm.astype(np.float32) / 32768.0, text) for pcm, text, lang in clips() if lang == "en"]
    rng = random.Random(0)
    parts, texts, seconds = [], [], 0.0
    while seconds < long_minutes * 60:
        for pcm, text in rng.sample(english, len(english)):
            parts += [pcm, np.zeros(int(rng.uniform(0.3, 1.5) * SAMPLE_RATE), np.float32)]
            texts.append(text)
            seconds += len(pcm) / SAMPLE_RATE
    return short, [(np.concatenate(parts), " ".join(texts))]


def run(engine, options, files: list[tuple[np.ndarray, str]], workers: int) -> tuple[float, list[str]]:
    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        texts = list(pool.map(lambda f: engine.transcribe(f[0], options).text, files))
    return time.perf_counter() - started, texts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="base")
    parser.add_argument("--batch-sizes", default="8,16,32")
    parser.add_argument("--short-files", type=int, default=40)
    parser.add_argument("--long-minutes", type=float, default=10.0)
    parser.add_argument("--cache-dir", default=str(ROOT / "bench" / "out-gpu" / "cache"))
    args = parser.parse_args()

    from scheduler import words

    from batchscribe.engines import load_engine
    from batchscribe.options import TranscribeOptions, _cuda_available

    if not _cuda_available():
        print("no CUDA device visible: nothing to measure")
        return 2
    import jiwer

    cache = Path(args.cache_dir)
    short, long = corpus(args.short_files, args.long_minutes)
    configs = [("openai-whisper fp16", dict(engine="openai-whisper", batch_size=0), 1)]
    for size in (int(s) for s in args.batch_sizes.split(",")):
        configs.append((f"faster-whisper fp16 batch {size}", dict(engine="faster-whisper", batch_size=size), size))
    for title, files in (("short files", short), ("long file", long)):
        audio_s = sum(len(pcm) for pcm, _ in files) / SAMPLE_RATE
        print(f"\n{title}: {len(files)} files, {audio_s / 60:.1f} min ({args.model})")
        print(f"{'configuration':<32} {'wall s':>8} {'x realtime':>11} {'vs openai':>10} {'WER':>7}")
        reference_s = None
        for name, settings, workers in configs:
            options = TranscribeOptions(model=args.model, device="cuda", compute_type="float16", **settings).resolved()
            engine = load_engine(options, cache)
            run(engine, options, files[:1], 1)  # warm-up: CUDA context, kernels, allocator
            wall_s, texts = run(engine, options, files, workers if len(files) > 1 else 1)
            reference_s = reference_s or wall_s
            error = jiwer.wer([words(t) for _, t in files], [words(t) for t in texts])
            print(f"{name:<32} {wall_s:8.1f} {audio_s / wall_s:11.1f} {reference_s / wall_s:10.2f} {100 * error:6.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
