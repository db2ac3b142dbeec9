"""Language of short clips: a 30-s encoder pass per clip against the short pass that packing uses.

    .venv/bin/python bench/language.py [--clips 200]

The clips are the scheduler bench's 1-3 s prompts of five voice talents (three in five English, the rest
Spanish, French, Italian and Russian), met in a shuffled order as a pile of files would be. Printed per
method: accuracy against the known language, per language, and encoder time per clip:

  full         each clip padded to 30 s and detected alone (what a clip decoded alone costs)
  own          each clip encoded alone at its own length (at least 1 s): the previous release, for a clip
               met alone
  own-in-8     each clip at the length of the longest of its batch of 8: the previous release, for a clip
               met with seven others (its language depended on theirs)
  short        each clip at its length rounded up to 4 s (`batchscribe.packing.detect_frames`), whatever
               shares its pass
  short+prior  the same, weighed by the languages decided so far (`batchscribe.packing.LanguagePrior`):
               what the scheduler does
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from scheduler import build_clips  # noqa: E402

BATCH = 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--out", default=str(ROOT / "bench" / "out-language"))
    args = parser.parse_args()
    import random

    from corpus import decode
    from faster_whisper.audio import pad_or_trim

    from batchscribe.engines import load_engine
    from batchscribe.options import TranscribeOptions
    from batchscribe.packing import LanguagePrior, clip_languages
    from batchscribe.transcript import FRAMES_PER_SECOND

    out = Path(args.out)
    clips = build_clips(out / "clips", args.clips)
    random.Random(2).shuffle(clips)
    engine = load_engine(TranscribeOptions(device="cpu").resolved(), out / "cache")
    model = engine.model
    audio = [decode(c["path"]).astype(np.float32) / 32768.0 for c in clips]
    features = [pad_or_trim(model.feature_extractor(a)[..., :-1]) for a in audio]

    def detect(batch: np.ndarray) -> list[dict[str, float]]:
        encoded = model.encode(batch)
        return [{t[2:-2]: p for t, p in pairs} for pairs in model.model.detect_language(encoded)]

    results: dict[str, list[str]] = {}
    seconds: dict[str, float] = {}

    def own_length(group: list[np.ndarray], durations: list[float]) -> np.ndarray:
        """The previous release's pass: the longest clip's own length, at least 1 s, an even frame count."""
        frames = max(max(FRAMES_PER_SECOND, int(np.ceil(d * FRAMES_PER_SECOND))) for d in durations)
        return np.ascontiguousarray(np.stack([f[:, : frames + frames % 2] for f in group]), np.float32)

    for method in ("full", "own", "own-in-8", "short"):
        started, found = time.perf_counter(), []
        batch_size = 1 if method == "own" else BATCH
        for i in range(0, len(clips), batch_size):
            group, durations = features[i : i + batch_size], [c["duration_s"] for c in clips[i : i + batch_size]]
            if method == "full":
                found += detect(np.stack(group))
            elif method.startswith("own"):
                found += detect(own_length(group, durations))
            else:
                found += clip_languages(group, durations, detect)
        seconds[method] = (time.perf_counter() - started) / len(clips)
        results[method] = [max(p, key=p.get) for p in found]
        if method == "short":
            prior, chosen = LanguagePrior(), []
            for probabilities in found:
                language, probability = prior.choose(probabilities)
                prior.observe(language, probability)
                chosen.append(language)
            results["short+prior"], seconds["short+prior"] = chosen, seconds["short"]

    truth = [c["language"] for c in clips]
    counts = Counter(truth)
    print(f"\n{len(clips)} clips of 1-3 s: " + ", ".join(f"{n} {lang}" for lang, n in counts.most_common()))
    print(f"{'method':<12} {'accuracy':>8} {'ms/clip':>8}  " + "  ".join(f"{lang:>5}" for lang in counts))
    for method, found in results.items():
        right = defaultdict(int)
        for t, f in zip(truth, found):
            right[t] += t == f
        accuracy = sum(right.values()) / len(truth)
        per = "  ".join(f"{right[lang] / counts[lang]:5.0%}" for lang in counts)
        print(f"{method:<12} {accuracy:8.1%} {1000 * seconds[method]:8.0f}  {per}")


if __name__ == "__main__":
    main()
