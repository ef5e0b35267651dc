"""Where the prompt vectors start: the paper's random encoder output, or real token embeddings (`--prompt-init`).

random  the paper's init: N(0, 1) encoder inputs through a freshly initialised LSTM/MLP. Its output is not a word,
        and training is free to push the prompts far from the token embeddings (the demo's ended at ~270× the
        median token-embedding norm).
vocab   the encoder's output starts exactly at the embeddings of m vocabulary tokens drawn with the seed (a frozen
        base) and the network learns a residual on top, its last layer initialised to zero and its output scaled by
        the typical size of a token embedding's entries (median row norm / √H), so the untrained template reads
        like the manual one with m ordinary words in front, and trained prompts stay at the token-embedding scale.
        With `--encoder none` the prompts are plain vectors that already start at sampled token embeddings under
        either init.
"""

from __future__ import annotations

import math

import torch

# Token ids below this are skipped when sampling (special, byte and punctuation tokens sit low in most vocabularies).
FIRST_ID = 1000


def sample_token_rows(weight: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """[n, H] rows of an embedding matrix at token ids drawn with `seed` (the same draw for the same seed)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(min(FIRST_ID, weight.shape[0] - 1), weight.shape[0], (n,), generator=g)
    return weight[ids.to(weight.device)].detach().float()


def token_scale(weight: torch.Tensor) -> float:
    """The size of a typical token embedding's entries: median row norm / √H."""
    return float(weight.detach().float().norm(dim=1).median()) / math.sqrt(weight.shape[1])
