"""The one error vocabulary: what went wrong with a file, whether trying again can help, and its row.

Every failure batchscribe raises on purpose is a `BatchscribeError`. Its kind decides everything
downstream: a `TransientError` (a network hiccup, a busy GPU) is retried by the task that met it; a
`PermanentError` (a missing file, corrupt media, content that does not match its CID) never is. Its
`status` is the manifest row's `status`, its message the row's `error`. Errors from other libraries are
translated at the boundary where they are met (a download, the engine), so no code downstream has to read
module names or message text.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar

STATUS_OK = "ok"
STATUS_FAILED = "failed"  # could not be read, decoded or transcribed: see `error`
STATUS_NO_AUDIO = "no_audio"  # the file decodes but holds no audio stream
STATUS_CANCELLED = "cancelled"  # the batch was cancelled (Ctrl-C) while this file was in flight


class BatchscribeError(Exception):
    """Base of every error batchscribe raises about a file."""

    transient: ClassVar[bool] = False
    status: ClassVar[str] = STATUS_FAILED


class PermanentError(BatchscribeError):
    """Fails the same way every time: never retried."""


class TransientError(BatchscribeError):
    """May pass on another try: retried with backoff by the task that met it."""

    transient = True


class InputError(PermanentError):
    """An input that cannot be listed or read: missing, empty, not a file, refused, over the size cap."""


class UnavailableError(TransientError, ConnectionError):
    """A server or network could not deliver an input (timeout, reset, HTTP 5xx/408/429, a short download)."""


class MediaError(PermanentError):
    """ffmpeg could not decode the file."""


class NoAudioError(MediaError):
    """The file decodes but holds no audio to transcribe."""

    status = STATUS_NO_AUDIO


class VerificationError(InputError):
    """Content that does not match its content address (tampered, substituted, missing or extra blocks)."""


class ContentNotFoundError(InputError, FileNotFoundError):
    """A path that the verified content does not contain."""


class IncompleteError(UnavailableError):
    """A response that ended before all its content arrived (what came was verified)."""


class FileCancelledError(BatchscribeError):
    """The batch was cancelled before this file finished: the next run finishes it."""

    status = STATUS_CANCELLED


class GpuError(TransientError):
    """The GPU ran out of memory or failed a call: may pass on a retry, or on the CPU."""


def is_transient(error: BaseException) -> bool:
    """Whether another try may succeed: by kind for our errors, never for anything else."""
    return isinstance(error, BatchscribeError) and error.transient


def row_error(error: BaseException) -> dict[str, str]:
    """The manifest's `status` and `error` for a file that failed with `error`.

    Our errors speak for themselves; anything else (a bug, a lost API connection) is named by its type.
    """
    if isinstance(error, BatchscribeError):
        return {"status": error.status, "error": str(error)}
    return {"status": STATUS_FAILED, "error": f"{type(error).__name__}: {error}"}


def is_out_of_memory(error: BaseException) -> bool:
    """A GPU (or host) allocation failure, as CTranslate2 and PyTorch word it."""
    return "out of memory" in str(error).lower()


def is_gpu_failure(error: BaseException) -> bool:
    """An out-of-memory or a failed CUDA call, as CTranslate2 and PyTorch word them."""
    text = str(error).lower()
    return is_out_of_memory(error) or "cuda error" in text or "cuda failed" in text or "cublas" in text


@contextmanager
def gpu_errors() -> Iterator[None]:
    """Translate the engines' GPU failures (plain RuntimeErrors) into `GpuError`, which the task retries."""
    try:
        yield
    except GpuError:
        raise
    except Exception as error:
        if is_gpu_failure(error):
            raise GpuError(f"GPU failure: {error}") from error
        raise
