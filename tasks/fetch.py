"""The stage task: one input made local and hashed (see `batchscribe.downloads`), retried on network errors."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from prefect import task
from prefect.context import TaskRunContext

from batchscribe.downloads import DOWNLOADS_DIR, HASHES_DIR, stage_local, stage_remote
from batchscribe.errors import InputError
from batchscribe.media import InputItem, StagedFile
from batchscribe.retries import retry_if_transient
from batchscribe.storage import StorageOptions


@task(
    task_run_name="stage-{item.relative_path}",
    retries=3,
    retry_delay_seconds=[1, 2, 4],
    retry_jitter_factor=0.2,
    retry_condition_fn=retry_if_transient,
)
def stage_input(
    item: InputItem,
    cache_dir: str,
    storage_options: StorageOptions | None = None,
    max_bytes: int | None = None,
    fetch: bool = True,
) -> StagedFile:
    """Make one input local and hash its content (sha256), which keys every cache downstream.

    Remote inputs (URLs, `ipfs://`) download into `<cache_dir>/downloads` (the flow evicts them once the
    file's row is ready), and their hashes are recorded in `<cache_dir>/download-hashes`; with
    `fetch=False` a version whose hash is recorded is not downloaded (`StagedFile.present` is False).
    Inputs over `max_bytes` fail with InputError (a remote one before or while it downloads, never after).
    """
    if item.error:
        raise InputError(item.error)
    if item.location.is_remote:
        cache = Path(cache_dir)
        downloads, hashes = cache / DOWNLOADS_DIR, cache / HASHES_DIR
        staged = stage_remote(item, downloads, storage_options, max_bytes, hash_dir=hashes, fetch=fetch)
    else:
        staged = stage_local(item, max_bytes)
    context = TaskRunContext.get()
    return replace(staged, attempts=context.task_run.run_count) if context else staged
