"""Confidence you can act on: does confidence match accuracy, and what does abstaining on low confidence buy?

A row's confidence is its top label's probability (top-label calibration).

- **Reliability bins**: 15 equal-width confidence bins over [0, 1], each half-open on the left, (lo, hi]
  (a confidence of exactly 0 joins the first bin); per bin the row count, the mean confidence and the accuracy
  (both None for an empty bin).
- **ECE** (expected calibration error): Σ_b (n_b / N) · |accuracy_b − confidence_b| over the non-empty bins; 0 is
  perfectly calibrated, 0.1 means confidence is off by 10 points on the average row.
- **Selective accuracy** at coverage c: keep the ⌈c·N⌉ most confident rows (ties: the earlier row first) and score
  them; `min_confidence` is the lowest confidence kept, a threshold for `--abstain-below` that keeps about that share.
- **Abstaining** below P keeps the rows whose confidence is ≥ P.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ptcli.errors import UsageError

N_BINS = 15
COVERAGES = (100, 90, 80, 50)  # percent of rows kept, most confident first


def check_threshold(value: float | None, option: str = "--abstain-below") -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:  # NaN fails too
        raise UsageError(f"{option} {value}: must be a probability from 0 to 1, e.g. 0.7")


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if len(values) else None


def reliability(confidence: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> list[dict[str, Any]]:
    """Per equal-width bin (lo, hi]: count, mean confidence, accuracy."""
    conf = np.asarray(confidence, dtype=np.float64)
    hit = np.asarray(correct, dtype=bool)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    bins = []
    for b in range(n_bins):
        inside = which == b
        bins.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": int(inside.sum()),
                     "confidence": _mean(conf[inside]), "accuracy": _mean(hit[inside])})
    return bins


def ece(bins: list[dict[str, Any]]) -> float:
    """Expected calibration error from reliability bins."""
    n = sum(b["count"] for b in bins)
    if not n:
        return 0.0
    return float(sum(b["count"] / n * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"]))


def most_confident_first(confidence: np.ndarray) -> np.ndarray:
    """Row indices by confidence, highest first; equal confidences keep row order."""
    return np.argsort(-np.asarray(confidence, dtype=np.float64), kind="stable")


def selective(confidence: np.ndarray, correct: np.ndarray,
              coverages: tuple[int, ...] = COVERAGES) -> list[dict[str, Any]]:
    """Accuracy on the most confident ⌈pct·N/100⌉ rows, per coverage percentage."""
    conf = np.asarray(confidence, dtype=np.float64)
    hit = np.asarray(correct, dtype=bool)
    order = most_confident_first(conf)
    table = []
    for pct in coverages:
        k = -(-pct * len(conf) // 100)  # ceil in integers: 90 % of 200 is 180, not 180.00000000000003 → 181
        kept = order[:k]
        table.append({"coverage": pct / 100, "rows": int(k), "accuracy": _mean(hit[kept]),
                      "min_confidence": float(conf[kept[-1]]) if k else None})
    return table


def abstention(confidence: np.ndarray, correct: np.ndarray, threshold: float) -> dict[str, Any]:
    """What abstaining below `threshold` keeps: rows kept and abstained, coverage, accuracy on the kept rows."""
    conf = np.asarray(confidence, dtype=np.float64)
    kept = conf >= threshold
    n = len(conf)
    return {"threshold": threshold, "rows": n, "kept": int(kept.sum()), "abstained": int(n - kept.sum()),
            "coverage": float(kept.mean()) if n else 0.0, "accuracy": _mean(np.asarray(correct, dtype=bool)[kept])}


def confident_mistakes(confidence: np.ndarray, correct: np.ndarray, n: int) -> list[int]:
    """Indices of the `n` most confident wrong rows, most confident first."""
    hit = np.asarray(correct, dtype=bool)
    return [int(i) for i in most_confident_first(confidence) if not hit[i]][:n]
