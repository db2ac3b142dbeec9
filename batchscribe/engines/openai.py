"""openai-whisper (PyTorch), the reference engine: fp16 on CUDA, fp32 on CPU, one window at a time."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from batchscribe import weights
from batchscribe.audio import SAMPLE_RATE
from batchscribe.engines.base import Engine
from batchscribe.options import TranscribeOptions
from batchscribe.transcript import Segment, Transcript, Word, low_confidence

logger = logging.getLogger(__name__)


class OpenAIWhisperEngine(Engine):
    def __init__(self, options: TranscribeOptions, cache_dir: Path) -> None:
        super().__init__(options)
        import whisper

        opts = self.options
        local = weights.ct2_model_dir(opts.model, cache_dir)
        if local is not None and not Path(opts.model).exists():
            # The offline weights ship as CTranslate2; convert them once into an openai-whisper checkpoint.
            self.model = weights.load_openai_model(local, cache_dir, opts.device)
        else:
            # A local .pt path, or a size name that openai-whisper downloads into its cache.
            self.model = whisper.load_model(
                opts.model, device=opts.device, download_root=str(cache_dir / "models" / "openai-whisper")
            )
        self.fp16 = opts.compute_type == "float16"
        if self.fp16 and opts.device == "cpu":
            logger.warning("FP16 is not supported on CPU; using FP32 instead")
            self.fp16 = False

    def effective_options(self, options: TranscribeOptions) -> TranscribeOptions:
        # No VAD and no batching here: whisper.transcribe decodes every window in order.
        return options.model_copy(update={"vad_filter": False, "batch_size": 0})

    def transcribe(self, audio: np.ndarray, options: TranscribeOptions) -> Transcript:
        import whisper

        language, probability = options.language, 1.0
        if language is None:
            language, probability = self._detect_language(audio)
        result = whisper.transcribe(
            self.model,
            audio,
            verbose=None,
            language=language,
            task=options.task,
            beam_size=options.beam_size,
            best_of=5,  # faster-whisper's default for sampled fallbacks
            temperature=tuple(options.temperatures),
            initial_prompt=options.initial_prompt,
            word_timestamps=options.word_timestamps,
            condition_on_previous_text=options.condition_on_previous_text,
            fp16=self.fp16,
        )
        segments = tuple(
            Segment(
                id=i,
                start_s=float(s["start"]),
                end_s=float(s["end"]),
                seek=int(s["seek"]),
                text=s["text"],
                tokens=tuple(s["tokens"]),
                temperature=float(s["temperature"]),
                avg_logprob=float(s["avg_logprob"]),
                compression_ratio=float(s["compression_ratio"]),
                no_speech_prob=float(s["no_speech_prob"]),
                words=tuple(
                    Word(float(w["start"]), float(w["end"]), w["word"], float(w["probability"]))
                    for w in s.get("words", ())
                ),
            )
            for i, s in enumerate(result["segments"])
        )
        segments = tuple(replace(s, unsure=low_confidence(s.words)) for s in segments)
        return Transcript(
            language=language,
            language_probability=probability,
            duration_s=len(audio) / SAMPLE_RATE,
            segments=segments,
        )

    def _detect_language(self, audio: np.ndarray) -> tuple[str, float]:
        """Language and its probability from the first 30 s, as `whisper.transcribe` would detect it."""
        import whisper

        if not self.model.is_multilingual:
            return "en", 1.0
        mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(audio), n_mels=self.model.dims.n_mels)
        mel = mel.to(self.model.device)
        _, probs = self.model.detect_language(mel.half() if self.fp16 else mel)
        language = max(probs, key=probs.get)
        logger.info("Detected language '%s' with probability %.2f", language, probs[language])
        return language, float(probs[language])
