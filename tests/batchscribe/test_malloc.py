"""The malloc-arena cap and pyarrow's pool (their effect on RSS is measured by bench/speed.py and
bench/pool.py, not here)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import pytest

from batchscribe.malloc import arrow_uses_malloc, limit_malloc_arenas


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_cap_applies_on_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert limit_malloc_arenas() is True


def test_users_own_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    assert limit_malloc_arenas() is False


def test_arrow_allocates_through_malloc_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow  # noqa: F401 - loaded, as in any test process that reads a manifest

    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "mimalloc")
    assert arrow_uses_malloc() is False and os.environ["ARROW_DEFAULT_MEMORY_POOL"] == "mimalloc"
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL")
    assert arrow_uses_malloc() is False  # pyarrow is loaded by now: set for child processes only
    assert os.environ["ARROW_DEFAULT_MEMORY_POOL"] == "system"


def test_importing_the_flows_makes_pyarrow_allocate_through_malloc() -> None:
    import subprocess
    import sys

    code = "import flows.transcribe_batch, pyarrow; print(pyarrow.default_memory_pool().backend_name)"
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "system"
