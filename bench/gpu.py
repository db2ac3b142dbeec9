"""GPU checks in one short run (under 8 minutes on one GPU): both engines in fp16, batch sizes 8/16/32,
and the whole flow on many short files.

    .venv/bin/python bench/gpu.py [--model base] [--batch-sizes 8,16,32] [--short-files 40] [--long-minutes 10]
                                  [--flow-clips 300] [--clips-dir DIR]

Built from the committed speech (tests/fixtures/speech and samples/, with their known text): 40 short
files of one clip each and one long English file of rotating clips. Prints, per configuration, x realtime,
the ratio to openai-whisper fp16 (the PyTorch reference, one window at a time) and WER. Then the whole
flow with its defaults (cross-file rows, 32 files in flight) over `--flow-clips` clips of 1-3 s: the clips
`bench/scheduler.py` wrote (`--clips-dir`, e.g. bench/out-scheduler/corpus/clips, carried to a GPU machine
that has no voice packages), else 2-s pieces of the committed speech; prints files a second and ms a file.
Exits 2 when no CUDA device is visible. `pytest -m requires_cuda` runs the GPU tests.
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


def flow_row(n: int, clips_dir: str, out: Path) -> None:
    """The whole flow with its defaults on CUDA over `n` short files: files a second and ms a file."""
    import os

    from speed import flow_texts, start_server

    from batchscribe.server import OFFLINE_ENV

    folder = Path(clips_dir) if clips_dir else None
    paths = sorted(folder.glob("clip_*.mp3"))[:n] if folder and folder.is_dir() else []
    if not paths:
        import subprocess

        from speed import clips

        from batchscribe.audio import ffmpeg_exe

        pieces = [pcm[i : i + 2 * SAMPLE_RATE] for pcm, _, _ in clips() for i in range(0, len(pcm), 2 * SAMPLE_RATE)]
        (out / "clips").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            dest = out / "clips" / f"clip_{i:03d}.wav"
            cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-f", "s16le", "-ar", "16000", "-ac", "1", "-i", "-"]
            subprocess.run([*cmd, str(dest)], input=pieces[i % len(pieces)].astype("<i2").tobytes(), check=True)
            paths.append(dest)
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    server, url = start_server(out / "prefect-home")
    os.environ["PREFECT_API_URL"] = url
    try:
        files = [{"path": str(p)} for p in paths]
        started = time.perf_counter()
        flow_texts(files, out / "flow-output", out / "flow-cache")
        wall_s = time.perf_counter() - started
    finally:
        server.terminate()
    print(f"\nwhole flow, defaults on CUDA: {len(files)} short files in {wall_s:.1f} s: "
          f"{len(files) / wall_s:.1f} files/s, {1000 * wall_s / len(files):.0f} ms a file")  # fmt: skip


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
    parser.add_argument("--flow-clips", type=int, default=300)
    parser.add_argument("--clips-dir", default="")
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
    if args.flow_clips:
        flow_row(args.flow_clips, args.clips_dir, cache.parent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
