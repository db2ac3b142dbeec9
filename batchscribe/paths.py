"""Relative output paths, under one policy: made safe where they are made, checked where files are written.

A relative path names where an input's outputs go under the output root. Where one is *made* from an
input's name (a folder listing, a URL, an IPFS directory), unsafe parts are dropped or replaced: no root,
no drive, no `.` or `..`, no empty part, and `:` becomes `_`. Where outputs are *written*, the path is
checked again and refused if it is not already safe (a path pinned by hand, say), never silently changed.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from batchscribe.errors import InputError


class UnsafePathError(InputError, ValueError):
    """A relative path that could write outside the output root."""


def safe_relative(relative: str) -> str:
    """`relative` made safe (see the module docstring), `/`-separated; "input" when nothing is left."""
    parts = [p for p in PurePosixPath(relative.replace("\\", "/")).parts if p not in ("", ".", "..", "/")]
    return "/".join(p.replace(":", "_") for p in parts) or "input"


def checked_parts(relative: str) -> list[str]:
    """The parts of `relative`, or UnsafePathError if it is empty, absolute, on a drive, or has a `..` part."""
    parts = relative.replace("\\", "/").split("/")
    if (
        not relative
        or parts[0] == ""  # absolute, or a UNC path once backslashes are separators
        or re.match(r"^[A-Za-z]:", parts[0])  # a Windows drive
        or ".." in parts
        or "\0" in relative
    ):
        raise UnsafePathError(f"not a safe relative path: {relative!r}")
    parts = [part for part in parts if part not in ("", ".")]
    if not parts:
        raise UnsafePathError(f"not a safe relative path: {relative!r}")
    return parts
