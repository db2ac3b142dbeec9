"""The configurations a bench runs: their names, and the environment each one's child process runs with.

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


def resolve(names: str, configs) -> list[str]:
    """The configurations of comma-separated `names`, each a full name from `configs` or the first part of
    exactly one (`b2` for b2-faster-batched8); an unknown or ambiguous name stops the bench rather than run
    something else."""
    resolved = []
    for name in filter(None, names.split(",")):
        matches = [name] if name in configs else [c for c in configs if c.split("-")[0] == name]
        if len(matches) != 1:
            raise SystemExit(
                f"{'ambiguous' if matches else 'unknown'} configuration {name!r}: one of {', '.join(configs)}"
            )
        resolved.append(matches[0])
    return resolved
