"""Hard recordings and a long repetitive talk: batchscribe against its peers, side by side in one run.

    .venv/bin/python bench/hard.py [--out bench/out-hard] [--long-minutes 10]

Every file is real recorded speech with known text (bench/corpus.py: five voice talents), put through what
real recordings go through:

  phone_it      Italian, band-limited to 300-3400 Hz, 8 kHz mu-law (a phone line)
  noise_en      English under pink noise at 5 dB SNR
  far_fr        French 30 dB down with room reverberation and a noise floor (a far microphone)
  music_es      Spanish over a real music bed 5 dB under the speech
  gaps_en       English sentences between 15-45 s of room noise
  menu_en       a phone menu read again and again (sentences that repeat, as menus, lists and choruses do)
  turns_en      a conversation of short turns, two voices (the second one pitched down), slightly overlapping
  long_en       a 10-minute talk drawn from a small set of sentences, so that many repeat (the long-file row)

Configurations, each in its own child process over the same files and base weights:
  (b1) faster-whisper's sequential decoder, its defaults (beam 5, temperature fallback): the careful peer
  (b2) faster-whisper's BatchedInferencePipeline, batch 8, its defaults: the fastest peer
  (c)  batchscribe's engine defaults, all files in flight (8 workers), run twice with the files in
       different orders, so that every window shares its batch with different windows: same words or not

Printed per file: WER, inserted and deleted words, invented phrases (two or more consecutive words in
neither the reference nor either peer's output), and per configuration x realtime and the ratio to (b2);
for (c) the windows decoded again by the guard and the time they cost, and the seconds marked unsure.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from children import environment, resolve  # noqa: E402
from corpus import SAMPLE_RATE, encode, ffmpeg, music, pause, prompts  # noqa: E402

CONFIGS = ("b1-faster-sequential", "b2-faster-batched8", "c-batchscribe", "c-batchscribe-again")


# --- corpus ------------------------------------------------------------------------------------------------


def _join(rng: random.Random, pool: list, seconds: float, gap: tuple[float, float]) -> tuple[list, str]:
    """Prompts of `pool` drawn without repeats until `seconds`, as (samples, text) pieces and the text."""
    order = rng.sample(range(len(pool)), len(pool))
    parts, texts, total = [], [], 0.0
    while total < seconds and order:
        pcm, text = pool[order.pop()]
        parts += [pcm, pause(rng.uniform(*gap))]
        texts.append(text)
        total += (len(pcm) + len(parts[-1])) / SAMPLE_RATE
    return parts, " ".join(texts)


def _speech(parts: list) -> np.ndarray:
    return np.concatenate(parts).astype(np.float32)


def _pink(n: int, rng: np.random.Generator) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1))
    noise = np.fft.irfft(spectrum, n)
    return noise / np.sqrt(np.mean(noise**2))


def _active_rms(x: np.ndarray) -> float:
    frames = x[: len(x) // 160 * 160].reshape(-1, 160)
    energy = (frames**2).mean(axis=1)
    return float(np.sqrt(energy[energy > 0.01 * energy.max()].mean()))


def _int16(x: np.ndarray) -> np.ndarray:
    peak = np.abs(x).max()
    if peak > 32000:
        x = x * (32000 / peak)
    return x.astype("<i2")


def build(folder: Path, long_minutes: float, seed: int = 0) -> list[dict]:
    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    files: list[dict] = []

    def add(name: str, pcm: np.ndarray, text: str, language: str, *args: str, suffix: str = ".mp3") -> None:
        dest = folder / f"{name}{suffix}"
        encode(pcm, dest, *args)
        files.append({"name": name, "path": str(dest), "text": text, "language": language,
                      "duration_s": len(pcm) / SAMPLE_RATE})  # fmt: skip

    parts, text = _join(rng, prompts("it"), 90, (0.4, 0.9))
    band = ["-af", "highpass=f=300,lowpass=f=3400", "-ar", "8000", "-c:a", "pcm_mulaw"]
    add("phone_it", _int16(_speech(parts)), text, "it", *band, suffix=".wav")

    parts, text = _join(rng, prompts("en"), 90, (0.4, 0.9))
    speech = _speech(parts)
    noise = _pink(len(speech), nrng) * _active_rms(speech) / 10 ** (5 / 20)
    add("noise_en", _int16(speech + noise), text, "en")

    parts, text = _join(rng, prompts("fr"), 90, (0.4, 0.9))
    speech = _speech(parts) * 10 ** (-30 / 20)
    t = np.arange(int(0.6 * SAMPLE_RATE)) / SAMPLE_RATE
    response = nrng.standard_normal(len(t)) * np.exp(-6.9 * t / 0.6)  # RT60 0.6 s
    response[0] = 8.0  # the direct path
    wet = np.convolve(speech, response / np.abs(response).sum() * 4)[: len(speech)]
    floor = _pink(len(wet), nrng) * _active_rms(wet) / 10 ** (20 / 20)
    add("far_fr", _int16(wet + floor), text, "fr")

    parts, text = _join(rng, prompts("es"), 90, (0.4, 0.9))
    speech = _speech(parts)
    bed = np.resize(music().astype(np.float32), len(speech))
    add("music_es", _int16(speech + bed * _active_rms(speech) / _active_rms(bed) / 10 ** (5 / 20)), text, "es")

    pool = prompts("en")
    sentences = [p for p in pool if len(p[1].split()) >= 6]
    order = rng.sample(range(len(sentences)), 8)
    room = _pink(SAMPLE_RATE * 60, nrng) * 30  # about -60 dBFS of room noise
    parts, texts = [], []
    for i in order:
        gap = room[: int(rng.uniform(15, 45) * SAMPLE_RATE)]
        parts += [gap, sentences[i][0].astype(np.float32)]
        texts.append(sentences[i][1])
    parts.append(room[: 10 * SAMPLE_RATE])
    add("gaps_en", _int16(np.concatenate(parts)), " ".join(texts), "en")

    menu = [p for p in pool if "pound" in p[1] or "press" in p[1].lower() or "please" in p[1].lower()][:8]
    parts, texts = [], []
    while sum(len(p) for p in parts) < 150 * SAMPLE_RATE:
        pcm, sentence = menu[rng.randrange(len(menu))]
        parts += [pcm, pause(rng.uniform(0.3, 0.8))]
        texts.append(sentence)
    add("menu_en", _int16(_speech(parts)), " ".join(texts), "en")

    short = [p for p in pool if len(p[0]) < 3 * SAMPLE_RATE]
    order = rng.sample(range(len(short)), 40)
    timeline, texts, at = np.zeros(SAMPLE_RATE * 200, np.float32), [], SAMPLE_RATE // 2
    for turn, i in enumerate(order):
        pcm = short[i][0].astype(np.float32)
        if turn % 2:  # the second voice: pitched down a fourth, same length
            pcm = np.interp(np.arange(len(pcm)) * 0.75, np.arange(len(pcm)), pcm)
        timeline[at : at + len(pcm)] += pcm
        texts.append(short[i][1])
        at += len(pcm) + int(rng.uniform(-0.15, 0.4) * SAMPLE_RATE)
    add("turns_en", _int16(timeline[: at + SAMPLE_RATE]), " ".join(texts), "en")

    if long_minutes > 0:
        talk = rng.sample([p for p in pool if len(p[0]) > 2 * SAMPLE_RATE], 60)  # a small set: sentences repeat
        parts, texts = [], []
        while sum(len(p) for p in parts) < long_minutes * 60 * SAMPLE_RATE:
            pcm, sentence = talk[rng.randrange(len(talk))]
            parts += [pcm, pause(rng.uniform(0.3, 0.9))]
            texts.append(sentence)
        add("long_en", _int16(_speech(parts)), " ".join(texts), "en")
    return files


# --- one configuration, in a child process -----------------------------------------------------------------


def run_config(name: str, files: list[dict], cache_dir: Path, output: Path) -> dict:
    from batchscribe import weights
    from batchscribe.audio import decode_audio
    from batchscribe.options import TranscribeOptions

    started = time.perf_counter()
    model_dir = str(weights.ct2_model_dir("base", cache_dir))
    rows: list[dict] = []
    if name.startswith("b"):
        from corpus import decode
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        from batchscribe.engines.faster import cpu_threads

        model = WhisperModel(model_dir, device="cpu", compute_type="int8", cpu_threads=cpu_threads())
        batched = BatchedInferencePipeline(model)
        for f in files:
            audio = decode(f["path"]).astype(np.float32) / 32768.0
            if name == "b1-faster-sequential":
                segments, _ = model.transcribe(audio)
            else:
                segments, _ = batched.transcribe(audio, batch_size=8)
            rows.append({"text": "".join(s.text for s in segments)})
    else:
        from batchscribe.engines import load_engine

        options = TranscribeOptions(device="cpu").resolved()
        engine = load_engine(options, cache_dir)
        order = list(range(len(files)))
        if name.endswith("again"):
            random.Random(1).shuffle(order)

        def one(i: int) -> tuple[int, dict]:
            f = files[i]
            audio = decode_audio(Path(f["path"]), output / "pcm" / (Path(f["path"]).name + ".pcm"))
            result = engine.transcribe_file(Path(audio.path), options)
            return i, {
                "text": result.transcript.text,
                "windows": result.windows,
                "redecoded": result.redecoded_windows,
                "guard_s": result.guard_s,
                "unsure_s": result.transcript.unsure_s,
                "unsure_text": " ".join(seg.text for seg in result.transcript.segments if seg.unsure),
                "words": result.transcript.text,
            }

        with ThreadPoolExecutor(8) as pool:  # the flow's default number of files in flight
            done = dict(pool.map(one, order))
        rows = [done[i] for i in range(len(files))]
    return {"wall_s": time.perf_counter() - started, "rows": rows}


def child(name: str, files: list[dict], out: Path, base_cache: Path) -> dict:
    cache = out / f"cache-{name}"
    if not cache.exists():
        cache.mkdir()
        (cache / "models").symlink_to(base_cache / "models", target_is_directory=True)
    spec = out / f"spec-{name}.json"
    spec.write_text(json.dumps({"files": files, "cache_dir": str(cache), "output": str(out / "outputs" / name)}))
    result_path = spec.with_suffix(".result.json")
    argv = [sys.executable, __file__, "--child", name, "--spec", str(spec), "--result", str(result_path)]
    proc = subprocess.Popen(argv, env=environment(name))
    _, status, _ = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"{name} failed with status {status}")
    return json.loads(result_path.read_text())


# --- scoring -----------------------------------------------------------------------------------------------


def normalized(text: str, language: str) -> str:
    """Text as the Whisper paper scores it: Whisper's English normalizer for English (spelling, contractions,
    numbers), its basic one elsewhere with accents stripped and numbers in words written as digits
    (text2num: French, Spanish, Italian), so that "20" against "venti" is no error."""
    if language == "en":
        return _normalizers()[0](text)
    text = text.replace("'", "").replace("’", "")  # an elision is one word: "qu'en", "l'hygiene"
    if language in NUMBER_LANGUAGES:
        from text_to_num import alpha2digit

        text = alpha2digit(text, language, threshold=0)  # "zero" too, as "0"
    return _normalizers()[1](text)


@functools.cache
def _normalizers() -> tuple:
    """Whisper's English and basic normalizers, built once (the English one reads its spelling table)."""
    from whisper.normalizers import BasicTextNormalizer, EnglishTextNormalizer

    return EnglishTextNormalizer(), BasicTextNormalizer(remove_diacritics=True)


NUMBER_LANGUAGES = ("fr", "es", "it")  # text2num writes their numbers as digits


def invented(reference: str, hypothesis: str, others: list[str], language: str) -> list[str]:
    """Inserted phrases: runs of two or more consecutive words that the alignment to the reference inserts
    (no reference word stands for them) and whose word pairs appear in neither the reference nor any other
    output. A misheard word (a substitution) is an error, not an invention, and is counted by WER."""
    import jiwer

    ref, hyp = normalized(reference, language), normalized(hypothesis, language)
    if not hyp.split():
        return []
    seen = set()
    for text in [ref, *(normalized(o, language) for o in others)]:
        tokens = text.split()
        seen.update(zip(tokens, tokens[1:]))
    tokens = hyp.split()
    phrases = []
    for chunk in jiwer.process_words(ref or "-", hyp).alignments[0]:
        if chunk.type != "insert" or chunk.hyp_end_idx - chunk.hyp_start_idx < 2:
            continue
        run = tokens[chunk.hyp_start_idx : chunk.hyp_end_idx]
        if any(pair not in seen for pair in zip(run, run[1:])):
            phrases.append(" ".join(run))
    return phrases


def score(reference: str, hypothesis: str, language: str) -> dict:
    import jiwer
    from scheduler import words

    ref, hyp = normalized(reference, language), normalized(hypothesis, language)
    out = jiwer.process_words(ref, hyp if hyp.split() else "-")
    raw = jiwer.process_words(words(reference), words(hypothesis) or "-")
    return {"wer": out.wer, "raw_wer": raw.wer, "ins": out.insertions, "del": out.deletions, "n": len(ref.split())}


def _marked(phrase: str, row: dict, language: str) -> bool:
    """The phrase lies in text that batchscribe marked unsure."""
    return f" {phrase} " in f" {normalized(row.get('unsure_text', ''), language)} "


def report(files: list[dict], results: dict[str, dict]) -> None:
    peers = ("b1-faster-sequential", "b2-faster-batched8")
    print("\nWER with Whisper's normalizers (numbers as digits; 'raw': lower-cased, punctuation and accents stripped)")
    print(f"\n{'file':<10} {'config':<22} {'WER':>6} {'raw':>6} {'ins':>4} {'del':>4} {'invented':>8} {'marked':>6} "
          f"{'windows':>7} {'redone':>6} {'unsure s':>8}")  # fmt: skip
    for i, f in enumerate(files):
        for name, result in results.items():
            row = result["rows"][i]
            s = score(f["text"], row["text"], f["language"])
            others = [results[p]["rows"][i]["text"] for p in peers if p != name and p in results]
            phrases = invented(f["text"], row["text"], others, f["language"])
            marked = sum(_marked(p, row, f["language"]) for p in phrases)
            extra = ""
            if "windows" in row:
                extra = f"{marked:6d} {row['windows']:7d} {row['redecoded']:6d} {row['unsure_s']:8.1f}"
            print(f"{f['name']:<10} {name:<22} {100 * s['wer']:5.1f}% {100 * s['raw_wer']:5.1f}% {s['ins']:4d} "
                  f"{s['del']:4d} {len(phrases):8d} {extra}")  # fmt: skip
            for phrase in phrases[:3]:
                print(f"{'':<33}invented: {phrase!r}")
    audio_s = sum(f["duration_s"] for f in files)
    fastest = results.get("b2-faster-batched8")
    print(f"\n{'config':<22} {'wall s':>8} {'x realtime':>10} {'vs b2':>6} {'WER all':>8} {'raw':>6} {'guard':>18}")
    for name, result in results.items():
        ratio = fastest["wall_s"] / result["wall_s"] if fastest else float("nan")
        total = [score(f["text"], r["text"], f["language"]) for f, r in zip(files, result["rows"])]
        n = sum(s["n"] for s in total)
        wer_all = sum(s["wer"] * s["n"] for s in total) / n
        raw_all = sum(s["raw_wer"] * s["n"] for s in total) / n
        guard = ""
        if "windows" in result["rows"][0]:
            windows = sum(r["windows"] for r in result["rows"])
            redone = sum(r["redecoded"] for r in result["rows"])
            guard = f"{redone}/{windows} windows, {sum(r['guard_s'] for r in result['rows']):.1f} s"
        print(f"{name:<22} {result['wall_s']:8.1f} {audio_s / result['wall_s']:10.1f} {ratio:6.2f} "
              f"{100 * wer_all:7.1f}% {100 * raw_all:5.1f}% {guard:>18}")  # fmt: skip
    if "c-batchscribe" in results and "c-batchscribe-again" in results:
        a, b = results["c-batchscribe"]["rows"], results["c-batchscribe-again"]["rows"]
        same = sum(x["words"] == y["words"] for x, y in zip(a, b))
        print(f"same words in two runs with different batch partners: {same} of {len(files)} files")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--long-minutes", type=float, default=10.0)
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset")
    parser.add_argument("--only", default="", help="comma-separated file names (default: all)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out-hard"))
    parser.add_argument("--rescore", action="store_true", help="score the last run in --out again, run nothing")
    parser.add_argument("--child"), parser.add_argument("--spec"), parser.add_argument("--result")
    args = parser.parse_args()
    if args.child:
        spec = json.loads(Path(args.spec).read_text())
        result = run_config(args.child, spec["files"], Path(spec["cache_dir"]), Path(spec["output"]))
        Path(args.result).write_text(json.dumps(result))
        return
    out = Path(args.out)
    if args.rescore:
        files = json.loads((out / f"spec-{CONFIGS[0]}.json").read_text())["files"]
        found = {c: out / f"spec-{c}.result.json" for c in resolve(args.configs, CONFIGS)}
        report(files, {c: json.loads(p.read_text()) for c, p in found.items() if p.exists()})
        return
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    os.environ["BATCHSCRIBE_FFMPEG"] = ffmpeg()  # the corpus's ffmpeg decodes it for every configuration
    from batchscribe import weights

    base_cache = out / "cache"
    weights.ct2_model_dir("base", base_cache)  # outside the timings
    files = build(out / "corpus", args.long_minutes)
    if args.only:
        files = [f for f in files if f["name"] in args.only.split(",")]
    results = {c: child(c, files, out, base_cache) for c in resolve(args.configs, CONFIGS)}
    report(files, results)


if __name__ == "__main__":
    main()
