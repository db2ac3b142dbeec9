"""Files through a fresh window scheduler, for the decoder's and the packing's tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from batchscribe.decoding import BatchDecoder
from batchscribe.options import TranscribeOptions
from batchscribe.rows import RowResult
from batchscribe.scheduler import FileJob, WindowScheduler
from batchscribe.windows import speech_windows

OPTIONS = TranscribeOptions(device="cpu").resolved()


@dataclass
class Run:
    jobs: dict[str, FileJob]
    results: dict[str, list[RowResult]]
    scheduler: WindowScheduler


def decode_files(
    decoder: BatchDecoder, files: dict[str, np.ndarray], languages: dict[str, str | None], lanes: int | None = None
) -> Run:
    """Every window of every file (name -> samples) through one fresh scheduler started after all are
    queued, each file with its language from `languages` (None: detected), in `lanes` lanes (default: the
    model's)."""
    scheduler = WindowScheduler(decoder, start=False, lanes=lanes)
    jobs, futures = {}, {}
    for name, samples in files.items():
        jobs[name] = FileJob(name, languages[name])
        futures[name] = scheduler.submit(
            jobs[name], speech_windows(samples, vad=True), task="transcribe", initial_prompt=None, beam_size=5,
            temperatures=OPTIONS.temperatures, batch_size=8,
        )  # fmt: skip
    scheduler.start()
    results = {name: [f.result(timeout=600) for f in fs] for name, fs in futures.items()}
    return Run(jobs, results, scheduler)
