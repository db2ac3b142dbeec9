"""Keep the allocators' per-thread caches from inflating a multi-threaded batch's memory.

glibc gives each thread that allocates its own arena (up to 8 per core), and freed memory stays cached in
each. The flow's worker threads, Prefect's event-loop threads and the engines' threads measured 1.75 GB
peak RSS on a 13-minute file, against 1.2 GB for the bare engine loop; two arenas brought it to 1.27-1.32 GB
(bench/speed.py corpus, README "Performance") at no measurable cost in speed.

pyarrow allocates through its bundled mimalloc by default, which kept what the manifest and segment
writers' parquet buffers freed (built in the flow's thread and in every worker's): the flow's memory grew
~4 KB a file done (bench/pool.py, docs/performance-pool.md). Through glibc's malloc it stays flat.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_ARENA_MAX = -8  # from glibc's malloc.h
DEFAULT_ARENAS = 2


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
