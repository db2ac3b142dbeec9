"""In-process decoding (PyAV) against the ffmpeg process: the same samples, the same errors and warnings."""

import subprocess
from pathlib import Path

import numpy as np
import pytest

from batchscribe.audio import decode_audio
from batchscribe.decode import decode_in_process, decode_media
from batchscribe.errors import MediaError, NoAudioError

SPEECH = Path(__file__).resolve().parents[1] / "fixtures" / "speech"
VIDEO = Path(__file__).resolve().parents[2] / "samples" / "apollo" / "moon_landing.mp4"


@pytest.mark.parametrize("media", [SPEECH / "en.wav", SPEECH / "es.mp3", VIDEO], ids=lambda p: p.name)
def test_in_process_decoding_gives_ffmpegs_samples(media: Path, tmp_path: Path) -> None:
    ours = decode_in_process(media, tmp_path / "av.pcm")
    theirs = decode_audio(media, tmp_path / "ffmpeg.pcm")
    a, b = (np.fromfile(p, dtype="<i2").astype(np.float64) for p in (ours.path, theirs.path))
    # FFmpeg's libraries either way; another FFmpeg version may trim an AAC track's priming differently.
    assert ours.duration_s == pytest.approx(theirs.duration_s, abs=0.05) and ours.warning == theirs.warning == ""
    if len(a) == len(b):
        assert np.abs(a - b).max() <= 1  # at most a rounding step apart


def test_bytes_already_read_decode_like_the_file(tmp_path: Path) -> None:
    from_file = decode_media(SPEECH / "en2.mp3", tmp_path / "f.pcm")
    from_bytes = decode_media(SPEECH / "en2.mp3", tmp_path / "b.pcm", (SPEECH / "en2.mp3").read_bytes())
    assert Path(from_file.path).read_bytes() == Path(from_bytes.path).read_bytes()


def test_bad_inputs_read_as_the_ffmpeg_path_words_them(bad_media: dict[str, Path], tmp_path: Path) -> None:
    for name, error in (("text_as_mp3", MediaError), ("video_no_audio", NoAudioError)):
        with pytest.raises(error) as ours:
            decode_media(bad_media[name], tmp_path / "x.pcm", bad_media[name].read_bytes())
        with pytest.raises(error) as theirs:
            decode_audio(bad_media[name], tmp_path / "x.pcm")
        assert str(ours.value) == str(theirs.value)
    assert not list(tmp_path.iterdir())  # no partial output left behind
    truncated = decode_media(bad_media["truncated_mp3"], tmp_path / "t.pcm")
    assert 2 < truncated.duration_s < 8 and "truncated" in truncated.warning


def test_the_start_of_an_mp3_still_says_how_much_is_missing(tmp_path: Path) -> None:
    head = tmp_path / "head.mp3"
    head.write_bytes((SPEECH / "de.mp3").read_bytes()[:3000])
    audio = decode_media(head, tmp_path / "h.pcm", head.read_bytes())
    assert audio.duration_s < 2 and "truncated" in audio.warning and "8.75 s" in audio.warning


def test_the_default_flagged_track_is_decoded_as_ffmpeg_chooses_it(tmp_path: Path) -> None:
    from batchscribe.audio import ffmpeg_exe

    two = tmp_path / "two_tracks.mka"  # Spanish first, English second and flagged default
    inputs = ["-t", "3", "-i", f"file:{SPEECH / 'es.mp3'}", "-t", "3", "-i", f"file:{SPEECH / 'en2.mp3'}"]
    tracks = ["-map", "0:a", "-map", "1:a", "-c:a", "pcm_s16le", "-disposition:a:0", "0", "-disposition:a:1", "default"]
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", *inputs, *tracks, f"file:{two}"], check=True)
    ours = decode_in_process(two, tmp_path / "av.pcm")
    theirs = decode_audio(two, tmp_path / "ffmpeg.pcm")
    a, b = (np.fromfile(p, dtype="<i2").astype(np.float64) for p in (ours.path, theirs.path))
    n = min(len(a), len(b))
    assert abs(len(a) - len(b)) < 800 and np.corrcoef(a[:n], b[:n])[0, 1] > 0.99  # the same track
