"""Model selection at tiny K (`--select`): which epoch's prompts the artifact keeps.

dev-acc   hold out a dev split (or --dev), keep the epoch with the best dev accuracy, ties to the lower dev loss
          (the shared loop's rule, ptcli/loop.py); stop after --patience epochs without a new best.
dev-loss  the same split, but keep the epoch with the lowest dev loss (mean −log p(gold)), ties to the higher
          accuracy: a loss moves with every row's probability, where accuracy on 4 dev rows moves in steps of 25%.
kfold     no held-out dev: cross-validate on the training rows to choose the number of epochs, then train on all
          of them for that many epochs. Folds: `folds` below. Every fold trains all --epochs epochs from the same
          seeded start (no early stop, --patience does not apply) and its held-out rows are scored after each
          epoch; the scores are pooled over the folds, so epoch e's out-of-fold accuracy covers every row once. The
          epoch count with the best pooled accuracy (ties: lower pooled loss; 0 = the untrained prompts) is kept,
          and the final run stops after it on the same --epochs-long learning-rate schedule the folds followed.
          Costs about (folds − 1) × --epochs epochs of all rows, plus the final run.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ptcli.loop import selection_key
from ptcli.metrics import classification_report

SELECTS = ("dev-acc", "dev-loss", "kfold")
KFOLD = 4  # folds when every class has at least this many rows
LOO_MAX_ROWS = 32  # leave-one-out instead when a class is smaller than KFOLD and there are at most this many rows


def folds(labels: list[str], seed: int) -> list[list[int]]:
    """The held-out row indices of each fold; every row is held out exactly once.

    4 folds, stratified: each class's rows are shuffled with the seed and dealt round-robin, each class starting at
    the fold after the previous class's last, so fold sizes differ by at most one. When a class has fewer than 4
    rows and there are at most 32 rows, leave-one-out (one fold per row) instead: every fold then trains on every
    class that has two rows or more. With more rows such a class simply sits in fewer folds' held-out parts.
    """
    classes = sorted(set(labels))
    smallest = min(labels.count(c) for c in classes)
    if smallest < KFOLD and len(labels) <= LOO_MAX_ROWS:
        return [[i] for i in range(len(labels))]
    rng = np.random.RandomState(seed)
    out: list[list[int]] = [[] for _ in range(min(KFOLD, len(labels)))]
    at = 0
    for label in classes:
        idx = [i for i, lab in enumerate(labels) if lab == label]
        rng.shuffle(idx)
        for i in idx:
            out[at % len(out)].append(i)
            at += 1
    return [sorted(f) for f in out]


def report(y: list[int], pred: list[int], gold_prob: list[float], labels: list[str]) -> dict[str, Any]:
    """Classification report of scored rows plus their loss, the mean −log p(gold)."""
    out = classification_report(y, pred, labels)
    out["loss"] = float(-np.mean(np.log(np.clip(gold_prob, 1e-12, 1.0)))) if len(gold_prob) else 0.0
    return out


Scores = tuple[list[int], list[float]]  # a fold's held-out rows after one epoch: predicted label, p(gold)


def pooled_reports(held_out: list[list[int]], scores: list[list[Scores]], y: list[int],
                   labels: list[str]) -> list[dict[str, Any]]:
    """Out-of-fold report per epoch (0 = untrained): `scores[fold][epoch]` pooled over the folds."""
    order = [i for fold in held_out for i in fold]
    gold = [y[i] for i in order]
    out = []
    for epoch in range(min(len(s) for s in scores)):
        pred = [p for s in scores for p in s[epoch][0]]
        prob = [p for s in scores for p in s[epoch][1]]
        out.append(report(gold, pred, prob, labels))
    return out


def best_epoch(reports: list[dict[str, Any]]) -> int:
    """The epoch whose pooled report is best by the dev-acc rule; the earliest of equals."""
    keys = [selection_key(r, "dev-acc", 0) for r in reports]
    return max(range(len(keys)), key=lambda e: (keys[e], -e))
