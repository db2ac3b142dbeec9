"""Conversations of real recorded voices with known turns, and a DER scorer, for diarization tests and bench.

The voices are Debian's Asterisk prompt packages, each read by one voice talent (licences in
`/usr/share/doc/<package>/copyright`): `make test` installs them as root. Prompts are decoded with real
ffmpeg, trimmed of leading and trailing silence, and laid end to end with short pauses, so every turn's
start, end and speaker are known exactly.
"""

from __future__ import annotations

import random
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000
SOUNDS = Path("/usr/share/asterisk/sounds")

# speaker -> (Debian package, prompt folder): four different women, four languages.
VOICES: dict[str, tuple[str, str]] = {
    "armelle": ("asterisk-prompt-fr-armelle", "fr"),
    "paola": ("asterisk-prompt-it-menardi-wav", "it_IT_f_Menardi"),
    "july": ("asterisk-prompt-es-co", "es"),
    "allison": ("asterisk-core-sounds-en-wav", "en_US_f_Allison"),
}
PACKAGES = tuple(package for package, _ in VOICES.values())
SILENCE_DBFS = -40.0  # below this a 10 ms frame counts as silence when trimming prompts


@dataclass(frozen=True)
class Turn:
    start_s: float
    end_s: float
    speaker: str


def missing_voices(speakers: tuple[str, ...] = tuple(VOICES)) -> list[str]:
    """The Debian packages of `speakers` that are not installed."""
    return [VOICES[s][0] for s in speakers if not (SOUNDS / VOICES[s][1]).is_dir()]


def _decode(path: Path) -> np.ndarray:
    from batchscribe.audio import ffmpeg_exe

    command = [ffmpeg_exe(), "-nostdin", "-v", "error", "-i", f"file:{path}", "-f", "s16le", "-ac", "1"]
    pcm = subprocess.run([*command, "-ar", str(SAMPLE_RATE), "-"], capture_output=True, check=True).stdout
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def _trim(samples: np.ndarray) -> np.ndarray:
    frame = SAMPLE_RATE // 100
    n = len(samples) // frame
    if n == 0:
        return samples[:0]
    rms = np.sqrt((samples[: n * frame].reshape(n, frame) ** 2).mean(axis=1) + 1e-12)
    loud = np.flatnonzero(20 * np.log10(rms) > SILENCE_DBFS)
    if not len(loud):
        return samples[:0]
    return samples[loud[0] * frame : (loud[-1] + 1) * frame]


def prompt_files(speaker: str) -> list[Path]:
    """`speaker`'s recorded prompts, in file-name order."""
    folder = SOUNDS / VOICES[speaker][1]
    return sorted(p for p in folder.glob("*") if p.suffix in (".wav", ".gsm") and p.is_file())


def _next_prompt(files: list[Path], cursor: int, max_s: float) -> tuple[np.ndarray, int]:
    """The first prompt from `cursor` on (wrapping) that decodes and is at most `max_s` long, and the next cursor."""
    for step in range(len(files)):
        path = files[(cursor + step) % len(files)]
        try:
            clip = _trim(_decode(path))
        except subprocess.CalledProcessError:  # a few packaged prompts are damaged
            continue
        if 0.3 <= len(clip) / SAMPLE_RATE <= max_s:
            return clip, cursor + step + 1
    raise ValueError(f"no usable prompt in {files[0].parent}")


def conversation(
    speakers: tuple[str, ...],
    *,
    turns: int,
    turn_s: tuple[float, float] = (3.0, 10.0),
    pause_s: tuple[float, float] = (0.3, 0.9),
    seed: int = 0,
    first_prompt: int = 0,
) -> tuple[np.ndarray, list[Turn]]:
    """Speakers taking turns (never twice in a row), each turn one or more prompts of theirs, with pauses.

    Args:
        speakers: voices from VOICES.
        turns: how many turns.
        turn_s: a turn's length bounds in seconds; prompts are joined (with 0.2 s gaps) to reach the lower.
        pause_s: silence between turns.
        seed: picks the order of speakers and pauses.
        first_prompt: index of each speaker's first prompt used, so two conversations can use different ones.

    Returns:
        The samples and the reference turns in time order.
    """
    rng = random.Random(seed)
    files = {s: prompt_files(s) for s in speakers}
    cursor = dict.fromkeys(speakers, first_prompt)
    pieces: list[np.ndarray] = []
    reference: list[Turn] = []
    now_s, previous = 0.0, None
    for _ in range(turns):
        speaker = rng.choice([s for s in speakers if s != previous])
        turn: list[np.ndarray] = []
        while sum(len(c) for c in turn) / SAMPLE_RATE < turn_s[0]:
            clip, cursor[speaker] = _next_prompt(files[speaker], cursor[speaker], turn_s[1])
            if turn and (sum(len(c) for c in turn) + len(clip)) / SAMPLE_RATE + 0.2 > turn_s[1]:
                break
            if turn:
                turn.append(np.zeros(int(0.2 * SAMPLE_RATE), np.float32))
            turn.append(clip)
        samples = np.concatenate(turn)
        pause = np.zeros(int(rng.uniform(*pause_s) * SAMPLE_RATE), np.float32)
        pieces += [pause, samples]
        start_s = now_s + len(pause) / SAMPLE_RATE
        now_s = start_s + len(samples) / SAMPLE_RATE
        reference.append(Turn(start_s, now_s, speaker))
        previous = speaker
    pieces.append(np.zeros(int(0.5 * SAMPLE_RATE), np.float32))
    return np.concatenate(pieces), reference


def monologue(
    speaker: str, *, duration_s: float, pause_s: tuple[float, float] = (0.15, 0.7), seed: int = 0
) -> np.ndarray:
    """One voice reading its prompts in file-name order, with short pauses, for about `duration_s` seconds."""
    rng = random.Random(seed)
    files = prompt_files(speaker)
    pieces: list[np.ndarray] = [np.zeros(int(0.3 * SAMPLE_RATE), np.float32)]
    cursor, total = 0, 0
    while total < duration_s * SAMPLE_RATE:
        clip, cursor = _next_prompt(files, cursor, 8.0)
        pieces += [clip, np.zeros(int(rng.uniform(*pause_s) * SAMPLE_RATE), np.float32)]
        total += len(clip) + len(pieces[-1])
    return np.concatenate(pieces)


def write_wav(samples: np.ndarray, path: Path) -> Path:
    """16-bit mono WAV at 16 kHz."""
    import wave

    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def der(reference: list[Turn], hypothesis: list[tuple[float, float, str]], *, collar_s: float = 0.25) -> float:
    """Diarization error rate with pyannote.metrics, forgiving `collar_s` either side of each reference boundary.

    `collar_s` is NIST md-eval's `-c` (0.25 s either side); pyannote's `collar` is the whole width.
    """
    from pyannote.core import Annotation, Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate

    ref, hyp = Annotation(), Annotation()
    for i, t in enumerate(reference):
        ref[Segment(t.start_s, t.end_s), i] = t.speaker
    for i, (start_s, end_s, speaker) in enumerate(hypothesis):
        hyp[Segment(start_s, end_s), i] = speaker
    end_s = max([t.end_s for t in reference] + [h[1] for h in hypothesis])
    uem = Timeline([Segment(0.0, end_s)])  # the whole recording is scored
    return float(DiarizationErrorRate(collar=2 * collar_s, skip_overlap=False)(ref, hyp, uem=uem))
