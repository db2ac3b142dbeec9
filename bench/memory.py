"""Peak memory on long files: transcription runs in fixed windows, so peak RSS should not grow with duration.

    .venv/bin/python bench/memory.py --hours 0.25 1 10

For each duration it writes a raw 16 kHz PCM file (what `tasks/audio.py` decodes to; ffmpeg streams that
to disk in constant memory) holding a speech clip every 90 s over low noise, then transcribes it in a
child process with the default CPU settings and prints peak RSS and x realtime.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SAMPLE_RATE = 16_000
SPEECH_EVERY_S = 90
CHUNK_S = 600  # the synthetic file is written 10 minutes at a time


def write_long_pcm(dest: Path, hours: float) -> float:
    """A raw s16le file of `hours`: English clips every 90 s over quiet noise. Returns its duration."""
    from batchscribe.audio import decode_audio

    clips = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("en.wav", "en2.mp3"):
            audio = decode_audio(ROOT / "tests/fixtures/speech" / name, Path(tmp) / f"{name}.pcm")
            clips.append(np.fromfile(audio.path, dtype="<i2"))
    total = int(hours * 3600 * SAMPLE_RATE)
    rng = np.random.default_rng(0)
    with dest.open("wb") as fh:
        for start in range(0, total, CHUNK_S * SAMPLE_RATE):
            chunk = rng.normal(0, 30, min(CHUNK_S * SAMPLE_RATE, total - start)).astype("<i2")
            for at in range(0, len(chunk), SPEECH_EVERY_S * SAMPLE_RATE):
                clip = clips[(start + at) // (SPEECH_EVERY_S * SAMPLE_RATE) % len(clips)]
                end = min(at + len(clip), len(chunk))
                chunk[at:end] = clip[: end - at]
            fh.write(chunk.tobytes())
    return total / SAMPLE_RATE


def child(pcm: str, cache_dir: str) -> dict:
    from batchscribe.engines import load_engine
    from batchscribe.options import TranscribeOptions

    options = TranscribeOptions(device="cpu").resolved()
    engine = load_engine(options, Path(cache_dir))
    started = time.perf_counter()
    result = engine.transcribe_file(Path(pcm), options)  # the transcribe task's own path: streamed windows
    return {"wall_s": time.perf_counter() - started, "segments": len(result.transcript.segments)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, nargs="+", default=[0.25, 1.0])
    parser.add_argument("--child", nargs=2, metavar=("PCM", "CACHE"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    from batchscribe.options import default_cache_dir

    print(f"{'duration h':>10} {'x realtime':>10} {'segments':>9} {'peak RSS MB':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        for hours in args.hours:
            pcm = Path(tmp) / f"{hours}h.pcm"
            duration_s = write_long_pcm(pcm, hours)
            proc = subprocess.Popen(
                [sys.executable, __file__, "--child", str(pcm), str(default_cache_dir())], stdout=subprocess.PIPE
            )
            out = proc.stdout.read()
            _, status, usage = os.wait4(proc.pid, 0)
            if status:
                raise SystemExit(f"{hours} h failed")
            result = json.loads(out)
            print(
                f"{hours:10.2f} {duration_s / result['wall_s']:10.1f} {result['segments']:9d} "
                f"{usage.ru_maxrss / 1024:12.0f}"
            )
            pcm.unlink()


if __name__ == "__main__":
    main()
