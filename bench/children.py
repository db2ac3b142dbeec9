"""The environment each configuration's child process runs with.

batchscribe's configurations get what the `batchscribe` command gives itself when it starts (glibc's
huge-page tunable, batchscribe/malloc.py), as a user's run has it; the peers run bare, with the
environment the bench was started with.
"""

from __future__ import annotations

import os


def environment(config: str) -> dict[str, str]:
    """The environment of configuration `config` (a name from a bench's CONFIGS)."""
    from batchscribe.malloc import hugepage_environment

    env = dict(os.environ)
    if "batchscribe" in config:
        env = hugepage_environment(env) or env
    return env
