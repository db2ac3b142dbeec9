"""The one interface every speech engine implements."""

from __future__ import annotations

import abc
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from batchscribe.errors import gpu_errors
from batchscribe.options import TranscribeOptions
from batchscribe.transcript import Transcript


@dataclass(frozen=True)
class FileTranscription:
    """An engine's transcript of one file, with what it took."""

    transcript: Transcript
    model_s: float  # seconds the model worked on this file (its share of batches shared with other files)
    windows: int = 0  # speech windows decoded (0: the engine does not cut windows of its own)
    redecoded_windows: int = 0  # windows the guard decoded again, as two shorter rows
    warning: str = ""
    guard_s: float = 0.0  # model seconds spent decoding windows again (included in model_s)
    shared_windows: int = 0  # windows decoded in a row shared with other files' windows


class Engine(abc.ABC):
    """A loaded model. Built once per worker process (see `batchscribe.engines.load_engine`)."""

    def __init__(self, options: TranscribeOptions) -> None:
        self.options = options.resolved()
        # One transcription at a time per model: other threads fetch and decode meanwhile.
        self.lock = threading.Lock()

    @abc.abstractmethod
    def transcribe(self, audio: np.ndarray, options: TranscribeOptions) -> Transcript:
        """Transcribe 16 kHz mono float32 `audio` with `options` (already resolved)."""

    def transcribe_file(self, path: Path, options: TranscribeOptions) -> FileTranscription:
        """Transcribe a raw s16le 16 kHz mono file in bounded memory, one file at a time on the model.

        `model_s` is measured inside the lock: waiting for other files is not this file's model time.
        """
        from batchscribe.longform import transcribe_pcm

        with self.lock, gpu_errors():
            started = time.perf_counter()
            transcript = transcribe_pcm(self, path, options)
            return FileTranscription(transcript, time.perf_counter() - started)

    def effective_options(self, options: TranscribeOptions) -> TranscribeOptions:
        """`options` as this engine really runs them (an engine that ignores an option says so here)."""
        return options
