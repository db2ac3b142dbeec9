"""The documentation site builds with `mkdocs build --strict`: a broken link or anchor fails the suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_docs_build_strict(tmp_path) -> None:
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    pages = {p.relative_to(tmp_path / "site").as_posix() for p in (tmp_path / "site").rglob("index.html")}
    assert {"index.html", "subtitles/index.html", "search/index.html", "performance/index.html"} <= pages


def test_the_readme_stays_short() -> None:
    draft = ROOT / "docs" / "README-draft.md"  # the README to be, while it is a draft
    readme = draft if draft.exists() else ROOT / "README.md"
    assert len(readme.read_text(encoding="utf-8").splitlines()) < 300
