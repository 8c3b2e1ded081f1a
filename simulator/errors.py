"""One exception root for layerbench, and the exit code each kind of failure maps to.

The command line turns these into exit codes in exactly one place (``simulator.cli``):
``BadInput`` -> 2 (one line on stderr, no traceback), ``BackendUnavailable`` -> 3,
anything else -> 1.  Library users catch ``LayerbenchError``.
"""

from __future__ import annotations


class LayerbenchError(Exception):
    """Root of every error layerbench raises on purpose."""

    exit_code = 1


class BadInput(LayerbenchError):
    """The user's input (file, option, argument) is wrong; the message names where.

    Raised before any work starts, so nothing is half-written.
    """

    exit_code = 2


class BackendUnavailable(LayerbenchError):
    """A real-kernel backend cannot run here: not root, missing kernel feature or tool."""

    exit_code = 3
