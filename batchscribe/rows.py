"""What a row of a batch asks for and what comes back: the types the decoder, its checks and the scheduler share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from batchscribe.transcript import Word
from batchscribe.windows import Window

LOG_PROB_THRESHOLD = -1.0  # Whisper's: below it the decode is too unsure
NO_SPEECH_THRESHOLD = 0.6  # Whisper's: above it (with a low log probability) the window is silent


@dataclass(frozen=True)
class RowRequest:
    """What a row of a batch needs to know about its file."""

    window: Window
    features: np.ndarray  # log-mel, [n_mels, 3000]
    task: str
    initial_prompt: str | None
    beam_size: int
    temperatures: tuple[float, ...]


Verdict = Literal["ok", "silent", "loop", "missing", "sparse", "unsure"]
SECOND_OPINION: frozenset[str] = frozenset({"loop", "missing", "sparse", "unsure"})  # decoded again as halves


@dataclass(frozen=True)
class RowResult:
    """A decoded window: its words on the file's clock, and how it was decoded."""

    words: tuple[Word, ...]
    word_tokens: tuple[tuple[int, ...], ...]  # each word's tokens
    tokens: tuple[int, ...]
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    temperature: float
    redecoded: bool  # the guard decoded it again, as two shorter rows
    seek: int  # where the window starts in the file, in mel frames (100 a second), as openai-whisper's `seek`
    verdict: Verdict = "ok"
    unsure: bool = False  # the text stays unsure after every check: a reviewer should listen
    dropped_words: int = 0  # words dropped as unsupported (one reading only, barely believed)
    shared: int = 0  # windows of other files decoded in the same row, plus this one (0: a row of its own)

    @property
    def text(self) -> str:
        return "".join(w.word for w in self.words)


@dataclass(frozen=True)
class Decoded:
    """One decode of a row, before alignment."""

    tokens: list[int]
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    temperature: float

    def silent(self) -> bool:
        return self.no_speech_prob > NO_SPEECH_THRESHOLD and self.avg_logprob < LOG_PROB_THRESHOLD
