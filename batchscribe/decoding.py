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

import difflib
import logging
import math
import re
import zlib
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from batchscribe.transcript import Word
from batchscribe.windows import Window

logger = logging.getLogger(__name__)

LOG_PROB_THRESHOLD = -1.0  # Whisper's: below it the decode is too unsure
NO_SPEECH_THRESHOLD = 0.6  # Whisper's: above it (with a low log probability) the window is silent
MIN_TOKENS_PER_S = 0.75  # speech of a long window that decodes to fewer tokens than this is suspect
DENSITY_MIN_WINDOW_S = 8.0  # ... judged only on windows at least this long
MAX_TOKENS_PER_S = 12.0  # more text than anyone says in the time: a loop (fast speech is 5-7 tokens a second)
LOOP_MIN_COPIES = 4  # the same run of tokens this many times in a row is a loop, not a sentence said again ...
LOOP_MIN_TOKENS = 24  # ... when the copies add up to at least this many tokens
LOOP_MAX_NGRAM = 24  # longest run of tokens looked at
UNSURE_WORD_PROBABILITY = 0.3  # in an unsure row, a word below it that only one reading has is dropped
LANGUAGE_CHECK_MIN_S = 5.0  # a row this long whose own language is another one is marked unsure ...
LANGUAGE_CHECK_PROBABILITY = 0.9  # ... when the model is at least this sure of the other language
FRAMES_PER_SECOND = 100  # mel frames
SAMPLING_SEED = 0  # a first temperature above 0 samples: with a fixed seed, runs repeat
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

    @property
    def text(self) -> str:
        return "".join(w.word for w in self.words)


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
    def _decoded(result: Any, tokenizer: Any, temperature: float) -> _Decoded:
        tokens = list(result.sequences_ids[0])
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)  # length_penalty 1, as faster-whisper
        text = tokenizer.decode(tokens).strip()
        return _Decoded(tokens, float(avg_logprob), compression_ratio(text), float(result.no_speech_prob), temperature)

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


def check(decoded: _Decoded, duration_s: float, eot: int, max_tokens: int) -> Verdict:
    """What a decoded row looks like: silent, fine, or worth a second opinion (loop, missing, sparse, unsure)."""
    if decoded.silent():
        return "silent"
    text_tokens = [t for t in decoded.tokens if t < eot]
    if not text_tokens:
        return "silent" if decoded.no_speech_prob > NO_SPEECH_THRESHOLD else "missing"
    if is_loop(text_tokens, duration_s, max_tokens):
        return "loop"
    if duration_s >= DENSITY_MIN_WINDOW_S and len(text_tokens) / duration_s < MIN_TOKENS_PER_S:
        return "sparse"
    if decoded.avg_logprob < LOG_PROB_THRESHOLD:
        return "unsure"
    return "ok"


def is_loop(tokens: list[int], duration_s: float, max_tokens: int) -> bool:
    """A decoding loop: text up to the length limit, more text than the time can hold, or one run of
    tokens repeated back to back many times. A sentence said again, or a list, is none of these."""
    if len(tokens) >= 0.95 * max_tokens:
        return True
    if len(tokens) >= LOOP_MIN_TOKENS and len(tokens) / max(duration_s, 1.0) > MAX_TOKENS_PER_S:
        return True
    return repeated_run(tokens) is not None


def repeated_run(items: list) -> tuple[int, int, int] | None:
    """(start, length, copies) of the first run of `items` repeated back to back at least LOOP_MIN_COPIES
    times and LOOP_MIN_TOKENS items in all; None when there is none."""
    for n in range(1, LOOP_MAX_NGRAM + 1):
        need = max(LOOP_MIN_COPIES, math.ceil(LOOP_MIN_TOKENS / n))
        for start in range(0, len(items) - n * need + 1):
            unit = items[start : start + n]
            copies = 1
            while items[start + copies * n : start + (copies + 1) * n] == unit:
                copies += 1
            if copies >= need:
                return start, n, copies
    return None


def second_opinion(first: RowResult, halves: list[RowResult]) -> RowResult:
    """The better of a row's first decode and its decode as two shorter rows (`halves`, in order).

    A loop, or speech that decoded to nothing or too little, takes the halves' reading unless the halves
    fail too. An unsure row keeps the reading with the higher log probability per token, without the words
    that only it has and that the model gives less than UNSURE_WORD_PROBABILITY. A loop that nothing
    mends keeps one copy of what repeats. What is still unsure is marked.
    """
    merged = _joined(first, halves)
    halves_fail = any(h.verdict in SECOND_OPINION for h in halves)
    if first.verdict == "unsure":
        chosen, other = (merged, first) if merged.avg_logprob > first.avg_logprob else (first, merged)
        kept = _supported(chosen, other)
        unsure = kept.avg_logprob < LOG_PROB_THRESHOLD or any(h.unsure for h in halves)
        return replace(kept, redecoded=True, unsure=unsure or first.unsure)
    if not halves_fail:
        return replace(merged, unsure=first.unsure)
    if first.verdict == "loop" and (merged.verdict == "loop" or not merged.words):
        return replace(_without_repeats(first), redecoded=True, unsure=True)
    chosen = merged if merged.words or not first.words else first
    return replace(chosen, redecoded=True, unsure=True)


def _joined(first: RowResult, halves: list[RowResult]) -> RowResult:
    tokens = [t for h in halves for t in h.tokens]
    weights = [max(len(h.tokens), 1) for h in halves]
    avg_logprob = sum(h.avg_logprob * w for h, w in zip(halves, weights)) / sum(weights)
    verdicts = [h.verdict for h in halves]
    verdict = next((v for v in ("loop", "missing", "sparse", "unsure") if v in verdicts), "ok")
    if all(v == "silent" for v in verdicts):
        verdict = "silent"
    text = "".join(h.text for h in halves).strip()
    return RowResult(
        tuple(w for h in halves for w in h.words),
        tuple(t for h in halves for t in h.word_tokens),
        tuple(tokens),
        avg_logprob,
        compression_ratio(text),
        min(h.no_speech_prob for h in halves),
        first.temperature,
        True,
        first.seek,
        verdict,
        unsure=any(h.unsure for h in halves),
    )


def _normalized(word: str) -> str:
    return re.sub(r"[^\w]+", "", word.lower())


def _supported(chosen: RowResult, other: RowResult) -> RowResult:
    """`chosen` without the words that `other` does not have and the model gives little probability."""
    mine = [_normalized(w.word) for w in chosen.words]
    theirs = [_normalized(w.word) for w in other.words]
    matched = set()
    for block in difflib.SequenceMatcher(None, mine, theirs, autojunk=False).get_matching_blocks():
        matched.update(range(block.a, block.a + block.size))
    keep = [i for i, w in enumerate(chosen.words) if i in matched or w.probability >= UNSURE_WORD_PROBABILITY]
    if len(keep) == len(chosen.words):
        return chosen
    return replace(
        chosen,
        words=tuple(chosen.words[i] for i in keep),
        word_tokens=tuple(chosen.word_tokens[i] for i in keep),
        tokens=tuple(t for i in keep for t in chosen.word_tokens[i]),
        dropped_words=chosen.dropped_words + len(chosen.words) - len(keep),
    )


def _without_repeats(result: RowResult) -> RowResult:
    """`result` with every back-to-back repeat of a looping run of words cut to its first copy."""
    words, word_tokens = list(result.words), list(result.word_tokens)
    while (run := repeated_run([_normalized(w.word) for w in words])) is not None:
        start, n, copies = run
        del words[start + n : start + n * copies], word_tokens[start + n : start + n * copies]
    return replace(
        result,
        words=tuple(words),
        word_tokens=tuple(word_tokens),
        tokens=tuple(t for ts in word_tokens for t in ts),
        dropped_words=result.dropped_words + len(result.words) - len(words),
    )


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
