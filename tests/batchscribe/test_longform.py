from pathlib import Path

import numpy as np

from batchscribe.audio import decode_audio
from batchscribe.engines import load_engine
from batchscribe.longform import pcm_windows, transcribe_pcm
from batchscribe.options import TranscribeOptions

SPEECH = Path(__file__).resolve().parents[1] / "fixtures" / "speech"


def write_pcm(path: Path, samples: np.ndarray) -> Path:
    (samples * 32767).astype("<i2").tofile(path)
    return path


def test_windows_cover_the_file_exactly_and_cut_in_silence(tmp_path: Path) -> None:
    rate = 16_000
    tone = 0.5 * np.sin(np.linspace(0, 2 * np.pi * 440 * 100, 100 * rate, dtype=np.float32))
    tone[57 * rate : 58 * rate] = 0  # one quiet second inside the search region of the first window
    path = write_pcm(tmp_path / "x.pcm", tone)
    windows = list(pcm_windows(path, window_s=60))
    assert sum(len(w) for _, w in windows) == len(tone)
    offsets = [offset for offset, _ in windows]
    assert offsets[0] == 0 and 57 <= offsets[1] <= 58  # the cut landed in the quiet second
    assert all(w.dtype == np.float32 for _, w in windows)


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_reading_windows_does_not_grow_memory_with_duration(tmp_path: Path) -> None:
    hour = tmp_path / "hour.pcm"
    chunk = (np.random.default_rng(0).normal(0, 300, 60 * 16_000)).astype("<i2").tobytes()
    with hour.open("wb") as fh:
        for _ in range(60):  # one hour, 115 MB of PCM
            fh.write(chunk)
    before, peak = _rss_mb(), 0.0
    for _, window in pcm_windows(hour, window_s=120):
        peak = max(peak, _rss_mb())
        del window
    assert peak - before < 40, (before, peak)  # two minutes of float32 is 7.7 MB; a memory map would hold 115 MB


def test_windowed_transcript_is_stitched_in_order(tmp_path: Path, session_cache: Path) -> None:
    clip = decode_audio(SPEECH / "en.wav", tmp_path / "en.pcm")
    pcm = np.fromfile(clip.path, dtype="<i2")
    gap = np.zeros(16_000 * 2, dtype="<i2")
    np.concatenate([pcm, gap, pcm]).tofile(tmp_path / "twice.pcm")
    opts = TranscribeOptions(device="cpu", temperatures=(0.0,)).resolved()
    engine = load_engine(opts, session_cache)
    transcript = transcribe_pcm(engine, tmp_path / "twice.pcm", opts, window_s=clip.duration_s + 1.5)
    starts = [s.start_s for s in transcript.segments]
    assert starts == sorted(starts) and [s.id for s in transcript.segments] == list(range(len(starts)))
    assert transcript.text.lower().count("library") == 2
    assert transcript.segments[-1].end_s > clip.duration_s + 2  # second window shifted by its offset
    assert transcript.language == "en"
