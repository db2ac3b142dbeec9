"""The one interface every speech engine implements."""

from __future__ import annotations

import abc
import threading
from typing import Any

import numpy as np

from batchscribe.options import TranscribeOptions
from batchscribe.transcript import Transcript

SAMPLE_RATE = 16_000  # Hz; every engine takes 16 kHz mono float32 in [-1, 1]


class Engine(abc.ABC):
    """A loaded model. Built once per worker process (see `batchscribe.engines.load_engine`)."""

    name: str

    def __init__(self, options: TranscribeOptions) -> None:
        self.options = options.resolved()
        # One transcription at a time per model: other threads fetch and decode meanwhile.
        self.lock = threading.Lock()

    @abc.abstractmethod
    def transcribe(self, audio: np.ndarray, options: TranscribeOptions) -> Transcript:
        """Transcribe 16 kHz mono float32 `audio` with `options` (already resolved)."""

    def effective_options(self, options: TranscribeOptions) -> dict[str, Any]:
        """`options` (resolved) as this engine really runs them, JSON-ready: what the manifest's `options` records.

        The default is the options unchanged. An engine, or a decoding scheme, that ignores or changes an
        option overrides this to say so (the batched faster-whisper path drops previous-text conditioning).
        """
        return options.model_dump(mode="json")
