"""Stand-ins that are real implementations of our interfaces, for orchestration tests that need no model.

Real engines keep their real-speech tests (tests/batchscribe/test_engines.py, test_scheduler.py); a
`FakeEngine` is an `Engine` like them, so the transcribe task, its fallback and the flow treat it the same.
"""

from __future__ import annotations

import numpy as np

from batchscribe.audio import SAMPLE_RATE
from batchscribe.engines.base import Engine
from batchscribe.options import TranscribeOptions
from batchscribe.transcript import Segment, Transcript


class FakeEngine(Engine):
    """An engine that "hears" one segment per call, saying how long the audio was; counts its calls."""

    def __init__(self, options: TranscribeOptions | None = None) -> None:
        super().__init__(options or TranscribeOptions(engine="faster-whisper", device="cpu"))
        self.calls = 0

    def transcribe(self, audio: np.ndarray, options: TranscribeOptions) -> Transcript:
        self.calls += 1
        duration_s = len(audio) / SAMPLE_RATE
        segment = Segment(id=0, start_s=0.0, end_s=duration_s, text=f" {duration_s:.1f} seconds of audio.")
        return Transcript(options.language or "en", 1.0, duration_s, (segment,))


class OutOfMemoryEngine(FakeEngine):
    """A CUDA engine whose GPU is full: every call fails with PyTorch's out-of-memory text."""

    def transcribe(self, audio: np.ndarray, options: TranscribeOptions) -> Transcript:
        self.calls += 1
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
