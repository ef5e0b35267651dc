"""The prompt encoder of P-tuning: m trainable vectors, reparameterized through a BiLSTM and an MLP.

As in the paper (Liu et al. 2021, THUDM/P-tuning `prompt_encoder.py`): Embedding(m, H) → 2-layer BiLSTM with H/2
units per direction → Linear(H, H) → ReLU → Linear(H, H). The LSTM ties the prompt tokens to each other, which the
authors found speeds up convergence on small data. Only the output (m × H) is needed to predict; the module itself
is kept so training can resume.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

ENCODERS = ("lstm", "mlp", "none")


@dataclass
class EncoderConfig:
    kind: str = "lstm"  # lstm: the paper's BiLSTM+MLP; mlp: MLP only; none: plain trainable embeddings
    n_prompts: int = 4  # m, the number of [P] tokens in the template
    hidden_size: int = 768  # H, the backbone's embedding width
    dropout: float = 0.0  # LSTM dropout between its two layers (the paper uses 0)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class PromptEncoder(nn.Module):
    def __init__(self, config: EncoderConfig, init: torch.Tensor | None = None) -> None:
        super().__init__()
        if config.kind not in ENCODERS:
            raise ValueError(f"unknown encoder {config.kind!r}; choose one of {', '.join(ENCODERS)}")
        self.config = config
        m, h = config.n_prompts, config.hidden_size
        self.embedding = nn.Embedding(max(m, 1), h)
        if init is not None:
            # Starting from real word embeddings puts the prompts on the backbone's input manifold (PEFT's
            # TEXT init does the same); the LSTM/MLP then learns a residual-free mapping from there.
            with torch.no_grad():
                self.embedding.weight.copy_(init.to(self.embedding.weight.dtype))
        self.lstm: nn.LSTM | None = None
        self.mlp: nn.Sequential | None = None
        if config.kind == "lstm":
            self.lstm = nn.LSTM(h, h // 2, num_layers=2, bidirectional=True, batch_first=True,
                                dropout=config.dropout)
        if config.kind in ("lstm", "mlp"):
            width = 2 * (h // 2) if config.kind == "lstm" else h
            self.mlp = nn.Sequential(nn.Linear(width, h), nn.ReLU(), nn.Linear(h, h))

    def forward(self) -> torch.Tensor:
        """The prompt vectors, [m, H], in float32 whatever the backbone's precision."""
        x = self.embedding.weight.float()
        if self.lstm is not None:
            x = self.lstm(x.unsqueeze(0))[0].squeeze(0)
        if self.mlp is not None:
            x = self.mlp(x)
        return x[: self.config.n_prompts]
