"""Paired statistics for the bench: every comparison is made on the same test rows, never on two separate means.

- A method's per-row outcome is kept in the result JSON (`encode_rows`): the predicted label of every test row and
  its confidence. Correctness comes from comparing with the test rows' gold labels, stored once per test set.
- **Seeds averaged per row**: for a comparison A − B, each test row gets A's correctness averaged over the seeds
  both methods ran (a seedless method such as zero-shot counts the same on every seed), minus B's. The mean of that
  difference is exactly the mean over seeds of the accuracy differences.
- **Paired bootstrap**: resample the test rows with replacement (the same resample for both methods, since the
  difference is taken per row) and take the 2.5th and 97.5th percentiles of the mean difference. The interval
  covers test-row sampling only; the seeds' spread is reported next to it (per-seed differences).
- **McNemar** (exact, two-sided) per seed: the rows only A gets right vs the rows only B gets right.
- **Verdict**: an interval above 0 wins, below 0 loses, one that contains 0 is a tie inside the noise.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # a fixed generator: rendering the same JSON twice gives the same intervals
DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"  # one character per row for up to 36 labels


# --- compact per-row storage --------------------------------------------------------------------------------------

def test_hash(texts: Sequence[str], gold: Sequence[str]) -> str:
    """Identifies a test set: two records can be paired only when they scored the same rows in the same order."""
    h = hashlib.sha1()
    for text, label in zip(texts, gold, strict=True):
        h.update(text.encode("utf-8") + b"\x1f" + label.encode("utf-8") + b"\x1e")
    return h.hexdigest()[:12]


def encode_labels(idx: Sequence[int]) -> str | list[int]:
    """Label indices as one character each (up to 36 labels), else a plain list."""
    if all(0 <= i < len(DIGITS) for i in idx):
        return "".join(DIGITS[i] for i in idx)
    return [int(i) for i in idx]


def decode_labels(value: str | list[int]) -> np.ndarray:
    if isinstance(value, str):
        return np.array([DIGITS.index(c) for c in value], dtype=np.int64)
    return np.asarray(value, dtype=np.int64)


def encode_rows(pred: Sequence[int], confidence: Sequence[float]) -> dict[str, str | list[int]]:
    """Each row's predicted label index and its confidence in per-mille (0-1000), space-separated."""
    conf = " ".join(str(round(1000 * float(c))) for c in confidence)
    return {"pred": encode_labels(pred), "conf": conf}


def decode_rows(rows: dict[str, str | list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(predicted label indices, confidences in [0, 1])."""
    conf = rows.get("conf") or ""
    values = conf.split() if isinstance(conf, str) else conf
    return decode_labels(rows["pred"]), np.array([int(v) / 1000 for v in values], dtype=np.float64)


# --- paired comparisons -------------------------------------------------------------------------------------------

@dataclass
class Paired:
    """A − B on the same test rows, in accuracy points (0-100)."""

    diff: float  # mean over rows of the seed-averaged correctness difference = mean over seeds of A − B accuracy
    lo: float  # paired bootstrap 95% interval over test rows
    hi: float
    per_seed: list[float]  # A − B accuracy on each seed both ran (one value when one side has no seeds)
    mcnemar_p: list[float]  # exact McNemar p per seed
    seeds: int  # how many seeds were averaged
    n: int  # test rows
    verdict: str


def paired_bootstrap(a: np.ndarray, b: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES,
                     seed: int = BOOTSTRAP_SEED, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of a − b and its percentile interval, resampling rows (the same rows for a and b)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.ndim != 1 or not len(d):
        raise ValueError("paired_bootstrap needs two equally long, non-empty per-row vectors")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 250):  # chunks bound the memory to 250 × rows indices
        n = min(250, resamples - start)
        means[start : start + n] = d[rng.integers(0, len(d), size=(n, len(d)))].mean(axis=1)
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(d.mean()), float(lo), float(hi)


def mcnemar(a_correct: np.ndarray, b_correct: np.ndarray) -> float:
    """Exact two-sided McNemar p-value: a binomial test on the rows where exactly one of the two is right."""
    a, b = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return min(1.0, 2 * tail / 2**n)


def verdict(lo: float, hi: float, words: tuple[str, str, str] = ("wins", "loses", "tie (inside noise)")) -> str:
    """An interval wholly above 0 is a win, wholly below a loss; touching or containing 0 is a tie."""
    if lo > 0:
        return words[0]
    if hi < 0:
        return words[1]
    return words[2]


def paired_rows(a: dict[int | None, np.ndarray], b: dict[int | None, np.ndarray]
                ) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray, np.ndarray] | None:
    """The seeds' paired correctness vectors and each side's per-row correctness averaged over them, from
    {seed: bool[rows]} (a seedless method has the single key None).

    Two seeded methods are paired on the seeds both ran; a seedless side is used on every seed of the other.
    None when there is nothing to pair (no common seed, or different row counts).
    """
    if not a or not b:
        return None
    if None in a and None in b:
        seeds: list[int | None] = [None]
    elif None in b:
        seeds = sorted(s for s in a if s is not None)
    elif None in a:
        seeds = sorted(s for s in b if s is not None)
    else:
        seeds = sorted(set(a) & set(b))  # type: ignore[arg-type]
    if not seeds:
        return None

    def on(side: dict[int | None, np.ndarray], s: int | None) -> np.ndarray:
        return side[s] if s in side else side[None]

    pairs = [(on(a, s).astype(bool), on(b, s).astype(bool)) for s in seeds]
    n = len(pairs[0][0])
    if any(len(x) != n or len(y) != n for x, y in pairs):
        return None
    return pairs, np.mean([x for x, _ in pairs], axis=0), np.mean([y for _, y in pairs], axis=0)


def compare(a: dict[int | None, np.ndarray], b: dict[int | None, np.ndarray],
            words: tuple[str, str, str] = ("wins", "loses", "tie (inside noise)")) -> Paired | None:
    """A vs B from per-seed correctness vectors, paired as `paired_rows` pairs them; None when nothing pairs."""
    paired = paired_rows(a, b)
    if paired is None:
        return None
    pairs, row_a, row_b = paired
    diff, lo, hi = paired_bootstrap(row_a, row_b)
    per_seed = [100 * float(x.mean() - y.mean()) for x, y in pairs]
    ps = [mcnemar(x, y) for x, y in pairs]
    return Paired(diff=100 * diff, lo=100 * lo, hi=100 * hi, per_seed=per_seed, mcnemar_p=ps, seeds=len(pairs),
                  n=len(row_a), verdict=verdict(lo, hi, words))


def ece(confidence: np.ndarray, correct: np.ndarray) -> float:
    """Expected calibration error with ptcli's own bins (ptcli/calibration.py)."""
    from ptcli.calibration import ece as ece_of_bins
    from ptcli.calibration import reliability

    return ece_of_bins(reliability(np.asarray(confidence), np.asarray(correct, dtype=bool)))
