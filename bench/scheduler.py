"""Many short files and one long file: the window scheduler against its peers, side by side in one run.

    .venv/bin/python bench/scheduler.py [--short-files 40] [--long-minutes 8] [--out bench/out-scheduler]

The corpus is real recorded speech with known text: the US English and Mexican Spanish voice prompts of
Debian's asterisk-core-sounds packages (Allison Smith, CC-BY-SA-3.0), joined with short pauses into clips
of 8-20 s and into one long file in which no prompt repeats within a few minutes. Every configuration runs
in its own child process over the same files and the same base weights:

  (a)  the Bacalhau example's approach: openai-whisper fp32, beam 5, fallback, one file after another
  (b1) faster-whisper's sequential decoder with its own defaults, one file after another (the careful peer)
  (b2) faster-whisper's BatchedInferencePipeline, batch 8, its defaults, one file after another
  (c)  batchscribe's engine defaults: the window scheduler, 8 files in flight
  (d)  the whole batchscribe flow with its defaults (short files only): orchestration on top of (c)

It prints x realtime, the ratio to the fastest peer (b2), WER (lower-cased, punctuation and accents
stripped) and peak RSS. Machines are noisy: read the ratios, not the absolute seconds.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SAMPLE_RATE = 16_000
VOICES = {  # language -> (prompt folder, transcript list)
    "en": (
        "/usr/share/asterisk/sounds/en_US_f_Allison",
        "/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz",
    ),
    "es": (
        "/usr/share/asterisk/sounds/es_MX_f_Allison",
        "/usr/share/doc/asterisk-core-sounds-es/core-sounds-es.txt.gz",
    ),
}
CONFIGS = (
    "a-bacalhau-example",
    "b1-faster-sequential",
    "b2-faster-batched8",
    "c-batchscribe-scheduler",
    "d-batchscribe-flow",
)


# --- corpus ------------------------------------------------------------------------------------------------


def ffmpeg() -> str:
    from batchscribe.audio import ffmpeg_exe

    return ffmpeg_exe()


def decode(path: Path | str) -> np.ndarray:
    cmd = [ffmpeg(), "-nostdin", "-v", "error", "-i", f"file:{path}", "-f", "s16le", "-ac", "1", "-ar", "16000", "-"]
    return np.frombuffer(subprocess.run(cmd, check=True, capture_output=True).stdout, "<i2")


def encode(pcm: np.ndarray, dest: Path) -> None:
    cmd = [ffmpeg(), "-nostdin", "-v", "error", "-y", "-f", "s16le", "-ac", "1", "-ar", "16000", "-i", "-"]
    subprocess.run([*cmd, "-b:a", "64k", f"file:{dest}"], input=pcm.astype("<i2").tobytes(), check=True)


def prompts(language: str) -> list[tuple[np.ndarray, str]]:
    """Every spoken prompt of one voice whose text is plain words (no digits, no sound-effect notes)."""
    folder, listing = VOICES[language]
    if not Path(listing).exists():  # the text lists' package may conflict with installed prompts: unpacked here
        listing = str(ROOT / "bench" / "voices" / listing.lstrip("/"))
    if not Path(listing).exists():
        raise SystemExit(f"missing {listing}: `make bench` unpacks asterisk-core-sounds-{language} there")
    result = []
    for line in gzip.open(listing, "rt", encoding="utf-8", errors="replace"):
        name, sep, text = line.partition(":")
        text = text.strip()
        wav = Path(folder) / f"{name.strip()}.wav"
        if sep and wav.exists() and len(text.split()) >= 3 and not re.search(r"[\d\[\]<>/()]", text):
            result.append((decode(wav), text))
    return result


def build_corpus(folder: Path, n_short: int, long_minutes: float, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Short clips of 8-20 s (three in four English, the rest Spanish) and one long English file."""
    rng = random.Random(seed)
    pools = {lang: [p for p in prompts(lang) if len(p[0]) < 15 * SAMPLE_RATE] for lang in VOICES}
    folder.mkdir(parents=True, exist_ok=True)

    def gap() -> np.ndarray:
        return np.zeros(int(rng.uniform(0.3, 0.9) * SAMPLE_RATE), "<i2")

    def join(pool: list, target_s: float, order: list[int], max_s: float) -> tuple[np.ndarray, str]:
        parts, texts, seconds = [], [], 0.0
        while seconds < target_s and order:
            pcm, text = pool[order.pop()]
            if seconds + len(pcm) / SAMPLE_RATE > max_s:
                continue
            parts += [pcm, gap()]
            texts.append(text)
            seconds += len(pcm) / SAMPLE_RATE + len(parts[-1]) / SAMPLE_RATE
        return np.concatenate(parts), " ".join(texts)

    short = []
    orders = {lang: rng.sample(range(len(p)), len(p)) for lang, p in pools.items()}
    for i in range(n_short):
        lang = "es" if i % 4 == 3 else "en"
        if len(orders[lang]) < 8:
            orders[lang] = rng.sample(range(len(pools[lang])), len(pools[lang]))
        pcm, text = join(pools[lang], rng.uniform(8, 16), orders[lang], max_s=19.5)
        dest = folder / f"short_{i:02d}_{lang}.mp3"
        encode(pcm, dest)
        short.append({"path": str(dest), "text": text, "language": lang, "duration_s": len(pcm) / SAMPLE_RATE})
    long = []
    if long_minutes > 0:
        order = rng.sample(range(len(pools["en"])), len(pools["en"]))
        pcm, text = join(pools["en"], long_minutes * 60, order * 4, max_s=long_minutes * 60 + 30)
        dest = folder / "long_en.mp3"
        encode(pcm, dest)
        long.append({"path": str(dest), "text": text, "language": "en", "duration_s": len(pcm) / SAMPLE_RATE})
    return short, long


# --- one configuration, in a child process -----------------------------------------------------------------


def run_config(name: str, files: list[dict], cache_dir: Path, output: Path) -> dict:
    """Transcribe `files` with configuration `name`; returns texts and wall time (model load included)."""
    from batchscribe import weights
    from batchscribe.options import TranscribeOptions

    started = time.perf_counter()
    model_dir = str(weights.ct2_model_dir("base", cache_dir))
    if name == "a-bacalhau-example":
        import whisper

        model = weights.load_openai_model(Path(model_dir), cache_dir, "cpu")
        texts = [whisper.transcribe(model, f["path"], beam_size=5, best_of=5, fp16=False)["text"] for f in files]
    elif name.startswith("b"):
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        from batchscribe.engines.faster import cpu_threads

        model = WhisperModel(model_dir, device="cpu", compute_type="int8", cpu_threads=cpu_threads())
        batched = BatchedInferencePipeline(model)
        texts = []
        for f in files:
            audio = decode(f["path"]).astype(np.float32) / 32768.0
            if name == "b1-faster-sequential":
                segments, _ = model.transcribe(audio)
            else:
                segments, _ = batched.transcribe(audio, batch_size=8)
            texts.append("".join(s.text for s in segments))
    elif name == "c-batchscribe-scheduler":
        from batchscribe.audio import decode_audio
        from batchscribe.engines import load_engine

        options = TranscribeOptions(device="cpu").resolved()
        engine = load_engine(options, cache_dir)

        def one(f: dict) -> str:
            audio = decode_audio(Path(f["path"]), output / "pcm" / (Path(f["path"]).name + ".pcm"))
            return engine.transcribe_file(Path(audio.path), options).transcript.text

        with ThreadPoolExecutor(8) as pool:  # the flow's default number of files in flight
            texts = list(pool.map(one, files))
    else:
        from speed import flow_texts

        texts = flow_texts(files, output, cache_dir)
    return {"wall_s": time.perf_counter() - started, "texts": texts}


def child(name: str, files: list[dict], out: Path, base_cache: Path, resume: bool = False) -> dict:
    """Run one configuration in a fresh process; its result with peak RSS (MB). With `resume`, a result
    this output folder already holds is read back instead."""
    cache = out / f"cache-{name}-{len(files)}"
    if not cache.exists():
        cache.mkdir()
        (cache / "models").symlink_to(base_cache / "models", target_is_directory=True)
    spec = out / f"spec-{name}-{len(files)}.json"
    spec.write_text(json.dumps({"files": files, "cache_dir": str(cache), "output": str(out / "outputs" / name)}))
    result_path = spec.with_suffix(".result.json")
    if resume and result_path.exists():
        return json.loads(result_path.read_text())
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", name, "--spec", str(spec), "--result", str(result_path)]
    )
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"{name} failed with status {status}")
    result = json.loads(result_path.read_text())
    result["peak_rss_mb"] = usage.ru_maxrss / 1024
    result_path.write_text(json.dumps(result))
    return result


# --- scoring -----------------------------------------------------------------------------------------------


def words(text: str) -> str:
    text = "".join(c for c in unicodedata.normalize("NFKD", text.lower()) if not unicodedata.combining(c))
    return " ".join(re.sub(r"[^\w]+", " ", text.replace("'", "")).split())


def wer(files: list[dict], texts: list[str]) -> float:
    import jiwer

    return jiwer.wer([words(f["text"]) for f in files], [words(t) for t in texts])


def table(title: str, files: list[dict], rows: list[tuple[str, dict]]) -> None:
    audio_s = sum(f["duration_s"] for f in files)
    peer = dict(rows).get("b2-faster-batched8")
    print(f"\n{title}: {len(files)} files, {audio_s / 60:.1f} min of real speech")
    print(f"{'configuration':<26} {'wall s':>8} {'x realtime':>10} {'vs (b2)':>8} {'WER':>7} {'peak RSS MB':>12}")
    for name, r in rows:
        ratio = peer["wall_s"] / r["wall_s"] if peer else float("nan")
        print(
            f"{name:<26} {r['wall_s']:8.1f} {audio_s / r['wall_s']:10.1f} {ratio:8.2f} "
            f"{100 * wer(files, r['texts']):6.1f}% {r.get('peak_rss_mb', float('nan')):12.0f}"
        )
    results = dict(rows)
    if "c-batchscribe-scheduler" in results and "d-batchscribe-flow" in results:
        flow, bare = results["d-batchscribe-flow"]["wall_s"], results["c-batchscribe-scheduler"]["wall_s"]
        print(f"whole flow / bare scheduler: {flow / bare:.3f}x (target <= 1.05x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short-files", type=int, default=40)
    parser.add_argument("--long-minutes", type=float, default=8.0)
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out-scheduler"))
    parser.add_argument("--resume", action="store_true", help="keep --out and reuse the results it holds")
    parser.add_argument("--child"), parser.add_argument("--spec"), parser.add_argument("--result")
    args = parser.parse_args()
    if args.child:
        spec = json.loads(Path(args.spec).read_text())
        result = run_config(args.child, spec["files"], Path(spec["cache_dir"]), Path(spec["output"]))
        Path(args.result).write_text(json.dumps(result))
        return

    out = Path(args.out)
    if not args.resume:
        shutil.rmtree(out, ignore_errors=True)
    (out / "bin").mkdir(parents=True, exist_ok=True)
    from batchscribe.server import OFFLINE_ENV

    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    if not (out / "bin" / "ffmpeg").exists():
        (out / "bin" / "ffmpeg").symlink_to(
            ffmpeg()
        )  # openai-whisper's loader (the Bacalhau example's path) calls `ffmpeg`
    os.environ["PATH"] = f"{out / 'bin'}{os.pathsep}{os.environ['PATH']}"
    from speed import start_server

    server, url = start_server(out / "prefect-home")
    os.environ["PREFECT_API_URL"] = url
    try:
        from batchscribe import weights

        base_cache = out / "cache"
        weights.openai_checkpoint(weights.ct2_model_dir("base", base_cache), base_cache)  # outside the timings
        short, long = build_corpus(out / "corpus", args.short_files, args.long_minutes)
        configs = [c for c in args.configs.split(",") if c]
        table("short files", short, [(c, child(c, short, out, base_cache, args.resume)) for c in configs])
        if long:
            rows = [(c, child(c, long, out, base_cache, args.resume)) for c in configs if c != "d-batchscribe-flow"]
            table("long file", long, rows)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
