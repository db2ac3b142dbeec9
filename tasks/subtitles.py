"""The export task: a transcript's subtitle, text and JSON files written under the output root."""

from __future__ import annotations

import logging

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

from batchscribe.options import FormatName, OutputOptions
from batchscribe.storage import StorageOptions
from batchscribe.transcript import Transcript
from batchscribe.writers import write_outputs


def _logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except MissingContextError:  # called as `export_subtitles.fn(...)` outside a run
        return logging.getLogger(__name__)


@task(task_run_name="export-{relative_path}", cache_policy=NO_CACHE)
def export_subtitles(
    transcript: Transcript,
    relative_path: str,
    output_root: str,
    options: OutputOptions,
    storage_options: StorageOptions | None = None,
    keep_full_name: bool = False,
) -> dict[FormatName, str]:
    """Write a transcript's subtitle, text and JSON files under `output_root`; returns their paths."""
    paths = write_outputs(
        transcript, relative_path, output_root, options, storage_options, keep_full_name=keep_full_name
    )
    _logger().debug("Wrote %d files for %s", len(paths), relative_path)  # not a log row per file in Prefect's DB
    return paths
