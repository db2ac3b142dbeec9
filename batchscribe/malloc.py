"""Keep the allocators' per-thread caches from inflating a multi-threaded batch's memory.

glibc gives each thread that allocates its own arena (up to 8 per core), and freed memory stays cached in
each. The flow's worker threads, Prefect's event-loop threads and the engines' threads measured 1.75 GB
peak RSS on a 13-minute file, against 1.2 GB for the bare engine loop; two arenas brought it to 1.27-1.32 GB
(bench/speed.py corpus, README "Performance") at no measurable cost in speed.

The encoder's batches allocate and free hundreds of MB a call (the attention of every row over 1,500
positions), which glibc hands to and takes back from the kernel each time: on 40 files of 8-25 s, 11
million page faults and more than a quarter of the run's CPU time in the kernel (34.5 of 126 s). With
glibc's `glibc.malloc.hugetlb=1` tunable, malloc asks for transparent huge pages on those blocks: 1
million faults, and the run 25% faster (bench/scheduler.py, docs/performance.md). glibc reads tunables
only when a process starts: the `batchscribe` command starts itself again with the tunable
(`exec_with_hugepages`, in `flows/command.py`, before the flows are imported), the deployments and the
Docker image set it in their environment.

pyarrow allocates through its bundled mimalloc by default, which kept what the manifest and segment
writers' parquet buffers freed (built in the flow's thread and in every worker's): the flow's memory grew
~4 KB a file done (bench/pool.py, docs/performance-pool.md). Through glibc's malloc it stays flat.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys
from collections.abc import Mapping

M_ARENA_MAX = -8  # from glibc's malloc.h
DEFAULT_ARENAS = 2
HUGEPAGE_TUNABLE = "glibc.malloc.hugetlb=1"  # malloc's blocks on transparent huge pages (glibc 2.35 and later)


def limit_malloc_arenas(arenas: int = DEFAULT_ARENAS) -> bool:
    """Cap glibc's malloc arenas for this process unless MALLOC_ARENA_MAX is set; True when applied.

    Safe to call at any time and more than once; a no-op off glibc.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return False  # the user's (or the container's) own setting, applied by glibc at start-up
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        return False


def release_free_memory() -> bool:
    """Hand memory that glibc holds freed back to the system (`malloc_trim`); True when some was released.

    Worth calling between large, repeated allocations of similar size (a long file's windows), which glibc
    otherwise keeps cached, fragmented, in its heap. A no-op off glibc.
    """
    try:
        return bool(ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0))
    except (OSError, AttributeError):
        return False


def arrow_uses_malloc() -> bool:
    """Make pyarrow allocate through the system's malloc unless ARROW_DEFAULT_MEMORY_POOL is set; True when
    applied. pyarrow reads that variable once, when it loads: `batchscribe` calls this on import, before
    pandas (which loads pyarrow); where pyarrow was loaded first, the Docker image sets the variable."""
    if "ARROW_DEFAULT_MEMORY_POOL" in os.environ:
        return False  # the user's own choice
    os.environ["ARROW_DEFAULT_MEMORY_POOL"] = "system"  # for this process and the ffmpeg/engine children alike
    return "pyarrow" not in sys.modules


def hugepage_environment(env: Mapping[str, str]) -> dict[str, str] | None:
    """`env` with HUGEPAGE_TUNABLE added to GLIBC_TUNABLES, or None where nothing is to add: off glibc, on a
    glibc older than 2.35 (which has no such tunable), or where `env` already sets `glibc.malloc.hugetlb`
    (the user's own choice: `GLIBC_TUNABLES=glibc.malloc.hugetlb=0` turns it off)."""
    libc, version = platform.libc_ver()
    if not sys.platform.startswith("linux") or libc != "glibc":
        return None
    try:
        if tuple(int(part) for part in version.split(".")[:2]) < (2, 35):
            return None
    except ValueError:
        return None
    tunables = env.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" in tunables:
        return None
    return {**env, "GLIBC_TUNABLES": f"{tunables}:{HUGEPAGE_TUNABLE}" if tunables else HUGEPAGE_TUNABLE}


def exec_with_hugepages() -> None:
    """Start this process again, same arguments, with HUGEPAGE_TUNABLE (see `hugepage_environment`); returns
    only where there is nothing to add. Call it first thing in a command's entry point, before any output."""
    env = hugepage_environment(os.environ)
    if env is None:
        return
    os.execve(sys.executable, list(sys.orig_argv), env)
