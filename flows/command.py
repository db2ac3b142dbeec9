"""The `batchscribe` command's entry point: it starts itself again with malloc on huge pages
(`batchscribe.malloc.exec_with_hugepages`) before the flows and Prefect are imported, so that their imports
are paid once."""

from __future__ import annotations

import sys

from batchscribe.malloc import exec_with_hugepages


def main() -> int:
    """Run the `batchscribe` command (see `flows.cli.main`)."""
    exec_with_hugepages()
    from flows.cli import main as run_command

    return run_command(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
