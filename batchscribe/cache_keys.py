"""The transcript cache's key: what decides the words, and nothing else.

A transcript is reused when these agree: the input's content hash, the weights actually loaded (their
sha256, not a name or a path), the engine's packages and batchscribe's own decoding code (their versions
and source), and the options that change words (`TranscribeOptions.text_options`). Performance knobs
(batch size, workers) and where it runs (device) are left out, so changing them re-transcribes nothing;
an upgrade or a new model that can change the words misses the cache instead of serving stale text.
"""

from __future__ import annotations

import hashlib
import json
import threading
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec
from pathlib import Path

from batchscribe import weights
from batchscribe.atomic import write_bytes
from batchscribe.downloads import sha256_file
from batchscribe.options import TranscribeOptions

DIGESTS_FILE = "weights-digests.json"  # under <cache-dir>/models: sha256 per weights file, by size and mtime

# The packages whose code turns audio into words, per engine.
ENGINE_PACKAGES = {"faster-whisper": ("faster-whisper", "ctranslate2"), "openai-whisper": ("openai-whisper", "torch")}
# batchscribe's own modules that decide the words (or how they are cut into segments), per engine.
DECODER_MODULES = {
    "faster-whisper": (
        "batchscribe.engines.faster",
        "batchscribe.decoding",
        "batchscribe.guard",
        "batchscribe.packing",
        "batchscribe.rows",
        "batchscribe.scheduler",
        "batchscribe.windows",
        "batchscribe.segments",
        "batchscribe.longform",
    ),
    "openai-whisper": ("batchscribe.engines.openai", "batchscribe.longform"),
}

_digests_lock = threading.Lock()


def transcript_key(sha256: str, options: TranscribeOptions, cache_dir: Path) -> str:
    """The cache key of the transcript of the content `sha256` under `options` (resolved here)."""
    options = options.resolved()
    text_options = options.text_options()
    weights = weights_identity(options.engine, options.model, Path(cache_dir))
    if weights.startswith("sha256:"):  # the weights' bytes name the model, under whatever path or name
        text_options.pop("model")
    decided_by = {"options": text_options, "weights": weights, "engine": engine_version(options.engine)}
    digest = hashlib.sha256(json.dumps(decided_by, sort_keys=True).encode()).hexdigest()[:16]
    return f"transcript-{sha256}-{digest}"


@cache
def engine_version(engine: str) -> str:
    """The engine's package versions and a hash of batchscribe's decoding code for it (read, not imported)."""
    packages = [f"{name}=={_installed(name)}" for name in ENGINE_PACKAGES[engine]]
    source = hashlib.sha256()
    for module in DECODER_MODULES[engine]:
        spec = find_spec(module)
        source.update(Path(spec.origin).read_bytes() if spec and spec.origin else module.encode())
    return ";".join([*packages, f"decoder={source.hexdigest()[:16]}"])


def _installed(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "absent"


def weights_identity(engine: str, model: str, cache_dir: Path) -> str:
    """`sha256:<hex>` of the weights file `engine` loads for `model`, or `name:<model>` when it is not local
    yet (a size the engine downloads itself on first use)."""
    path = weights_file(engine, model, cache_dir)
    return f"sha256:{file_digest(path, cache_dir)}" if path else f"name:{model}"


def weights_file(engine: str, model: str, cache_dir: Path) -> Path | None:
    """The file holding `model`'s weights as `engine` loads them, when it is on this machine."""
    local = weights.ct2_model_dir(model, cache_dir)  # the offline base model, or a local path
    if local is not None:
        candidate = local if local.is_file() else local / "model.bin"
        return candidate if candidate.is_file() else None
    if engine == "openai-whisper":
        checkpoint = cache_dir / "models" / "openai-whisper" / f"{model}.pt"
        return checkpoint if checkpoint.is_file() else None
    return None


def file_digest(path: Path, cache_dir: Path) -> str:
    """sha256 of `path`, computed once per file version (size and mtime) and kept in the cache's digests file."""
    stat = path.stat()
    real, stamp = str(path.resolve()), [stat.st_size, stat.st_mtime_ns]
    return _file_digest(real, tuple(stamp), str(cache_dir))


@cache
def _file_digest(real: str, stamp: tuple[int, int], cache_dir: str) -> str:
    store = Path(cache_dir) / "models" / DIGESTS_FILE
    with _digests_lock:
        try:
            known = json.loads(store.read_text())
        except (OSError, ValueError):
            known = {}
        entry = known.get(real)
        if entry and entry.get("stamp") == list(stamp):
            return entry["sha256"]
        digest = sha256_file(Path(real))
        known[real] = {"stamp": list(stamp), "sha256": digest}
        write_bytes(store, json.dumps(known, indent=1, sort_keys=True).encode())
        return digest
