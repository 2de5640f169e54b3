"""The command line's exit codes and its one-line messages, shared by every subcommand module."""

from __future__ import annotations

import sys

EXIT_OK, EXIT_INCOMPLETE, EXIT_USAGE, EXIT_AUTH, EXIT_STORAGE, EXIT_BUSY = 0, 1, 2, 3, 4, 5
EXIT_INTERRUPTED = 130


def say(message: str) -> None:
    """One line on stderr."""
    sys.stderr.write(f"hyperstudy-bulk: {message}\n")
