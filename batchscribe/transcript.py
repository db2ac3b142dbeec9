"""Typed transcription results shared by every engine, writer and the manifest."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Word:
    start_s: float
    end_s: float
    word: str  # as the model emits it, with its leading space
    probability: float
    speaker: str | None = None  # SPEAKER_00 ... when diarized


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
    speaker: str | None = None  # SPEAKER_00 ... when diarized


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

    def to_whisper_dict(self) -> dict[str, Any]:
        """The shape of openai-whisper's `transcribe()` result: text, segments, language."""
        segments = []
        for s in self.segments:
            d: dict[str, Any] = {
                "id": s.id,
                "seek": 0,
                "start": round(s.start_s, 3),
                "end": round(s.end_s, 3),
                "text": s.text,
                "tokens": list(s.tokens),
                "temperature": s.temperature,
                "avg_logprob": s.avg_logprob,
                "compression_ratio": s.compression_ratio,
                "no_speech_prob": s.no_speech_prob,
            }
            if s.words:
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
