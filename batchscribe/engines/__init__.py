"""Speech engines behind one interface; each model loads once per worker process."""

from __future__ import annotations

import threading
from pathlib import Path

from batchscribe.engines.base import Engine
from batchscribe.options import TranscribeOptions

__all__ = ["Engine", "load_engine", "register_engine"]

_engines: dict[tuple[str, ...], Engine] = {}
_engines_lock = threading.Lock()


def _key(options: TranscribeOptions, cache_dir: Path) -> tuple[str, ...]:
    devices = ",".join(map(str, options.device_index))
    lanes = "1"
    if options.engine == "faster-whisper":  # a CPU model loaded with two lanes serves the scheduler only
        from batchscribe.engines.faster import model_lanes

        lanes = str(model_lanes(options))
    return (options.engine, options.model, options.device, devices, options.compute_type, lanes, str(cache_dir))


def register_engine(engine: Engine, cache_dir: Path) -> None:
    """Use `engine`, already built, for its options in this process (a benchmark's stand-in model)."""
    with _engines_lock:
        _engines[_key(engine.options, cache_dir)] = engine


def load_engine(options: TranscribeOptions, cache_dir: Path) -> Engine:
    """The engine for `options`, loaded on first use and reused by every later call in this process."""
    opts = options.resolved()
    key = _key(opts, cache_dir)
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            if opts.engine == "openai-whisper":
                from batchscribe.engines.openai import OpenAIWhisperEngine

                engine = OpenAIWhisperEngine(opts, cache_dir)
            else:
                from batchscribe.engines.faster import FasterWhisperEngine

                engine = FasterWhisperEngine(opts, cache_dir)
            _engines[key] = engine
        return engine
