"""One batch of speech windows through CTranslate2's Whisper: encode once, detect, decode, check, align.

The windows of a batch may come from different files, in different languages and tasks: each row gets
its own prompt. Text is decoded without timestamp tokens (with them, batched decoding ends windows early
and drops speech) and timed afterwards by cross-attention alignment.

Every decoded row gets a verdict (`check`): a decoding loop (the same words over and over, or more text
than the speech can hold), speech that decoded to nothing or to far too little, or a decode too unsure to
trust. Text that merely compresses well (a menu, a list, a chorus said again) is not a loop. The scheduler
decodes the rows that fail again as two shorter rows in its next batches, and `second_opinion` keeps the
better reading; what stays unsure is marked, and words that only one reading has and the model barely
believes are dropped. Every decode is beam search at temperature 0: the same window gives the same words
whatever shares its batch, on any run.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import numpy as np

from batchscribe.guard import check, compression_ratio
from batchscribe.rows import Decoded, RowRequest, RowResult
from batchscribe.transcript import FRAMES_PER_SECOND, Word
from batchscribe.windows import Window

logger = logging.getLogger(__name__)

LANGUAGE_CHECK_MIN_S = 5.0  # a row this long whose own language is another one is marked unsure ...
LANGUAGE_CHECK_PROBABILITY = 0.9  # ... when the model is at least this sure of the other language
SAMPLING_SEED = 0  # a first temperature above 0 samples: with a fixed seed, runs repeat
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"


class BatchDecoder:
    """Decodes batches of windows with one loaded faster-whisper `WhisperModel` (used from one thread)."""

    def __init__(self, model: Any) -> None:
        self.model = model  # faster_whisper.WhisperModel
        self._tokenizers: dict[tuple[str, str], Any] = {}
        self._suppress: tuple[int, ...] | None = None

    @property
    def lanes(self) -> int:
        """Batches the model decodes at once: its CTranslate2 workers, which share one copy of the weights."""
        return int(getattr(self.model.model, "num_workers", 1))

    @property
    def multilingual(self) -> bool:
        return bool(self.model.model.is_multilingual)

    def features(self, window: Window) -> np.ndarray:
        """The window's log-mel features, padded to 30 s (safe to call from any thread)."""
        from faster_whisper.audio import pad_or_trim

        return pad_or_trim(self.model.feature_extractor(window.audio)[..., :-1])

    def detect(self, rows: list[RowRequest], encoded: Any) -> list[tuple[str, float]]:
        """Best language and its probability per row, from the batch's encoder output."""
        return [max(p.items(), key=lambda pair: pair[1]) for p in self.language_probabilities(encoded)]

    def language_probabilities(self, encoded: Any) -> list[dict[str, float]]:
        """Every language's probability per row of `encoded`."""
        if not self.multilingual:
            return [{"en": 1.0}] * int(encoded.shape[0])
        detected = self.model.model.detect_language(encoded)
        return [{token[2:-2]: float(p) for token, p in pairs} for pairs in detected]  # "<|en|>" -> "en"

    def encode(self, features: np.ndarray) -> Any:
        return self.model.encode(features)

    def decode(
        self,
        rows: list[RowRequest],
        languages: list[str],
        encoded: Any,
        detected: list[tuple[str, float]] | None = None,
    ) -> list[RowResult]:
        """Decode, check and align every row.

        Args:
            rows: the batch's rows.
            languages: each row's language, now known.
            encoded: the batch's encoder output.
            detected: each row's own best language and its probability, when detected: a long row whose
                own language is confidently another one than its file's is marked unsure.
        """
        tokenizers = [self.tokenizer(r.task, lang) for r, lang in zip(rows, languages)]
        prompts = [self.prompt(tok, r.initial_prompt) for r, tok in zip(rows, tokenizers)]
        first = rows[0]
        results = self._generate(encoded, prompts, first.beam_size, first.temperatures[0], tokenizers[0])
        decoded = [self._decoded(res, tok, first.temperatures[0]) for res, tok in zip(results, tokenizers)]
        words = self._align(rows, decoded, tokenizers, encoded)
        out = []
        for i, (row, d, timed) in enumerate(zip(rows, decoded, words)):
            limit = self.model.max_length - len(prompts[i])
            verdict = check(d, row.window.duration_s, tokenizers[i].eot, limit)
            other_language = (
                detected is not None
                and row.window.duration_s >= LANGUAGE_CHECK_MIN_S
                and detected[i][0] != languages[i]
                and detected[i][1] >= LANGUAGE_CHECK_PROBABILITY
                and row.task == "transcribe"
            )
            out.append(
                RowResult(
                    tuple(w for w, _ in timed),
                    tuple(t for _, t in timed),
                    tuple(d.tokens),
                    d.avg_logprob,
                    d.compression_ratio,
                    d.no_speech_prob,
                    d.temperature,
                    False,
                    round(row.window.file_start_s * FRAMES_PER_SECOND),
                    verdict,
                    unsure=verdict == "unsure" or other_language,
                )
            )
        return out

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
        search: dict[str, Any] = {"beam_size": beam_size}
        if temperature > 0:  # asked for: sampling, repeatable
            import ctranslate2

            ctranslate2.set_random_seed(SAMPLING_SEED)
            search = {"beam_size": 1, "sampling_topk": 0, "sampling_temperature": temperature}
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
    def _decoded(result: Any, tokenizer: Any, temperature: float) -> Decoded:
        tokens = list(result.sequences_ids[0])
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)  # length_penalty 1, as faster-whisper
        text = tokenizer.decode(tokens).strip()
        return Decoded(tokens, float(avg_logprob), compression_ratio(text), float(result.no_speech_prob), temperature)

    def _align(
        self, rows: list[RowRequest], decoded: list[Decoded], tokenizers: list[Any], encoded: Any
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
