"""Typed transcription results shared by every engine, writer and the manifest."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

FRAMES_PER_SECOND = 100  # mel frames per second: openai-whisper's hop of 160 samples at 16 kHz
N_FRAMES = 30 * FRAMES_PER_SECOND  # 3000 frames in one 30-second decoding window
LOW_CONFIDENCE = 0.6  # mean word probability under this: many words the model was unsure of (segment or file)


@dataclass(frozen=True)
class Word:
    start_s: float
    end_s: float
    word: str  # as the model emits it, with its leading space
    probability: float
    speaker: str | None = None  # SPEAKER_00 ... when diarized


def mean_probability(words: Sequence[Word]) -> float:
    return sum(w.probability for w in words) / len(words)


def low_confidence(words: Sequence[Word]) -> bool:
    """Words the model was unsure of on the whole: their mean probability is under LOW_CONFIDENCE."""
    return bool(words) and mean_probability(words) < LOW_CONFIDENCE


@dataclass(frozen=True)
class Segment:
    id: int
    start_s: float
    end_s: float
    text: str  # with the leading space Whisper puts on every segment
    tokens: tuple[int, ...] = ()
    temperature: float = 0.0
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0
    words: tuple[Word, ...] = ()
    seek: int | None = None  # start of the 30-s window it was decoded from, in mel frames; None: unknown
    speaker: str | None = None  # SPEAKER_00 ... when diarized
    unsure: bool = False  # its text stayed unsure after every check, or its words are: worth a listen

    @property
    def confidence(self) -> float:
        """Mean word probability, 0..1 (exp(avg_logprob) for a segment without words)."""
        if self.words:
            return mean_probability(self.words)
        return math.exp(min(self.avg_logprob, 0.0))

    def window_seek(self) -> int:
        """`seek` as openai-whisper writes it; when the engine did not say, the 30-s window of a fixed grid
        from the media's start that holds the segment's start (so 0 <= start * 100 - seek < 3000 either way)."""
        if self.seek is not None:
            return self.seek
        return int(max(self.start_s, 0.0) * FRAMES_PER_SECOND) // N_FRAMES * N_FRAMES


@dataclass(frozen=True)
class SpeakerTurn:
    """One stretch of one speaker's speech, from diarization."""

    start_s: float
    end_s: float
    speaker: str  # SPEAKER_00, SPEAKER_01, ... numbered in order of first speech


@dataclass(frozen=True)
class Transcript:
    """What one engine produced for one audio file."""

    language: str
    language_probability: float
    duration_s: float  # audio duration the engine saw
    segments: tuple[Segment, ...] = field(default_factory=tuple)
    speaker_turns: tuple[SpeakerTurn, ...] | None = None  # None: not diarized; () diarized, nobody spoke

    @property
    def text(self) -> str:
        return "".join(segment.text for segment in self.segments)

    @property
    def unsure_s(self) -> float:
        """Seconds of speech in segments marked unsure."""
        return round(sum(s.end_s - s.start_s for s in self.segments if s.unsure), 3)

    def clamped(self) -> Transcript:
        """The transcript with no segment or word starting or ending after `duration_s` (or before 0).

        Whisper's timestamps can run past the end of the audio (its last window is padded to 30 s).
        """
        if self.duration_s <= 0:
            return self

        def clamp(t: float) -> float:
            return min(max(t, 0.0), self.duration_s)

        segments = tuple(
            replace(
                s,
                start_s=clamp(s.start_s),
                end_s=clamp(s.end_s),
                words=tuple(replace(w, start_s=clamp(w.start_s), end_s=clamp(w.end_s)) for w in s.words),
            )
            for s in self.segments
        )
        return replace(self, segments=segments)

    def to_whisper_dict(self, *, word_timestamps: bool | None = None) -> dict[str, Any]:
        """The shape of openai-whisper's `transcribe()` result: text, segments, language.

        Args:
            word_timestamps: whether word timing was asked for. Then every segment has a `words` list
                (empty when it has no words), as openai-whisper writes it: its writers read
                `segment["words"]` from every segment once the first has the key. None: asked for when
                any segment has words.
        """
        if word_timestamps is None:
            word_timestamps = any(s.words for s in self.segments)
        segments = []
        for s in self.segments:
            d: dict[str, Any] = {
                "id": s.id,
                "seek": s.window_seek(),
                "start": round(s.start_s, 3),
                "end": round(s.end_s, 3),
                "text": s.text,
                "tokens": list(s.tokens),
                "temperature": s.temperature,
                "avg_logprob": s.avg_logprob,
                "compression_ratio": s.compression_ratio,
                "no_speech_prob": s.no_speech_prob,
                "unsure": s.unsure,
            }
            if word_timestamps:
                d["words"] = [
                    {
                        "word": w.word,
                        "start": round(w.start_s, 3),
                        "end": round(w.end_s, 3),
                        "probability": w.probability,
                        **({"speaker": w.speaker} if w.speaker is not None else {}),
                    }
                    for w in s.words
                ]
            if s.speaker is not None:  # WhisperX's convention
                d["speaker"] = s.speaker
            segments.append(d)
        return {
            "text": self.text,
            "segments": segments,
            "language": self.language,
            "language_probability": self.language_probability,
            "duration": self.duration_s,
        }
