import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from batchscribe.audio import decode_audio, decode_command, ffmpeg_exe, stream_kinds
from batchscribe.errors import MediaError, NoAudioError
from tests.media import load_audio

SPEECH = Path(__file__).resolve().parents[1] / "fixtures" / "speech"
SAMPLES = Path(__file__).resolve().parents[2] / "samples"


@pytest.fixture(params=["bundled", "system"])
def ffmpeg_build(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Each ffmpeg a user may have: the one imageio-ffmpeg ships and the one on PATH (Debian's 5.1, say)."""
    bundled = imageio_ffmpeg.get_ffmpeg_exe()
    exe = bundled if request.param == "bundled" else shutil.which("ffmpeg")
    if exe is None or (request.param == "system" and Path(exe).resolve() == Path(bundled).resolve()):
        pytest.skip("no system ffmpeg on PATH")
    monkeypatch.setenv("BATCHSCRIBE_FFMPEG", exe)
    ffmpeg_exe.cache_clear()
    yield exe
    ffmpeg_exe.cache_clear()


def test_bad_inputs_are_classified_alike_by_every_ffmpeg_build(
    ffmpeg_build: str, bad_media: dict[str, Path], tmp_path: Path
) -> None:
    assert ffmpeg_exe() == ffmpeg_build
    with pytest.raises(MediaError, match="not an audio or video file ffmpeg can read") as text:
        decode_audio(bad_media["text_as_mp3"], tmp_path / "x.pcm")
    assert not isinstance(text.value, NoAudioError)
    with pytest.raises(NoAudioError, match=r"no audio stream in the file \(video only\)"):
        decode_audio(bad_media["video_no_audio"], tmp_path / "v.pcm")
    video = SAMPLES / "apollo" / "moon_landing.mp4"
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    with pytest.raises(MediaError, match="moov atom not found"):
        decode_audio(cut, tmp_path / "c.pcm")
    assert stream_kinds(video) == ["video", "audio"] and stream_kinds(bad_media["text_as_mp3"]) == []
    assert 5 < decode_audio(bad_media["odd_name"], tmp_path / "o.pcm").duration_s < 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.mp4", "o.pcm"]  # no partial output left behind


def test_decodes_wav_and_mp3_to_16k_mono(tmp_path: Path) -> None:
    for name in ("en.wav", "es.mp3"):
        audio = decode_audio(SPEECH / name, tmp_path / f"{name}.pcm")
        samples = load_audio(audio.path)
        assert 5 < audio.duration_s < 20
        assert len(samples) == pytest.approx(audio.duration_s * 16_000)
        assert samples.dtype == np.float32 and 0.05 < np.abs(samples).max() <= 1.0
        assert audio.warning == ""


def test_decodes_the_audio_track_of_a_video(tmp_path: Path) -> None:
    video = Path(__file__).resolve().parents[2] / "samples" / "apollo" / "moon_landing.mp4"
    assert 10 < decode_audio(video, tmp_path / "v.pcm").duration_s < 14


def test_command_is_an_argv_that_cannot_read_a_name_as_an_option(tmp_path: Path) -> None:
    src = tmp_path / "-i http:evil.mp3"
    argv = decode_command(src, tmp_path / "out.pcm")
    assert isinstance(argv, list) and "-nostdin" in argv
    assert argv[argv.index("-i") + 1] == f"file:{src}"
    assert all(not a.startswith("-i http") for a in argv)


def test_name_with_dash_quotes_and_unicode_decodes(bad_media: dict[str, Path], tmp_path: Path) -> None:
    assert decode_audio(bad_media["odd_name"], tmp_path / "o.pcm").duration_s > 5


def test_text_file_named_mp3_is_a_clear_media_error(bad_media: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="not an audio or video file"):
        decode_audio(bad_media["text_as_mp3"], tmp_path / "x.pcm")
    assert not list(tmp_path.iterdir())  # no partial output left behind


def test_video_without_audio_is_no_audio(bad_media: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(NoAudioError, match="no audio stream"):
        decode_audio(bad_media["video_no_audio"], tmp_path / "x.pcm")


def test_truncated_mp3_decodes_what_is_there_with_a_warning(bad_media: dict[str, Path], tmp_path: Path) -> None:
    audio = decode_audio(bad_media["truncated_mp3"], tmp_path / "t.pcm")
    assert 2 < audio.duration_s < 8
    assert "truncated" in audio.warning and "@ 0x" not in audio.warning


def test_truncated_mp4_names_the_missing_moov_atom(tmp_path: Path) -> None:
    video = Path(__file__).resolve().parents[2] / "samples" / "apollo" / "moon_landing.mp4"
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    with pytest.raises(MediaError, match="moov atom not found"):
        decode_audio(cut, tmp_path / "c.pcm")


def test_the_start_of_an_mp3_is_not_taken_for_the_whole_file(tmp_path: Path) -> None:
    # No decoder error: only the length the mp3's header declares shows that most of the file is missing.
    head = tmp_path / "head.mp3"
    head.write_bytes((SPEECH / "de.mp3").read_bytes()[:3000])
    audio = decode_audio(head, tmp_path / "h.pcm")
    assert audio.duration_s < 2
    # The header's estimate: 8.75 s to ffmpeg 9, 8.80 s to Debian's 5.1 (the clip decodes to 8.8 s).
    assert "truncated" in audio.warning and re.search(r"of the 8\.(7|8)\d s the file declares", audio.warning)


COMPLETE_MEDIA = sorted(
    p
    for p in [*SPEECH.iterdir(), *SAMPLES.rglob("*")]
    if p.suffix in (".mp3", ".wav", ".mp4") and p.name != "broken.mp3"
)


@pytest.mark.parametrize("media", COMPLETE_MEDIA, ids=lambda p: p.name)
def test_complete_files_decode_without_a_warning(media: Path, tmp_path: Path) -> None:
    audio = decode_audio(media, tmp_path / "a.pcm")
    assert audio.duration_s > 5 and audio.warning == ""


def test_a_decode_that_runs_past_its_timeout_is_stopped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import batchscribe.audio

    monkeypatch.setattr(batchscribe.audio, "DECODE_TIMEOUT_S", 0.001)
    with pytest.raises(MediaError, match="did not finish decoding within 0.001 s"):
        decode_audio(SPEECH / "en.wav", tmp_path / "x.pcm")
    assert not list(tmp_path.iterdir())
