"""stderr for people, stdout for results: one rich console each, and the helpers everything logs through."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)
_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def log(message: str) -> None:
    if not _quiet:
        err.print(message, markup=False)


def warn(message: str) -> None:
    err.print(Text("warning: ", style="yellow") + Text(message))


def error(message: str) -> None:
    err.print(Text("error: ", style="bold red") + Text(message))


def progress() -> Progress:
    """A progress bar on stderr that vanishes when done (per-epoch lines stay in the log)."""
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=True, disable=_quiet)
