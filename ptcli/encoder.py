"""The prompt encoder of P-tuning: m trainable vectors, reparameterized through a BiLSTM and an MLP.

As in the paper (Liu et al. 2021, THUDM/P-tuning `prompt_encoder.py`): Embedding(m, H) → 2-layer BiLSTM with H/2
units per direction → Linear(H, H) → ReLU → Linear(H, H). The LSTM ties the prompt tokens to each other, which the
authors found speeds up convergence on small data. Only the output (m × H) is needed to predict; the module itself
is kept so training can resume.

`init="vocab"` (see ptcli/prompt_init.py) adds a frozen base of real token embeddings and zeroes the last layer, so the
output starts exactly at those tokens and the network learns a residual scaled to the token-embedding scale.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

ENCODERS = ("lstm", "mlp", "none")
PROMPT_INITS = ("random", "vocab")


@dataclass
class EncoderConfig:
    kind: str = "lstm"  # lstm: the paper's BiLSTM+MLP; mlp: MLP only; none: plain trainable embeddings
    n_prompts: int = 4  # m, the number of [P] tokens in the template
    hidden_size: int = 768  # H, the backbone's embedding width
    dropout: float = 0.0  # LSTM dropout between its two layers (the paper uses 0)
    init: str = "random"  # random: the paper's N(0, 1) start; vocab: token embeddings + a zero-initialised residual

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class PromptEncoder(nn.Module):
    base: torch.Tensor | None  # with init="vocab": the frozen start the network's residual is added to

    def __init__(self, config: EncoderConfig, init: torch.Tensor | None = None, base: torch.Tensor | None = None,
                 scale: float = 1.0) -> None:
        super().__init__()
        if config.kind not in ENCODERS:
            raise ValueError(f"unknown encoder {config.kind!r}; choose one of {', '.join(ENCODERS)}")
        if config.init not in PROMPT_INITS:
            raise ValueError(f"unknown prompt init {config.init!r}; choose one of {', '.join(PROMPT_INITS)}")
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
        if config.init == "vocab" and self.mlp is not None:
            self._add_base(base, scale)
        else:
            self.base = None

    def _add_base(self, base: torch.Tensor | None, scale: float) -> None:
        """Output = base + scale × network: base frozen (a buffer, saved for --resume), the last layer zeroed so the
        output starts at base; `scale` keeps the residual at the size of a token embedding's entries."""
        m, h = self.config.n_prompts, self.config.hidden_size
        self.register_buffer("base", torch.zeros(m, h) if base is None else base.detach().float().clone())
        self.register_buffer("scale", torch.tensor(float(scale)))
        assert self.mlp is not None
        with torch.no_grad():
            self.mlp[-1].weight.zero_()
            self.mlp[-1].bias.zero_()

    def forward(self) -> torch.Tensor:
        """The prompt vectors, [m, H], in float32 whatever the backbone's precision."""
        x = self.embedding.weight.float()
        if self.lstm is not None:
            x = self.lstm(x.unsqueeze(0))[0].squeeze(0)
        if self.mlp is not None:
            x = self.mlp(x)
        x = x[: self.config.n_prompts]
        return x if self.base is None else self.base + self.scale * x
