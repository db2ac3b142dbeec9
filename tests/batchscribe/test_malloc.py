"""The malloc-arena cap, pyarrow's pool and malloc's huge pages (the effect on RSS and speed is measured by
bench/speed.py, bench/pool.py and bench/scheduler.py, not here)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import pytest

from batchscribe.malloc import HUGEPAGE_TUNABLE, arrow_uses_malloc, hugepage_environment, limit_malloc_arenas


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


def test_hugepage_tunable_is_added_once_and_the_users_own_setting_wins() -> None:
    if hugepage_environment({}) is None:
        pytest.skip("not glibc 2.35 or later")
    assert hugepage_environment({"A": "1"}) == {"A": "1", "GLIBC_TUNABLES": HUGEPAGE_TUNABLE}
    kept = hugepage_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert kept == {"GLIBC_TUNABLES": f"glibc.malloc.arena_max=2:{HUGEPAGE_TUNABLE}"}
    assert hugepage_environment({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}) is None
    assert hugepage_environment(kept) is None


def _faults(env: dict[str, str]) -> int:
    """Page faults of a process that allocates, touches and frees a 256 MB block ten times."""
    import subprocess
    import sys

    code = (  # through malloc itself: numpy asks for huge pages on its own large arrays
        "import ctypes, ctypes.util, resource\n"
        "libc = ctypes.CDLL(ctypes.util.find_library('c'))\n"
        "libc.malloc.restype = ctypes.c_void_p\n"
        "libc.free.argtypes = [ctypes.c_void_p]\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(10):\n"
        "    p = libc.malloc(256 << 20); ctypes.memset(p, 1, 256 << 20); libc.free(p)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout)


def test_the_command_starts_again_with_the_tunable_and_faults_far_less() -> None:
    import subprocess
    import sys

    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if hugepage_environment(env) is None or not thp.exists() or "[never]" in thp.read_text():
        pytest.skip("no glibc 2.35+ or no transparent huge pages")
    code = (
        "import os; from batchscribe.malloc import exec_with_hugepages\n"
        "os.environ['STARTS'] = str(int(os.environ.get('STARTS', '0')) + 1)\n"
        "exec_with_hugepages()\n"
        "print(os.environ['STARTS'], os.environ['GLIBC_TUNABLES'])\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["2", HUGEPAGE_TUNABLE]  # started once more, then ran on
    plain, huge = _faults(env), _faults({**env, "GLIBC_TUNABLES": HUGEPAGE_TUNABLE})
    assert huge < plain / 4, (plain, huge)  # 4 KB pages: ~650,000 faults; 2 MB pages: a few thousand
