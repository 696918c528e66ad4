"""Errors a user can cause, each with a one-line message and an exit code by class.

Anything that is not a CovsegError is a bug: the CLI exits 1 and shows the
traceback only with --debug. The exit codes are documented in the README.
"""

from __future__ import annotations


class CovsegError(Exception):
    """Base of every error a user can cause; `str(error)` is one line naming the culprit."""

    exit_code = 1
    kind = "error"

    def __init__(self, message: str) -> None:
        # One line: a user-facing message never spans lines (tests check this).
        super().__init__(" ".join(message.split()))


class InputError(CovsegError):
    """The study cannot be read or is not a valid CT volume (file, slice or tag named)."""

    exit_code = 3
    kind = "input"


class ModelPackageError(CovsegError):
    """A model package is missing, corrupt, unverifiable or incompatible."""

    exit_code = 4
    kind = "model package"


class OutputError(CovsegError):
    """An output cannot be written: it exists, the folder is not writable, or the disk is full."""

    exit_code = 5
    kind = "output"


class ResourceLimitError(CovsegError):
    """The work would exceed a resource limit (--max-memory) and cannot be tiled below it."""

    exit_code = 6
    kind = "resource limit"


class RuntimeUnavailableError(CovsegError):
    """A requested runtime, provider or optional dependency is not available here."""

    exit_code = 7
    kind = "runtime"


class CancelledError(CovsegError):
    """The run was interrupted by the user (Ctrl-C or SIGTERM); nothing was written."""

    exit_code = 130
    kind = "cancelled"


class BatchIncompleteError(CovsegError):
    """A batch finished but at least one study failed (each is recorded in the summary)."""

    exit_code = 8
    kind = "batch"


EXIT_CODES: dict[str, int] = {
    "ok": 0,
    "bug (unexpected error; rerun with --debug for the traceback)": 1,
    "usage (bad option or argument)": 2,
    InputError.kind: InputError.exit_code,
    ModelPackageError.kind: ModelPackageError.exit_code,
    OutputError.kind: OutputError.exit_code,
    ResourceLimitError.kind: ResourceLimitError.exit_code,
    RuntimeUnavailableError.kind: RuntimeUnavailableError.exit_code,
    BatchIncompleteError.kind: BatchIncompleteError.exit_code,
    CancelledError.kind: CancelledError.exit_code,
}
