"""Numbers a user passes, checked up front with the option's name: before any file is read or model loaded.

The plain functions (train, predict, evaluate) call these, so a library caller gets the same one-line errors as
the command line.
"""

from __future__ import annotations

import math

from ptcli.errors import UsageError

SEED_MAX = 2**32 - 1  # numpy's RandomState takes seeds in [0, 2**32)


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_at_least(name: str, value: int, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise UsageError(f"{_option(name)} {value}: must be a whole number of at least {low}")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UsageError(f"{_option(name)} {value!r}: choose one of {', '.join(choices)}")


def check_batch_size(value: int) -> None:
    check_at_least("batch_size", value)


def check_positive_finite(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise UsageError(f"{_option(name)} {value}: must be a positive, finite number")


def check_fraction(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or not 0 < value < 1:
        raise UsageError(f"{_option(name)} {value}: must be strictly between 0 and 1")


def check_seed(value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SEED_MAX:
        raise UsageError(f"--seed {value}: must be a whole number from 0 to {SEED_MAX}")
