"""faster-whisper (CTranslate2): the CPU default, int8 unless told otherwise."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from batchscribe import weights
from batchscribe.engines.base import Engine
from batchscribe.options import TranscribeOptions
from batchscribe.transcript import Segment, Transcript, Word

logger = logging.getLogger(__name__)


def cpu_threads() -> int:
    """Cores this process may use (CTranslate2's own default of 4 oversubscribes small machines)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class FasterWhisperEngine(Engine):
    name = "faster-whisper"

    def __init__(self, options: TranscribeOptions, cache_dir: Path) -> None:
        super().__init__(options)
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        opts = self.options
        local = weights.ct2_model_dir(opts.model, cache_dir)
        # A bare name other than the offline one goes to faster-whisper's own download and cache.
        source = str(local) if local else opts.model
        logger.info("Loading faster-whisper %s (%s, %s) from %s", opts.model, opts.device, opts.compute_type, source)
        self.model = WhisperModel(
            source,
            device=opts.device,
            compute_type=opts.compute_type,
            cpu_threads=cpu_threads(),
            download_root=str(cache_dir / "models" / "faster-whisper"),
        )
        self.batched = BatchedInferencePipeline(self.model)

    def effective_options(self, options: TranscribeOptions) -> dict[str, Any]:
        effective = super().effective_options(options)
        if options.batch_size > 1:  # BatchedInferencePipeline: independent windows, first temperature only
            effective.update(condition_on_previous_text=False, temperatures=[options.temperatures[0]])
        return effective

    def transcribe(self, audio: np.ndarray, options: TranscribeOptions) -> Transcript:
        kwargs = dict(
            language=options.language,
            task=options.task,
            beam_size=options.beam_size,
            temperature=list(options.temperatures),
            initial_prompt=options.initial_prompt,
            word_timestamps=options.word_timestamps,
            vad_filter=options.vad_filter,
            condition_on_previous_text=options.condition_on_previous_text,
        )
        if options.batch_size > 1:
            # Batched windows are independent: no previous-text conditioning; keep real timestamps.
            kwargs.pop("condition_on_previous_text")
            segments, info = self.batched.transcribe(
                audio, batch_size=options.batch_size, without_timestamps=False, **kwargs
            )
        else:
            segments, info = self.model.transcribe(audio, **kwargs)
        # The segments are a generator: the decoding happens here, while we hold the model.
        result = tuple(
            Segment(
                id=i,
                start_s=s.start,
                end_s=s.end,
                text=s.text,
                tokens=tuple(s.tokens),
                temperature=s.temperature or 0.0,
                avg_logprob=s.avg_logprob,
                compression_ratio=s.compression_ratio,
                no_speech_prob=s.no_speech_prob,
                words=tuple(Word(w.start, w.end, w.word, w.probability) for w in (s.words or ())),
            )
            for i, s in enumerate(segments)
        )
        logger.info("Detected language '%s' with probability %.2f", info.language, info.language_probability)
        return Transcript(
            language=info.language,
            language_probability=float(info.language_probability),
            duration_s=float(info.duration),
            segments=result,
        )
