"""Real recorded voices with known text, for the benches: Debian's Asterisk voice prompts.

Each voice is one voice talent reading a telephone system's prompts, with the script in the matching
`asterisk-core-sounds-<lang>` package (licences: CC-BY-SA-3.0 for the core sounds, in
`usr/share/doc/<package>/copyright`). The packages conflict with one another when installed, so `make bench`
unpacks them (`apt-get download` + `dpkg -x`) into `bench/voices/`; installed copies are used when present.
The music bed is `asterisk-moh-opsound-wav` (CC-BY-SA-3.0, opsound.org).
"""

from __future__ import annotations

import gzip
import os
import re
import subprocess
from functools import cache
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
UNPACKED = ROOT / "bench" / "voices"
SAMPLE_RATE = 16_000
# language -> (prompt folder under usr/share/asterisk/sounds, text list package): five voice talents.
VOICES = {
    "en": ("en_US_f_Allison", "asterisk-core-sounds-en"),
    "es": ("es_MX_f_Allison", "asterisk-core-sounds-es"),
    "fr": ("fr_CA_f_June", "asterisk-core-sounds-fr"),
    "it": ("it_IT_m_Carlo", "asterisk-core-sounds-it"),
    "ru": ("ru_RU_f_IvrvoiceRU", "asterisk-core-sounds-ru"),
}
# What `make bench` unpacks into bench/voices (text lists, the voices' wav packages, the music bed).
PACKAGES = (
    *(package for _, package in VOICES.values()),
    *(f"{package}-wav" for _, package in VOICES.values()),
    "asterisk-moh-opsound-wav",
)
MUSIC = "usr/share/asterisk/moh/manolo_camp-morning_coffee.wav"


def _path(relative: str) -> Path:
    for root in (Path("/"), UNPACKED):
        if (root / relative).exists():
            return root / relative
    raise SystemExit(f"missing /{relative}: `make bench` unpacks the voice packages into {UNPACKED}")


def ffmpeg() -> str:
    """The ffmpeg that builds the corpora: the bundled one (pinned with the package), so that every machine
    builds the same files; `$BATCHSCRIBE_FFMPEG` when set. Another build encodes and resamples to slightly
    different samples, and on hard audio that changes words."""
    if env := os.environ.get("BATCHSCRIBE_FFMPEG"):
        return env
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def decode(path: Path | str, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Any file ffmpeg reads, as int16 mono at `rate`."""
    cmd = [ffmpeg(), "-nostdin", "-v", "error", "-i", f"file:{path}", "-f", "s16le", "-ac", "1", "-ar", str(rate), "-"]
    return np.frombuffer(subprocess.run(cmd, check=True, capture_output=True).stdout, "<i2")


def encode(pcm: np.ndarray, dest: Path, *args: str) -> None:
    """int16 mono 16 kHz samples into `dest` (mp3 at 64 kb/s unless `args` say otherwise)."""
    cmd = [ffmpeg(), "-nostdin", "-v", "error", "-y", "-f", "s16le", "-ac", "1", "-ar", "16000", "-i", "-"]
    subprocess.run([*cmd, *(args or ("-b:a", "64k")), f"file:{dest}"], input=pcm.astype("<i2").tobytes(), check=True)


@cache
def prompts(language: str, max_s: float = 15.0) -> list[tuple[np.ndarray, str]]:
    """Every prompt of one voice whose text is plain words (no digits, no sound notes), at most `max_s` long."""
    folder, package = VOICES[language]
    listing = _path(f"usr/share/doc/{package}/core-sounds-{language}.txt.gz")
    sounds = _path(f"usr/share/asterisk/sounds/{folder}")
    result = []
    for line in gzip.open(listing, "rt", encoding="utf-8-sig", errors="replace"):
        name, sep, text = line.partition(":")
        text = " ".join(text.split())
        wav = sounds / f"{name.strip()}.wav"
        if not sep or line.startswith(";") or not wav.exists() or len(text.split()) < 1:
            continue
        if re.search(r"[\d\[\]<>/()]", text):
            continue
        pcm = decode(wav)
        if 0.3 * SAMPLE_RATE <= len(pcm) <= max_s * SAMPLE_RATE:
            result.append((pcm, text))
    return result


def music() -> np.ndarray:
    """A real music bed (int16, 16 kHz)."""
    return decode(_path(MUSIC))


def pause(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SAMPLE_RATE), "<i2")
