"""The `batchscribe` command: run, rerun and inspect batches, and manage the local Prefect server.

It lives beside the flows it runs (`batchscribe run INPUT... --output DIR` calls `flows.transcribe_batch`).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from batchscribe.malloc import exec_with_hugepages
from batchscribe.server import OFFLINE_ENV
from flows.cli_args import build_parser, request_from_args, rerun_request_from_args
from flows.cli_report import ProgressBar, search, status_report, summary_table

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 130  # 128 + SIGINT, as shells report a Ctrl-C

# Offline and quiet by default; every one can be overridden from the environment.
PREFECT_DEFAULTS = {
    **OFFLINE_ENV,
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "PREFECT_LOGGING_LEVEL": "WARNING",
}


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    try:
        request = request_from_args(args)
    except ValidationError as e:
        print(f"batchscribe: invalid option: {e}", file=sys.stderr)
        return EXIT_USAGE

    from batchscribe.manifest import MANIFEST_CSV, MANIFEST_PARQUET
    from batchscribe.storage import join, output_root
    from flows.transcribe_batch import BatchCancelled, BatchFailed, transcribe_batch

    with _ctrl_c_cancels():
        state = _run_flow(transcribe_batch, request, args)
    result = state.result(raise_on_failure=False)
    if isinstance(result, BatchCancelled):
        _exit_cancelled(result.manifest)
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


@contextmanager
def _ctrl_c_cancels() -> Iterator[None]:
    """The first Ctrl-C (SIGINT) cancels the batch cleanly (batchscribe.cancel); a second one stops at once."""
    from batchscribe import cancel

    def interrupt(signum: int, frame: Any) -> None:
        if cancel.requested():
            raise KeyboardInterrupt
        cancel.request()
        print(
            f"\nbatchscribe: cancelling: queued files stop, files in flight get {cancel.GRACE_S:.0f} s to finish "
            "(Ctrl-C again to stop at once)",
            file=sys.stderr,
        )

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _exit_cancelled(manifest: Any) -> None:
    """Report a cancelled batch and end the process now: threads still decoding are not waited for."""
    print(summary_table(manifest))
    done = int((manifest["status"] != "cancelled").sum())
    print(
        f"batchscribe: cancelled; {done} files finished and are in the manifest, "
        f"{len(manifest) - done} in flight were cancelled; run the same command again to finish the rest.",
        file=sys.stderr,
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_CANCELLED)


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
    bar = None if args.no_progress else ProgressBar()
    unsubscribe = progress.subscribe(bar) if bar else (lambda: None)
    try:
        with temporary_settings({PREFECT_API_URL: api_url}):
            return flow(request, return_state=True)
    finally:
        unsubscribe()
        if bar:
            bar.close()


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
    print(status_report(manifest, _manifest_root(args.output), review_limit=args.review))
    return EXIT_OK if (manifest["status"] == "ok").all() else EXIT_SOME_FAILED


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `batchscribe` command."""
    if argv is None:  # the command itself, not a caller in Python: glibc's tunables apply only from the start
        exec_with_hugepages()
    args = build_parser().parse_args(argv)
    for key, value in PREFECT_DEFAULTS.items():
        if not (getattr(args, "verbose", False) and key == "PREFECT_LOGGING_LEVEL"):
            os.environ.setdefault(key, value)
    commands = {"run": run, "rerun": rerun, "status": status, "search": search}
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
