"""The records a file's stages hand each other: an input as named, then staged (local and hashed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from batchscribe import urls
from batchscribe.urls import Location


@dataclass(frozen=True)
class InputItem:
    """One file of the batch, before it is read."""

    source: str  # what the user named (an absolute local path or a URL)
    relative_path: str  # where its outputs go under the output root (posix, never escapes it)
    error: str = ""  # set when the input could not even be listed (a missing path, an empty folder)
    # The source parsed once (urls.parse when not given): every stage reads its protocol from here.
    location: Location = field(default=None, compare=False, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.location is None:
            object.__setattr__(self, "location", urls.parse(self.source))


@dataclass(frozen=True)
class StagedFile:
    """A local, hashed copy of one input (the original file itself when it is already local)."""

    source: str
    relative_path: str
    local_path: str
    sha256: str
    size_bytes: int
    attempts: int = 1  # the stage task's runs, retries of a flaky download included
    # The bytes themselves when the file was small enough to read whole: hashed and decoded from memory.
    data: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def present(self) -> bool:
        """Whether its bytes are here to decode: in memory or at `local_path` (a remote file staged by its
        recorded hash alone is not, nor one whose download was evicted)."""
        return self.data is not None or Path(self.local_path).is_file()
