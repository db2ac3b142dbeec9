"""Atomic local writes, the one way: write beside the target under a temporary name, then rename over it.

Readers see the old file or the new one, never a torn one; a crash leaves at most a hidden temp file
(`.<name>.<random>.tmp`), never a half-written target. Durable writes are fsynced before the rename.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_path(dest: str | os.PathLike[str], *, durable: bool = True) -> Iterator[Path]:
    """A temporary path beside `dest` to write to; it replaces `dest` when the block ends without error."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_file(dest: str | os.PathLike[str], *, durable: bool = True) -> Iterator[BinaryIO]:
    """A binary file to write that replaces `dest` when the block ends without error."""
    with atomic_path(dest, durable=durable) as tmp, open(tmp, "xb") as f:  # "x": never follows a planted file
        yield f


def write_bytes(dest: str | os.PathLike[str], data: bytes) -> None:
    """Replace the file at `dest` with `data`, durably."""
    with atomic_file(dest) as f:
        f.write(data)
