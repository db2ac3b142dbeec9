"""Headless Chromium for UI tests: the DOM of a page after its scripts ran (Debian's `chromium`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [  # offline and quiet; without the virtual time budget the SPA is captured before it renders
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=15000",
    "--window-size=1400,1000",
]

needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no chromium (make test installs it)")


def render(url: str, tmp_path: Path, screenshot: Path | None = None) -> str:
    """The DOM of `url` after the page's scripts ran (and a screenshot of it, if asked)."""
    extra = [f"--screenshot={screenshot}"] if screenshot else []
    profile = tmp_path / f"chromium-{len(list(tmp_path.glob('chromium-*')))}"
    result = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra, "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    return result.stdout
