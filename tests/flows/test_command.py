"""The `batchscribe` command starts itself again with malloc on huge pages before the flows load."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from batchscribe.malloc import hugepage_environment

ROOT = Path(__file__).resolve().parents[2]


def test_the_command_starts_again_before_it_imports_the_flows() -> None:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if hugepage_environment(env) is None:
        pytest.skip("not glibc 2.35 or later: nothing to start again with")
    command = [sys.executable, "-X", "importtime", "-m", "flows.command", "--help"]
    out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "usage:" in out.stdout, out.stderr[-2000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")]
    assert imported.count("batchscribe.malloc") == 2  # once in each start
    assert imported.count("flows.cli") == 1  # the flows and Prefect load once, after the restart
