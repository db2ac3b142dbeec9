"""faster-whisper (CTranslate2): the default on CPU (int8) and CUDA (float16).

With `batch_size` > 1 (the default) files go through the window scheduler: every file in flight hands its
speech windows to one `WindowScheduler` per loaded model, which decodes windows of many files in each
batch. With `batch_size` 0 or 1 a file is decoded alone by faster-whisper's sequential decoder, whose
windows condition on the previous text and fall back to higher temperatures on their own.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from pathlib import Path

import numpy as np

from batchscribe import weights
from batchscribe.audio import SAMPLE_RATE
from batchscribe.devices import DevicePool
from batchscribe.engines.base import Engine, FileTranscription
from batchscribe.errors import gpu_errors
from batchscribe.longform import pcm_windows
from batchscribe.options import TranscribeOptions
from batchscribe.rows import RowResult
from batchscribe.scheduler import FileJob, WindowScheduler
from batchscribe.segments import split_words
from batchscribe.transcript import Segment, Transcript, Word, low_confidence
from batchscribe.windows import Window, speech_windows

logger = logging.getLogger(__name__)

STREAM_PART_S = 5 * 60  # a long file is read, cut into windows and queued 5 minutes at a time
MAX_CARRY_S = 60.0  # a part's last window is cut again with the next part when this much audio or less is left
PARTS_AHEAD = 2  # parts queued before the oldest one's results are collected (memory: ~30 MB a part)
# Batches decoded at once on the CPU (`BATCHSCRIBE_CPU_LANES`; two by default), each lane a CTranslate2 worker
# on all the copy's cores, the weights shared. Beam search uses a second core poorly (1.3x faster on two than
# on one), so a long file's windows decode in two batches side by side, with the same words. Clips that share
# rows stay in the first lane (`scheduler`): spread over two lanes' batches they came out about 2 WER points
# worse, and alone the first lane runs on every core. A GPU has one lane, and so does the sequential decoder
# (batch size 1), which decodes a file window after window on all the cores.
CPU_LANES = int(os.environ.get("BATCHSCRIBE_CPU_LANES", "2"))
QUEUED_AUDIO_S = 40 * 60  # audio queued on the model at once, all files together (memory: ~100 MB a queued hour
# of features and samples): many short files in flight, a few long ones


def cpu_threads() -> int:
    """Cores this process may use (CTranslate2's own default of 4 oversubscribes small machines)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def copy_cores(options: TranscribeOptions) -> int:
    """Cores each model copy loaded for resolved `options` has (on the CPU the copies share the cores)."""
    return max(1, cpu_threads() // len(options.device_index))


def model_lanes(options: TranscribeOptions) -> int:
    """Batches a model loaded for resolved `options` decodes at once: CPU_LANES on the CPU when the window
    scheduler decodes (within the cores each model copy has), else one."""
    if options.device == "cuda" or options.batch_size <= 1:
        return 1
    return min(CPU_LANES, copy_cores(options))


class FasterWhisperEngine(Engine):
    def __init__(self, options: TranscribeOptions, cache_dir: Path) -> None:
        super().__init__(options)
        from faster_whisper import WhisperModel

        opts = self.options
        local = weights.ct2_model_dir(opts.model, cache_dir)
        # A bare name other than the offline one goes to faster-whisper's own download and cache.
        source = str(local) if local else opts.model
        devices = opts.device_index  # one model copy each
        lanes = model_lanes(opts)
        shown = (opts.model, opts.device, ",".join(map(str, devices)), opts.compute_type, source)
        logger.info("Loading faster-whisper %s (%s %s, %s) from %s", *shown)
        models = [
            WhisperModel(
                source,
                device=opts.device,
                device_index=index if opts.device == "cuda" else 0,
                compute_type=opts.compute_type,
                cpu_threads=copy_cores(opts),  # each lane on all of them: alone, or sharing them with the other
                num_workers=lanes,
                download_root=str(cache_dir / "models" / "faster-whisper"),
            )
            for index in devices
        ]
        self.model = models[0]
        self.pool = DevicePool(models, devices)
        self._queued = AudioBudget(QUEUED_AUDIO_S * len(models))

    @property
    def scheduler(self) -> WindowScheduler:
        """The first device's window scheduler, started on first use."""
        return self.pool.scheduler(0)

    def effective_options(self, options: TranscribeOptions) -> TranscribeOptions:
        if options.batch_size > 1:  # scheduled windows are independent: nothing to condition on
            return options.model_copy(update={"condition_on_previous_text": False})
        return options

    def transcribe_file(self, path: Path, options: TranscribeOptions) -> FileTranscription:
        if options.batch_size <= 1:
            return super().transcribe_file(path, options)
        with gpu_errors(), self.pool.least_busy() as slot:  # the whole file on one device
            total_s = path.stat().st_size // 2 / SAMPLE_RATE  # s16le mono
            return self._scheduled(pcm_windows(path, STREAM_PART_S), options, path.name, slot, total_s)

    def transcribe(self, audio: np.ndarray, options: TranscribeOptions) -> Transcript:
        """`audio` through the window scheduler, or faster-whisper's sequential decoder at batch size <= 1."""
        if options.batch_size <= 1:
            return self._sequential(audio, options)
        with self.pool.least_busy() as slot:
            return self._scheduled([(0.0, audio)], options, "audio", slot, len(audio) / SAMPLE_RATE).transcript

    def _scheduled(
        self,
        parts: Iterable[tuple[float, np.ndarray]],
        options: TranscribeOptions,
        name: str,
        slot: int,
        total_s: float,
    ) -> FileTranscription:
        """Cut each (offset_s, samples) part of a `total_s` long file into windows and queue them, a few
        parts ahead of the results."""
        job = FileJob(name=name, language=options.language)
        queued: list[list[Future]] = []
        results: list[RowResult] = []
        windows, duration_s = 0, 0.0
        held: list[float] = []
        try:
            for cut, whole_file, reached_s in _cut_parts(parts, options.vad_filter, total_s):
                windows, duration_s = windows + len(cut), reached_s
                held.append(self._queued.acquire(sum(w.duration_s for w in cut)))
                queued.append(self._submit(job, cut, options, self.pool.scheduler(slot), whole_file))
                while len(queued) > PARTS_AHEAD:
                    results += [f.result() for f in queued.pop(0)]
                    self._queued.release(held.pop(0))
            for part in queued:
                results += [f.result() for f in part]
        finally:
            self._queued.release(sum(held))
        transcript = _transcript(job, results, duration_s, options)
        shared = sum(1 for r in results if r.shared > 1)
        return FileTranscription(
            transcript,
            job.model_s,  # the model's time for this file, not the VAD or the wait for other files
            windows,
            job.redecoded,
            "; ".join(job.warnings),
            job.guard_s,
            shared,
        )

    def _submit(
        self, job: FileJob, windows: list, options: TranscribeOptions, scheduler: WindowScheduler, whole_file: bool
    ) -> list[Future]:
        return scheduler.submit(
            job,
            windows,
            task=options.task,
            initial_prompt=options.initial_prompt,
            beam_size=options.beam_size,
            temperatures=tuple(options.temperatures),
            batch_size=options.batch_size,
            whole_file=whole_file,
        )

    def _sequential(self, audio: np.ndarray, options: TranscribeOptions) -> Transcript:
        """faster-whisper's sequential decoder over `audio` (the `batch_size` <= 1 path), on the first device."""
        segments, info = self.model.transcribe(
            audio,
            language=options.language,
            task=options.task,
            beam_size=options.beam_size,
            temperature=list(options.temperatures),
            initial_prompt=options.initial_prompt,
            word_timestamps=options.word_timestamps,
            vad_filter=options.vad_filter,
            condition_on_previous_text=options.condition_on_previous_text,
        )
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
                unsure=low_confidence(s.words or ()),
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


class AudioBudget:
    """Seconds of audio queued on the model, all files together: a file waits while the budget is spent
    (a part larger than the whole budget goes alone)."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.queued = seconds, 0.0
        self._cond = threading.Condition()

    def acquire(self, seconds: float) -> float:
        with self._cond:
            while self.queued > 0 and self.queued + seconds > self.seconds:
                self._cond.wait()
            self.queued += seconds
            return seconds

    def release(self, seconds: float) -> None:
        with self._cond:
            self.queued = max(0.0, self.queued - seconds)
            self._cond.notify_all()


def _cut_parts(
    parts: Iterable[tuple[float, np.ndarray]], vad: bool, total_s: float
) -> Iterator[tuple[list[Window], bool, float]]:
    """Each (offset_s, samples) part's windows, whether they are all of the file's, and the file time the part
    reaches. A part's last window is cut again with the next part, so no window ends at a part's edge with
    room left in it: a long file gets the windows it would get cut in one piece (a row fewer a part)."""
    index, carry, carry_offset_s = 0, None, 0.0
    for offset_s, samples in parts:
        if carry is not None:
            samples, offset_s = np.concatenate([carry, samples]), carry_offset_s
        end_s = offset_s + len(samples) / SAMPLE_RATE
        last = end_s >= total_s - 1e-6
        cut = speech_windows(samples, vad=vad, offset_s=offset_s, first_index=index)
        carry = None
        if not last and cut:
            start = round((cut[-1].file_start_s - offset_s) * SAMPLE_RATE)
            if (len(samples) - start) / SAMPLE_RATE <= MAX_CARRY_S:
                cut.pop()
                carry, carry_offset_s = samples[start:], offset_s + start / SAMPLE_RATE
        yield cut, index == 0 and last, end_s
        index += len(cut)


def _transcript(job: FileJob, results: list[RowResult], duration_s: float, options: TranscribeOptions) -> Transcript:
    """The file's segments, built from its windows' timed words (kept: subtitle cues are laid out from them)."""
    segments: list[Segment] = []
    for result in results:
        tokens_of = {id(w): t for w, t in zip(result.words, result.word_tokens)}
        for words in split_words(result.words):
            tokens = tuple(t for w in words for t in tokens_of[id(w)])
            segments.append(
                Segment(
                    id=len(segments),
                    seek=result.seek,
                    start_s=words[0].start_s,
                    end_s=max(words[-1].end_s, words[0].start_s),
                    text="".join(w.word for w in words),
                    tokens=tokens,
                    temperature=result.temperature,
                    avg_logprob=result.avg_logprob,
                    compression_ratio=result.compression_ratio,
                    no_speech_prob=result.no_speech_prob,
                    words=tuple(words),
                    unsure=result.unsure or low_confidence(words),
                )
            )
    probability = job.language_probability if job.language else 0.0  # nothing heard: no language, no confidence
    return Transcript(job.language or "", probability, duration_s, tuple(segments))
