"""One batch of speech windows through CTranslate2's Whisper: encode once, detect, decode, guard, align.

The windows of a batch may come from different files, in different languages and tasks: each row gets
its own prompt, and the language of a file that has none yet is voted from its rows' detections on the
same encoder output the decoder then uses. Text is decoded without timestamp tokens (with them, batched
decoding ends windows early and drops speech) and timed afterwards by cross-attention alignment.
A window whose decode fails Whisper's checks is decoded again alone with the temperature fallback.
"""

from __future__ import annotations

import logging
import zlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from batchscribe.transcript import Word
from batchscribe.windows import Window

logger = logging.getLogger(__name__)

COMPRESSION_RATIO_THRESHOLD = 2.4  # Whisper's: above it the text is too repetitive to trust
LOG_PROB_THRESHOLD = -1.0  # Whisper's: below it the decode is too unsure
NO_SPEECH_THRESHOLD = 0.6  # Whisper's: above it (with a low log probability) the window is silent
MIN_TOKENS_PER_S = 0.75  # speech of a long window that decodes to fewer tokens than this is suspect
DENSITY_MIN_WINDOW_S = 8.0  # ... judged only on windows at least this long
FRAMES_PER_SECOND = 100  # mel frames
BEST_OF = 5  # candidates sampled per fallback temperature, as Whisper does
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"


@dataclass(frozen=True)
class RowRequest:
    """What a row of a batch needs to know about its file."""

    window: Window
    features: np.ndarray  # log-mel, [n_mels, 3000]
    task: str
    initial_prompt: str | None
    beam_size: int
    temperatures: tuple[float, ...]


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
    redecoded: bool  # the coverage guard decoded it again alone
    seek: int  # where the window starts in the file, in mel frames (100 a second), as openai-whisper's `seek`


@dataclass(frozen=True)
class _Decoded:
    tokens: list[int]
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    temperature: float

    def silent(self) -> bool:
        return self.no_speech_prob > NO_SPEECH_THRESHOLD and self.avg_logprob < LOG_PROB_THRESHOLD


class BatchDecoder:
    """Decodes batches of windows with one loaded faster-whisper `WhisperModel` (used from one thread)."""

    def __init__(self, model: Any) -> None:
        self.model = model  # faster_whisper.WhisperModel
        self._tokenizers: dict[tuple[str, str], Any] = {}
        self._suppress: tuple[int, ...] | None = None

    @property
    def multilingual(self) -> bool:
        return bool(self.model.model.is_multilingual)

    def features(self, window: Window) -> np.ndarray:
        """The window's log-mel features, padded to 30 s (safe to call from any thread)."""
        from faster_whisper.audio import pad_or_trim

        return pad_or_trim(self.model.feature_extractor(window.audio)[..., :-1])

    def detect(self, rows: list[RowRequest], encoded: Any) -> list[tuple[str, float]]:
        """Best language and its probability per row, from the batch's encoder output."""
        if not self.multilingual:
            return [("en", 1.0)] * len(rows)
        detected = self.model.model.detect_language(encoded)
        return [(pairs[0][0][2:-2], float(pairs[0][1])) for pairs in detected]  # "<|en|>" -> "en"

    def encode(self, features: np.ndarray) -> Any:
        return self.model.encode(features)

    def decode(self, rows: list[RowRequest], languages: list[str], encoded: Any) -> list[RowResult]:
        """Decode, guard and align every row; `languages` is each row's language, now known."""
        tokenizers = [self.tokenizer(r.task, lang) for r, lang in zip(rows, languages)]
        prompts = [self.prompt(tok, r.initial_prompt) for r, tok in zip(rows, tokenizers)]
        first = rows[0]
        results = self._generate(encoded, prompts, first.beam_size, first.temperatures[0], tokenizers[0])
        decoded = [self._decoded(res, tok, first.temperatures[0]) for res, tok in zip(results, tokenizers)]
        redecoded = [False] * len(rows)
        for i, (row, result) in enumerate(zip(rows, decoded)):
            if _needs_fallback(result, row.window, tokenizers[i]) and len(row.temperatures) > 1:
                alone = encoded if len(rows) == 1 else _rows(encoded, [i])  # its encoder output, not encoded again
                decoded[i] = self._fallback(row, result, tokenizers[i], prompts[i], alone)
                redecoded[i] = True
        words = self._align(rows, decoded, tokenizers, encoded)
        return [
            RowResult(
                tuple(w for w, _ in timed),
                tuple(t for _, t in timed),
                tuple(d.tokens),
                d.avg_logprob,
                d.compression_ratio,
                d.no_speech_prob,
                d.temperature,
                r,
                round(row.window.file_start_s * FRAMES_PER_SECOND),
            )
            for timed, d, r, row in zip(words, decoded, redecoded, rows)
        ]

    def tokenizer(self, task: str, language: str) -> Any:
        from faster_whisper.tokenizer import Tokenizer

        key = (task, language)
        if key not in self._tokenizers:
            self._tokenizers[key] = Tokenizer(
                self.model.hf_tokenizer, self.multilingual, task=task, language=language if self.multilingual else "en"
            )
        return self._tokenizers[key]

    def prompt(self, tokenizer: Any, initial_prompt: str | None) -> list[int]:
        previous = tokenizer.encode(" " + initial_prompt.strip()) if initial_prompt else []
        return self.model.get_prompt(tokenizer, previous, without_timestamps=True)

    def _suppressed(self, tokenizer: Any) -> list[int]:
        from faster_whisper.transcribe import get_suppressed_tokens

        if self._suppress is None:
            self._suppress = tuple(get_suppressed_tokens(tokenizer, [-1]))
        return list(self._suppress)

    def _generate(
        self, encoded: Any, prompts: list[list[int]], beam_size: int, temperature: float, tokenizer: Any
    ) -> list[Any]:
        if temperature > 0:
            search = {
                "beam_size": 1,
                "num_hypotheses": BEST_OF,
                "sampling_topk": 0,
                "sampling_temperature": temperature,
            }
        else:
            search = {"beam_size": beam_size}
        return self.model.model.generate(
            encoded,
            prompts,
            max_length=self.model.max_length,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self._suppressed(tokenizer),
            **search,
        )

    @staticmethod
    def _decoded(result: Any, tokenizer: Any, temperature: float) -> _Decoded:
        tokens = list(result.sequences_ids[0])
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)  # length_penalty 1, as faster-whisper
        text = tokenizer.decode(tokens).strip()
        return _Decoded(tokens, float(avg_logprob), compression_ratio(text), float(result.no_speech_prob), temperature)

    def _fallback(self, row: RowRequest, first: _Decoded, tokenizer: Any, prompt: list[int], encoded: Any) -> _Decoded:
        """Decode one window (`encoded`: its own encoder output) again, alone, at each further temperature
        until one passes Whisper's checks."""
        tried = [first]
        for temperature in row.temperatures[1:]:
            result = self._generate(encoded, [prompt], row.beam_size, temperature, tokenizer)[0]
            decoded = self._decoded(result, tokenizer, temperature)
            tried.append(decoded)
            if not _needs_fallback(decoded, row.window, tokenizer):
                return decoded
        fair = [d for d in tried if d.compression_ratio <= COMPRESSION_RATIO_THRESHOLD and d.tokens] or tried
        return max(fair, key=lambda d: d.avg_logprob)

    def _align(
        self, rows: list[RowRequest], decoded: list[_Decoded], tokenizers: list[Any], encoded: Any
    ) -> list[list[tuple[Word, tuple[int, ...]]]]:
        """(word, its tokens) per row on the file's clock, aligned in groups that share a tokenizer."""
        words: list[list[tuple[Word, tuple[int, ...]]]] = [[] for _ in rows]
        groups: dict[int, list[int]] = defaultdict(list)
        for i, (d, tok) in enumerate(zip(decoded, tokenizers)):
            if not d.silent() and any(t < tok.eot for t in d.tokens):
                groups[id(tok)].append(i)
        for indices in groups.values():
            tokenizer = tokenizers[indices[0]]
            text_tokens = [[t for t in decoded[i].tokens if t < tokenizer.eot] for i in indices]
            frames = [int(np.ceil(rows[i].window.duration_s * self.model.frames_per_second)) for i in indices]
            part = encoded if len(indices) == len(rows) else _rows(encoded, indices)
            alignments = self.model.find_alignment(tokenizer, text_tokens, part, frames)
            for i, alignment in zip(indices, alignments):
                words[i] = _timed_words(alignment, rows[i].window)
        return words


def compression_ratio(text: str) -> float:
    """Whisper's repetitiveness measure: text bytes over their zlib-compressed bytes."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def _needs_fallback(decoded: _Decoded, window: Window, tokenizer: Any) -> bool:
    """Whisper's checks, plus: speech (by VAD) that decodes to no text, or to far too little for its length."""
    if decoded.silent():
        return False
    text_tokens = [t for t in decoded.tokens if t < tokenizer.eot]
    if not text_tokens:
        return decoded.no_speech_prob <= NO_SPEECH_THRESHOLD
    if decoded.compression_ratio > COMPRESSION_RATIO_THRESHOLD or decoded.avg_logprob < LOG_PROB_THRESHOLD:
        return True
    duration_s = window.duration_s
    return duration_s >= DENSITY_MIN_WINDOW_S and len(text_tokens) / duration_s < MIN_TOKENS_PER_S


def _timed_words(alignment: list[dict], window: Window) -> list[tuple[Word, tuple[int, ...]]]:
    from faster_whisper.transcribe import merge_punctuations

    merge_punctuations(alignment, PREPEND_PUNCTUATIONS, APPEND_PUNCTUATIONS)
    limit = window.duration_s
    words = []
    for timing in alignment:
        if not timing["word"]:
            continue
        start, end = min(float(timing["start"]), limit), min(float(timing["end"]), limit)
        piece = window.piece_at((start + end) / 2)  # both ends through one piece: a word never spans a cut
        word = Word(
            start_s=round(window.to_file_time(start, piece), 3),
            end_s=round(window.to_file_time(max(end, start), piece), 3),
            word=timing["word"],
            probability=float(timing["probability"]),
        )
        words.append((word, tuple(timing["tokens"])))
    return words


def _rows(encoded: Any, indices: list[int]) -> Any:
    """Some rows of an encoder output, as a new StorageView on the same device."""
    import ctranslate2

    if encoded.device == "cpu":
        return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.asarray(encoded)[indices]))
    import torch  # CUDA: through __cuda_array_interface__

    tensor = torch.as_tensor(encoded, device=f"cuda:{encoded.device_index}")
    return ctranslate2.StorageView.from_array(tensor[indices].contiguous())
