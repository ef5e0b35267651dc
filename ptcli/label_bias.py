"""A per-label bias on the label log-scores (`--calibrate`): one mechanism for two ways of finding it.

Classifier.logits adds `label_bias` to every row's label scores, so train's dev evaluation, predict and eval all
see the same corrected scores; the artifact stores it (Meta.label_bias, absent = no bias).

contextual  Zhao et al. 2021, "Calibrate Before Use": run content-free inputs through the template with the
            prompts, average their label probabilities into p_cf, and score p ∝ p / p_cf, i.e. add −log p_cf in log
            space. The model's lean towards a label when there is nothing to read is taken out.
bias        a bias vector trained with the prompts by the same loss and optimizer, starting at zero.
fit         after training, the maximum-likelihood bias of every labeled row (training and dev) at the kept prompts,
            the label scores held fixed (`fit_bias`). A few dozen rows estimate a label prior well where the dev
            rows alone cannot choose among prompts: on MR/SmolLM2 (K=16, fp32, 2026-12-01) the kept prompts' words
            scored 83/76/74 on the test rows and 83/77/79.5 with the fitted bias; the seed at 74 sat below
            zero-shot's 77.5. Training, and the dev rows' choice of the epoch, see no bias.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from ptcli.classifier import Classifier

CALIBRATIONS = ("none", "contextual", "bias", "fit")
FIT_L2 = 1e-3  # fit_bias: a nudge that keeps the optimum finite; a label prior is a few nats at most
FIT_STEPS = 100  # L-BFGS iterations at most for `labels` parameters
# The content-free inputs of `contextual`: nothing, "not applicable" and an ellipsis, each put where <text> (and
# <text_b>) go. The paper used "N/A", "" and "[MASK]"; a mask token is left out, it means something to a masked LM.
CONTENT_FREE = ("", "N/A", "...")
FLOOR = 1e-12  # p_cf is clipped here, so −log p_cf stays finite however small a label's probability


def contextual_bias(p_cf: np.ndarray) -> np.ndarray:
    """−log of the content-free label probabilities, averaged over the content-free inputs ([inputs, labels] in)."""
    mean = np.asarray(p_cf, dtype=np.float64).reshape(-1, np.shape(p_cf)[-1]).mean(axis=0)
    return -np.log(np.clip(mean, FLOOR, 1.0))


def content_free_bias(clf: Classifier, prompts: torch.Tensor | None) -> torch.Tensor:
    """The contextual bias for these prompts, as a [labels] tensor on the backbone's device (no bias applied while
    measuring it)."""
    texts = list(CONTENT_FREE)
    rows = clf.encode(texts, texts if clf.template.has_text_b else None)
    with clf.using(label_bias=None):
        p_cf = clf.predict_proba(rows, prompts, len(rows))
    return torch.tensor(contextual_bias(p_cf), dtype=torch.float32, device=clf.backbone.device)


def fit_bias(scores: torch.Tensor, y: torch.Tensor, l2: float = FIT_L2) -> torch.Tensor:
    """The [labels] bias b minimising mean cross-entropy(scores + b, y) + l2/2 · |b|² (L-BFGS from zero), for
    label log-scores `scores` [N, labels] held fixed; a label no row has is pushed down only by the L2."""
    scores, y = scores.detach().float(), y.to(scores.device)
    bias = torch.zeros(scores.shape[1], device=scores.device, requires_grad=True)
    optimizer = torch.optim.LBFGS([bias], max_iter=FIT_STEPS, line_search_fn="strong_wolfe", tolerance_grad=1e-7,
                                  tolerance_change=1e-10)

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(scores + bias, y) + 0.5 * l2 * bias.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(objective)
    return (bias - bias.mean()).detach()  # only differences between labels matter; centred reads better
