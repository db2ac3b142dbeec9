"""The decoder's checks on a decoded row, and the second opinion that mends what fails them.

A row is a loop (the same words over and over, or more text than its speech can hold), speech that decoded
to nothing or to far too little, too unsure to trust, or fine. Text that merely compresses well (a menu, a
list, a chorus said again) is not a loop: Whisper's compression-ratio check would call it one. A row that
fails is decoded again as two shorter rows, and `second_opinion` keeps the better reading; words of an
unsure row that only one reading has and the model barely believes are dropped, and what stays unsure is
marked.
"""

from __future__ import annotations

import difflib
import math
import re
import zlib
from dataclasses import replace

from batchscribe.rows import LOG_PROB_THRESHOLD, NO_SPEECH_THRESHOLD, SECOND_OPINION, Decoded, RowResult, Verdict

MIN_TOKENS_PER_S = 0.75  # speech of a long window that decodes to fewer tokens than this is suspect
DENSITY_MIN_WINDOW_S = 8.0  # ... judged only on windows at least this long
MAX_TOKENS_PER_S = 20.0  # more text than anyone says in the time: a loop (fast speech: 6-12 tokens a second)
LOOP_MIN_COPIES = 4  # the same run of tokens this many times in a row is a loop, not a sentence said again ...
LOOP_MIN_TOKENS = 24  # ... when the copies add up to at least this many tokens
LOOP_MAX_NGRAM = 24  # longest run of tokens looked at
UNSURE_WORD_PROBABILITY = 0.3  # in an unsure row, a word below it that only one reading has is dropped


def check(decoded: Decoded, duration_s: float, eot: int, max_tokens: int) -> Verdict:
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


def compression_ratio(text: str) -> float:
    """Whisper's repetitiveness measure: text bytes over their zlib-compressed bytes."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0
