"""Classification metrics, computed by hand so ptcli needs no scikit-learn at run time."""

from __future__ import annotations

from typing import Any


def classification_report(y_true: list[int], y_pred: list[int], labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix (rows = true)."""
    n = len(labels)
    confusion = [[0] * n for _ in range(n)]
    for t, p in zip(y_true, y_pred, strict=True):
        confusion[t][p] += 1
    per_class = {}
    f1s = []
    for i, label in enumerate(labels):
        tp = confusion[i][i]
        predicted = sum(confusion[r][i] for r in range(n))
        support = sum(confusion[i])
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
        f1s.append(f1)
    total = len(y_true)
    return {
        "accuracy": sum(confusion[i][i] for i in range(n)) / total if total else 0.0,
        "macro_f1": sum(f1s) / n if n else 0.0,
        "n": total,
        "per_class": per_class,
        "labels": list(labels),
        "confusion": confusion,
    }
