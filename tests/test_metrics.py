"""Calibration, selective accuracy, abstention and the eval report, checked against hand computations."""

import math

import numpy as np
import pytest

from ptcli import calibration
from ptcli.errors import UsageError
from ptcli.evaluate import build_report, one_line
from ptcli.metrics import Scored, classification_report

# Seven rows, shuffled. Sorted by confidence: .99 ok, .97 wrong, .95 ok, .78 ok, .75 ok, .50 wrong, .35 wrong.
CONF = np.array([0.78, 0.97, 0.35, 0.95, 0.50, 0.99, 0.75])
CORRECT = np.array([True, False, False, True, False, True, True])


def test_reliability_bins_by_hand():
    bins = calibration.reliability(CONF, CORRECT)
    assert len(bins) == 15
    assert bins[0]["lo"] == 0 and bins[-1]["hi"] == 1
    assert all(math.isclose(b["hi"] - b["lo"], 1 / 15) for b in bins)
    counts = {i: b["count"] for i, b in enumerate(bins) if b["count"]}
    # .35 in (5/15, 6/15]; .50 in (7/15, 8/15]; .75, .78 in (11/15, 12/15]; .95, .97, .99 in (14/15, 1]
    assert counts == {5: 1, 7: 1, 11: 2, 14: 3}
    assert bins[14]["confidence"] == pytest.approx(0.97) and bins[14]["accuracy"] == pytest.approx(2 / 3)
    assert bins[11]["confidence"] == pytest.approx(0.765) and bins[11]["accuracy"] == 1.0
    assert bins[0]["confidence"] is None and bins[0]["accuracy"] is None


def test_ece_by_hand():
    # Σ n_b/N · |acc_b − conf_b| = (3·|2/3 − .97| + 2·|1 − .765| + |0 − .5| + |0 − .35|) / 7 = 2.23 / 7
    assert calibration.ece(calibration.reliability(CONF, CORRECT)) == pytest.approx(2.23 / 7)
    assert calibration.ece(calibration.reliability(np.array([0.9, 0.9]), np.array([True, False]))) == \
        pytest.approx(0.4)
    assert calibration.ece(calibration.reliability(np.zeros(0), np.zeros(0, dtype=bool))) == 0.0


def test_bin_edges_are_right_closed():
    edges = [b["hi"] for b in calibration.reliability(np.array([0.5]), np.array([True]))]
    conf = np.array([edges[11], np.nextafter(edges[11], 1), 1.0, 0.0])  # 0.8 exactly, just above 0.8, 1, 0
    bins = calibration.reliability(conf, np.ones(4, dtype=bool))
    # 0.8 closes bin 11 (11/15, 12/15]; just above opens bin 12; 1 is in the last bin; 0 joins the first
    assert {i: b["count"] for i, b in enumerate(bins) if b["count"]} == {0: 1, 11: 1, 12: 1, 14: 1}


def test_selective_accuracy_by_hand():
    table = calibration.selective(CONF, CORRECT)
    assert [r["coverage"] for r in table] == [1.0, 0.9, 0.8, 0.5]
    assert [r["rows"] for r in table] == [7, 7, 6, 4]  # ⌈7⌉, ⌈6.3⌉, ⌈5.6⌉, ⌈3.5⌉
    assert [r["accuracy"] for r in table] == pytest.approx([4 / 7, 4 / 7, 4 / 6, 3 / 4])
    assert [r["min_confidence"] for r in table] == [0.35, 0.35, 0.50, 0.78]
    assert [r["rows"] for r in calibration.selective(np.full(200, 0.7), np.ones(200, bool))] == [200, 180, 160, 100]


def test_selective_ties_keep_the_earlier_row():
    assert calibration.selective(np.array([0.6, 0.6]), np.array([False, True]), (50,))[0]["accuracy"] == 0.0
    assert calibration.selective(np.array([0.6, 0.6]), np.array([True, False]), (50,))[0]["accuracy"] == 1.0


def test_abstention_keeps_confidence_at_or_above_the_threshold():
    a = calibration.abstention(CONF, CORRECT, 0.75)
    assert (a["kept"], a["abstained"], a["rows"]) == (5, 2, 7)  # .75 itself is kept
    assert a["coverage"] == pytest.approx(5 / 7) and a["accuracy"] == pytest.approx(4 / 5)
    none = calibration.abstention(CONF, CORRECT, 1.0)
    assert none["kept"] == 0 and none["accuracy"] is None
    assert calibration.abstention(CONF, CORRECT, 0.0)["accuracy"] == pytest.approx(4 / 7)


def test_confident_mistakes_most_confident_first():
    assert calibration.confident_mistakes(CONF, CORRECT, 2) == [1, 4]  # .97, then .50
    assert calibration.confident_mistakes(CONF, CORRECT, 10) == [1, 4, 2]


@pytest.mark.parametrize("bad", [-0.1, 1.01, float("nan"), float("inf")])
def test_threshold_must_be_a_probability(bad):
    with pytest.raises(UsageError, match="--abstain-below"):
        calibration.check_threshold(bad)
    for good in (0, 0.5, 1, None):
        calibration.check_threshold(good)


def _scored() -> Scored:
    """Three labels; the top probability of each row is CONF, on the predicted label."""
    labels = ["a", "b", "c"]
    pred = np.array([0, 1, 2, 0, 1, 2, 0])
    gold = np.where(CORRECT, pred, (pred + 1) % 3)
    probs = np.zeros((7, 3))
    for i, (p, c) in enumerate(zip(pred, CONF, strict=True)):
        probs[i] = (1 - c) / 2
        probs[i, p] = c
    texts = ["好评\n第二行", "x" * 100, "c", "d", "e", "f", "g"]
    return Scored(labels=labels, gold=gold, pred=pred, confidence=probs.max(axis=1), texts=texts)


def test_build_report_keeps_the_old_keys_and_adds_calibration():
    s = _scored()
    report = build_report(s, abstain_below=0.75, errors=2)
    old = classification_report(s.gold.tolist(), s.pred.tolist(), s.labels)
    assert {k: report[k] for k in old} == old
    assert report["accuracy"] == pytest.approx(4 / 7)
    assert report["ece"] == pytest.approx(2.23 / 7)
    assert set(report["reliability"][0]) == {"lo", "hi", "count", "confidence", "accuracy"}
    assert report["abstain"]["kept"] == 5
    first, second = report["errors"]
    assert first == {"row": 2, "text": "x" * 59 + "…", "gold": "c", "pred": "b", "confidence": pytest.approx(0.97)}
    assert second["row"] == 5 and second["gold"] == "c" and second["pred"] == "b"
    assert "errors" not in build_report(s) and "abstain" not in build_report(s)


def test_one_line():
    assert one_line("好评\n第二行\t 了") == "好评 第二行 了"
    assert len(one_line("y" * 61)) == 60 and one_line("y" * 60) == "y" * 60
