"""Decoded audio for tests: raw s16le PCM read whole into float32."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def load_audio(path: str | Path) -> np.ndarray:
    """Raw s16le PCM to float32 in [-1, 1]."""
    return np.fromfile(path, dtype="<i2").astype(np.float32) / 32768.0
