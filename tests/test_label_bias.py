"""--calibrate: the per-label bias, checked by hand on a tiny example and end to end through train and predict."""

import math

import numpy as np
import pytest
import torch

from ptcli.classifier import Classifier
from ptcli.label_bias import FIT_L2, contextual_bias, fit_bias
from ptcli.template import Encoded, Part
from ptcli.verbalizer import Verbalizer


class FixedScores:
    """A stand-in backbone whose label words score fixed log-probabilities, one row per call's row."""

    def __init__(self, probs):
        self.log_p = torch.log(torch.tensor(probs, dtype=torch.float64))

    def score(self, rows, prompts, word_ids):
        return self.log_p[[r.before.ids[0] for r in rows]]

    def train(self, on):
        pass


def fixed_classifier(probs):
    verbalizer = Verbalizer(labels=["neg", "pos", "meh"], words=[["bad"], ["good"], ["so-so"]])
    clf = Classifier(backbone=FixedScores(probs), template=None, verbalizer=verbalizer, word_ids=[[1], [2], [3]],
                     owner=[0, 1, 2], encoder=None)
    rows = [Encoded(before=Part(ids=[i], prompt=[-1]), after=Part()) for i in range(len(probs))]
    return clf, rows


def test_contextual_calibration_by_hand():
    # two content-free inputs: p_cf = their mean = [0.5, 0.25, 0.25]
    p_cf = np.array([[0.6, 0.2, 0.2], [0.4, 0.3, 0.3]])
    assert np.allclose(contextual_bias(p_cf), [math.log(2), math.log(4), math.log(4)])
    # p = [0.5, 0.3, 0.2] → p / p_cf = [1.0, 1.2, 0.8] → / 3.0 = [1/3, 0.4, 0.8/3]
    # p = [0.2, 0.1, 0.7] → p / p_cf = [0.4, 0.4, 2.8] → / 3.6 = [1/9, 1/9, 7/9]
    clf, rows = fixed_classifier([[0.5, 0.3, 0.2], [0.2, 0.1, 0.7]])
    clf.label_bias = torch.tensor(contextual_bias(p_cf))
    calibrated = clf.predict_proba(rows, None, batch_size=2)
    assert np.allclose(calibrated, [[1 / 3, 0.4, 0.8 / 3], [1 / 9, 1 / 9, 7 / 9]], atol=1e-6)
    assert calibrated[0].argmax() == 1  # neg was the top label before calibration
    clf.label_bias = None
    assert np.allclose(clf.predict_proba(rows, None, batch_size=2), [[0.5, 0.3, 0.2], [0.2, 0.1, 0.7]], atol=1e-6)


def test_a_label_the_content_free_inputs_never_pick_keeps_a_finite_bias():
    bias = contextual_bias(np.array([[1.0, 0.0, 0.0]]))
    assert np.isfinite(bias).all() and bias[1] > bias[0]


def test_the_bias_is_differentiable_for_training():
    clf, rows = fixed_classifier([[0.5, 0.3, 0.2]])
    clf.label_bias = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    torch.nn.functional.cross_entropy(clf.logits(rows, None), torch.tensor([2])).backward()
    assert clf.label_bias.grad[2] < 0 < clf.label_bias.grad[0]  # gradient descent raises the gold label's bias
    assert clf.label_bias.grad.sum().item() == pytest.approx(0.0, abs=1e-9)


def test_the_fitted_bias_of_constant_scores_is_the_label_frequency():
    # Every row scores the same, so the best bias makes each label's probability its share of the rows:
    # 3 of 4 rows are label 0, so (0 + b0) − (1 + b1) = log 3 (up to the L2 nudge of FIT_L2).
    scores = torch.tensor([[0.0, 1.0]] * 4)
    bias = fit_bias(scores, torch.tensor([0, 0, 0, 1]))
    assert float(bias[0] - bias[1]) == pytest.approx(math.log(3) + 1, abs=0.01)
    assert float(bias.sum()) == pytest.approx(0.0, abs=1e-6)


def test_the_fitted_bias_is_the_minimiser():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(20, 3, generator=generator) * 2
    y = torch.randint(0, 3, (20,), generator=generator)
    bias = fit_bias(scores, y).requires_grad_(True)
    objective = torch.nn.functional.cross_entropy(scores + bias, y) + 0.5 * FIT_L2 * bias.pow(2).sum()
    (grad,) = torch.autograd.grad(objective, bias)
    assert float(grad.abs().max()) < 1e-4
    zero = torch.zeros(3, requires_grad=True)  # and it beats no bias, which is not stationary here
    (grad0,) = torch.autograd.grad(torch.nn.functional.cross_entropy(scores + zero, y), zero)
    assert float(grad0.abs().max()) > 1e-2
