"""--select kfold's folds and pooling (the training side is in test_levers.py)."""

import math

import pytest

from ptcli.selection import best_epoch, folds, pooled_reports


def test_four_stratified_folds_hold_every_row_out_once():
    labels = ["a"] * 9 + ["b"] * 6 + ["c"] * 4
    held = folds(labels, seed=0)
    assert len(held) == 4 and sorted(i for f in held for i in f) == list(range(19))
    assert max(map(len, held)) - min(map(len, held)) <= 1
    for f in held:  # every class spread over the folds as evenly as it can be
        for c, n in (("a", 9), ("b", 6), ("c", 4)):
            assert [labels[i] for i in f].count(c) in (n // 4, -(-n // 4))
    assert held == folds(labels, seed=0) and held != folds(labels, seed=1)


def test_leave_one_out_when_a_class_is_tiny():
    labels = ["a"] * 6 + ["b"] * 3
    assert folds(labels, seed=0) == [[i] for i in range(9)]
    many = ["a"] * 40 + ["b"] * 2  # too many rows for leave-one-out: four folds, b's two rows in two of them
    held = folds(many, seed=0)
    assert len(held) == 4 and sum(any(many[i] == "b" for i in f) for f in held) == 2


def test_pooled_reports_score_every_row_once_per_epoch():
    held = [[0, 2], [1, 3]]
    y = [0, 1, 1, 0]
    # scores[fold][epoch] = (pred, p(gold)) of that fold's held-out rows, in its order
    scores = [[([0, 0], [0.9, 0.4]), ([0, 1], [0.8, 0.7])],
              [([0, 0], [0.3, 0.6]), ([1, 0], [0.6, 0.9])]]
    reports = pooled_reports(held, scores, y, ["x", "y"])
    assert [r["n"] for r in reports] == [4, 4]
    assert reports[0]["accuracy"] == 0.5  # rows 0 and 3 right, rows 2 and 1 wrong
    assert reports[1]["accuracy"] == 1.0
    assert reports[1]["loss"] == pytest.approx(-(math.log(0.8) + math.log(0.7) + math.log(0.6) + math.log(0.9)) / 4)


def test_best_epoch_takes_accuracy_then_loss_then_the_earliest():
    r = [{"accuracy": 0.5, "loss": 0.7}, {"accuracy": 0.75, "loss": 0.5}, {"accuracy": 0.75, "loss": 0.4},
         {"accuracy": 0.75, "loss": 0.4}]
    assert best_epoch(r) == 2
    assert best_epoch([{"accuracy": 0.5, "loss": 0.6}] * 3) == 0
