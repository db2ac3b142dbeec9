"""Default subtitles on real speech in four languages, checked cue by cue against the style's rules.

Real recorded voices (Debian's Asterisk prompt packages, see tests/voices.py) and the committed clips go
through `batchscribe run` as a user runs it; every SRT and VTT cue is read back by tests/subtitle_checker.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from batchscribe.manifest import read_manifest
from batchscribe.styles import style_for
from tests.subtitle_checker import cue_faults, fault_counts, parse_cues, shown_words
from tests.voices import missing_voices, monologue, write_wav

SPEECH = Path(__file__).resolve().parents[1] / "fixtures" / "speech"
CLI = [sys.executable, "-m", "flows.cli"]
VOICE_LANGUAGES = {"allison": "en", "armelle": "fr", "july": "es", "paola": "it"}
MONOLOGUE_S = 30.0
TARGET = 0.95  # share of cues that meet every rule


@pytest.fixture(scope="module")
def inbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if missing := missing_voices(tuple(VOICE_LANGUAGES)):
        pytest.skip(f"voice packages not installed: {', '.join(missing)}")
    folder = tmp_path_factory.mktemp("inbox")
    for speaker, language in VOICE_LANGUAGES.items():
        write_wav(monologue(speaker, duration_s=MONOLOGUE_S, seed=1), folder / f"{language}-{speaker}.wav")
    for clip in SPEECH.glob("*.*"):
        if clip.suffix != ".json":
            shutil.copy(clip, folder / f"clip-{clip.name}")
    return folder


def _run(inbox: Path, out: Path, cache_dir: Path, *flags: str) -> None:
    command = [*CLI, "run", str(inbox), "-o", str(out), "-f", "srt,vtt,json", "--no-progress"]
    done = subprocess.run([*command, "--cache-dir", str(cache_dir), *flags], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def _check(out: Path, style_name: str) -> tuple[int, int, Counter]:
    manifest = read_manifest(out)
    assert set(manifest["subtitle_style"]) == {style_name}
    passed, total, faults = 0, 0, Counter()
    for row in manifest.itertuples(index=False):
        words = json.loads((out / row.json_path).read_text(encoding="utf-8"))["text"].split()
        style = style_for(style_name, row.language)
        for fmt in ("srt", "vtt"):
            cues = parse_cues((out / getattr(row, f"{fmt}_path")).read_text(encoding="utf-8"))
            assert shown_words(cues, label=re.compile(r"^\[SPEAKER_\d+\]: ")) == words, row.relative_path
            broken = cue_faults(cues, style)
            passed += sum(not b for b in broken)
            total += len(broken)
            faults += fault_counts(broken)
    return passed, total, faults


@pytest.mark.slow
def test_default_and_bbc_subtitles_meet_their_rules_on_real_speech(prefect_server, cache_dir, inbox, tmp_path):
    _run(inbox, tmp_path / "netflix", cache_dir)
    passed, total, faults = _check(tmp_path / "netflix", "netflix")
    print(f"netflix: {passed} of {total} cues pass every rule ({passed / total:.1%}); failing by rule: {dict(faults)}")
    assert len(set(read_manifest(tmp_path / "netflix")["language"])) >= 4
    assert total >= 60 and passed >= TARGET * total

    _run(inbox, tmp_path / "bbc", cache_dir, "--subtitle-style", "bbc")  # the transcripts come from the cache
    passed, total, faults = _check(tmp_path / "bbc", "bbc")
    print(f"bbc: {passed} of {total} cues pass every rule ({passed / total:.1%}); failing by rule: {dict(faults)}")
    assert passed >= TARGET * total
