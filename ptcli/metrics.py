"""Classification metrics, computed with numpy so ptcli needs no scikit-learn at run time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# A dense confusion matrix is n² cells: fine for a few hundred labels, gigabytes for 10,000 intents.
MAX_CONFUSION_LABELS = 200


@dataclass
class Scored:
    """Labeled rows with what a classifier said about them: from a model run or read back from a predictions file."""

    labels: list[str]
    gold: np.ndarray  # [n] index into labels
    pred: np.ndarray  # [n] index into labels
    confidence: np.ndarray  # [n] the top label's probability (the whole [n, labels] matrix is not kept: 10,000
    #                         labels × 20,000 rows would be 1.6 GB)
    texts: list[str]  # the input text per row ("" when unknown), for listing mistakes

    @property
    def correct(self) -> np.ndarray:
        return self.gold == self.pred


def classification_report(y_true: list[int], y_pred: list[int], labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and, up to MAX_CONFUSION_LABELS labels, the
    confusion matrix (rows = true; None above that)."""
    n = len(labels)
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    if t.shape != p.shape:
        raise ValueError("y_true and y_pred differ in length")
    correct = t == p
    tp = np.bincount(t[correct], minlength=n)
    predicted = np.bincount(p, minlength=n)
    support = np.bincount(t, minlength=n)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
        recall = np.where(support > 0, tp / np.maximum(support, 1), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-300), 0.0)
    per_class = {label: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                         "support": int(support[i])} for i, label in enumerate(labels)}
    confusion = None
    if n <= MAX_CONFUSION_LABELS:
        confusion = np.bincount(t * n + p, minlength=n * n).reshape(n, n).tolist()
    return {
        "accuracy": float(correct.mean()) if len(t) else 0.0,
        "macro_f1": float(f1.mean()) if n else 0.0,
        "n": len(t),
        "per_class": per_class,
        "labels": list(labels),
        "confusion": confusion,
    }
