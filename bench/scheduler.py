"""Many short clips, short files and one long talk: the window scheduler against its peers, side by side.

    .venv/bin/python bench/scheduler.py [--clips 300] [--short-files 40] [--long-minutes 10]

The corpus is real recorded speech with known text (bench/corpus.py: five voice talents in English,
Mexican Spanish, Canadian French, Italian and Russian):

  clips   unique prompts of 1-3 s, three in five English, the rest in the other four languages (voice
          notes, call snippets, dataset clips); also run at a third of the count, for the per-file cost
  short   prompts joined with short pauses into files of 8-25 s, three in four English, the rest Spanish
  long    a 10-minute English talk drawn from 60 sentences, so that many repeat (as in menus, lists and
          lectures that restate a point): no corpus is arranged so that the guard never runs

Every configuration runs in its own child process over the same files and the same base weights:

  (a)  the Bacalhau example's approach: openai-whisper fp32, beam 5, fallback, one file after another
  (b1) faster-whisper's sequential decoder with its own defaults, one file after another (the careful peer)
  (b2) faster-whisper's BatchedInferencePipeline, batch 8, its defaults, one file after another
  (c)  batchscribe's engine defaults: the window scheduler, 32 files in flight
  (d)  the whole batchscribe flow with its defaults (short files only): orchestration on top of (c)

It prints x realtime, the ratio to the fastest peer (b2), WER (lower-cased, punctuation and accents
stripped) and peak RSS. Peers' times leave out loading the model; (c) and (d) count their whole run.
Machines are noisy: read the ratios, not the absolute seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
import unicodedata
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from children import environment, resolve  # noqa: E402
from corpus import SAMPLE_RATE, decode, encode, ffmpeg, pause, prompts  # noqa: E402

CONFIGS = (
    "a-bacalhau-example",
    "b1-faster-sequential",
    "b2-faster-batched8",
    "c-batchscribe-scheduler",
    "d-batchscribe-flow",
)
WORKERS = 32  # files in flight for (c): the flow's default


# --- corpus ------------------------------------------------------------------------------------------------


def build_clips(folder: Path, n: int, seed: int = 0) -> list[dict]:
    """`n` unique prompts of 1-3 s, three in five English."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    pools = {lang: [p for p in prompts(lang) if SAMPLE_RATE <= len(p[0]) <= 3 * SAMPLE_RATE] for lang in
             ("en", "es", "fr", "it", "ru")}  # fmt: skip
    for pool in pools.values():
        rng.shuffle(pool)
    files = []
    for i in range(n):
        lang = "en" if i % 5 < 3 else ("es", "fr", "it", "ru")[(i // 5) % 4]
        if not pools[lang]:
            lang = "en"
        pcm, text = pools[lang].pop()
        dest = folder / f"clip_{i:03d}_{lang}.mp3"
        encode(pcm, dest)
        files.append({"path": str(dest), "text": text, "language": lang, "duration_s": len(pcm) / SAMPLE_RATE})
    return files


def build_corpus(folder: Path, n_short: int, long_minutes: float, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Short files of 8-25 s (three in four English, the rest Spanish) and one long English talk."""
    rng = random.Random(seed)
    pools = {lang: [p for p in prompts(lang) if len(p[0]) < 15 * SAMPLE_RATE] for lang in ("en", "es")}
    folder.mkdir(parents=True, exist_ok=True)

    def join(pool: list, target_s: float, order: list[int], max_s: float) -> tuple[np.ndarray, str]:
        parts, texts, seconds = [], [], 0.0
        while seconds < target_s and order:
            pcm, text = pool[order.pop()]
            if seconds + len(pcm) / SAMPLE_RATE > max_s:
                continue
            parts += [pcm, pause(rng.uniform(0.3, 0.9))]
            texts.append(text)
            seconds += len(pcm) / SAMPLE_RATE + len(parts[-1]) / SAMPLE_RATE
        return np.concatenate(parts), " ".join(texts)

    short = []
    orders = {lang: rng.sample(range(len(p)), len(p)) for lang, p in pools.items()}
    talk_state = rng.getstate()  # the talk is drawn from here, so it is the same whatever n_short is
    for i in range(n_short):
        lang = "es" if i % 4 == 3 else "en"
        if len(orders[lang]) < 8:
            orders[lang] = rng.sample(range(len(pools[lang])), len(pools[lang]))
        pcm, text = join(pools[lang], rng.uniform(8, 22), orders[lang], max_s=25)
        dest = folder / f"short_{i:02d}_{lang}.mp3"
        encode(pcm, dest)
        short.append({"path": str(dest), "text": text, "language": lang, "duration_s": len(pcm) / SAMPLE_RATE})
    long = []
    if long_minutes > 0:
        rng.setstate(talk_state)
        talk = rng.sample([p for p in pools["en"] if len(p[0]) > 2 * SAMPLE_RATE], 60)  # sentences repeat
        order = [rng.randrange(len(talk)) for _ in range(int(long_minutes * 60 / 2))]
        pcm, text = join(talk, long_minutes * 60, order, max_s=long_minutes * 60 + 30)
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
        started = time.perf_counter()  # the model's load is not counted
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

        with ThreadPoolExecutor(WORKERS) as pool:  # the flow's default number of files in flight
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
        [sys.executable, __file__, "--child", name, "--spec", str(spec), "--result", str(result_path)],
        env=environment(name),
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


def per_file(clips: list[dict], out: Path, base_cache: Path, resume: bool) -> None:
    """The scheduler's cost per file at a third of the clips against all of them (it should not grow)."""
    third = clips[: len(clips) // 3]
    small = child("c-batchscribe-scheduler", third, out, base_cache, resume)
    full = json.loads((out / f"spec-c-batchscribe-scheduler-{len(clips)}.result.json").read_text())
    small_s, full_s = small["wall_s"] / len(third), full["wall_s"] / len(clips)
    print(f"per-file cost: {1000 * small_s:.0f} ms at {len(third)} clips, {1000 * full_s:.0f} ms at {len(clips)}: "
          f"{full_s / small_s:.2f}x (target <= 1.1x)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=300)
    parser.add_argument("--short-files", type=int, default=40)
    parser.add_argument("--long-minutes", type=float, default=10.0)
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
    from batchscribe import weights

    base_cache = out / "cache"
    weights.openai_checkpoint(weights.ct2_model_dir("base", base_cache), base_cache)  # outside the timings
    short, long = build_corpus(out / "corpus", args.short_files, args.long_minutes)
    configs = resolve(args.configs, CONFIGS)

    def run(name: str, files: list[dict]) -> tuple[str, dict]:
        with prefect_api(name, out / "prefect-home"):
            return name, child(name, files, out, base_cache, args.resume)

    if args.clips:
        clips = build_clips(out / "corpus" / "clips", args.clips)
        names = [c for c in configs if c.startswith(("b1", "b2", "c"))]
        table("clips of 1-3 s", clips, [run(c, clips) for c in names])
        if "c-batchscribe-scheduler" in names:
            per_file(clips, out, base_cache, args.resume)
    table("short files", short, [run(c, short) for c in configs])
    if long:
        table("long file", long, [run(c, long) for c in configs if c != "d-batchscribe-flow"])


@contextmanager
def prefect_api(name: str, home: Path) -> Iterator[None]:
    """A Prefect server of the bench's own while configuration `name` runs, when it needs one: only the flow
    (d) does, and the others are timed without a process beside them that they do not use."""
    if name != "d-batchscribe-flow":
        yield
        return
    from speed import start_server

    server, url = start_server(home)
    os.environ["PREFECT_API_URL"] = url
    try:
        yield
    finally:
        del os.environ["PREFECT_API_URL"]
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
