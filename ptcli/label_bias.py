"""A per-label bias on the label log-scores (`--calibrate`): one mechanism for two ways of finding it.

Classifier.logits adds `label_bias` to every row's label scores, so train's dev evaluation, predict and eval all
see the same corrected scores; the artifact stores it (Meta.label_bias, absent = no bias).

contextual  Zhao et al. 2021, "Calibrate Before Use": run content-free inputs through the template with the
            prompts, average their label probabilities into p_cf, and score p ∝ p / p_cf, i.e. add −log p_cf in log
            space. The model's lean towards a label when there is nothing to read is taken out.
bias        a bias vector trained with the prompts by the same loss and optimizer, starting at zero.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from ptcli.classifier import Classifier

CALIBRATIONS = ("none", "contextual", "bias")
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
