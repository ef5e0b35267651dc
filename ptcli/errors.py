"""The one exception type user-facing errors travel in.

Everything the user can fix (bad data, bad template, bad artifact, missing CUDA) raises `PtcliError`; the CLI prints
its message as one line on stderr and exits with its code. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class PtcliError(Exception):
    """A problem the user can fix. `exit_code` 1 = bad data/artifact/runtime, 2 = bad usage."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class UsageError(PtcliError):
    """Options that cannot work together or name something that does not exist."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=2)
