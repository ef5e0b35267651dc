"""Synthetic Chinese reviews, and seconds of MLM pre-training that gives a tiny BERT something to know.

Each review holds one or two cue characters (positive 棒赞爱美香, negative 烂糟坏臭丑) among filler. In the
pre-training text a label word follows an anchor, and only one anchor makes it depend on the review:

    <review>。总之很好     (总之 "in short": the word agrees with the cues)
    <review>。今天很差     (今天, 明天, 听说…: the word is a coin flip)

The P-tuning test template `<text>。[P][P]很[MASK]` hides the anchor: untrained prompts look like no anchor the
model knows and land near chance, and the trained ones must learn to act like 总之. If learning breaks, accuracy
stays at the untrained level and the learning test fails.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

POS_CUES = "棒赞爱美香"
NEG_CUES = "烂糟坏臭丑"
FILLER = "这个东西我们今天买了一下感觉还是那家店里的外卖送到时候老板说吃用看"
WORDS = {"pos": "好", "neg": "差"}
NOISE_ANCHORS = ["今天", "明天", "昨天", "也许", "有时", "听说", "好像", "据说"]


def review(rng: random.Random, label: str) -> str:
    chars = [rng.choice(FILLER) for _ in range(rng.randint(5, 9))]
    cues = POS_CUES if label == "pos" else NEG_CUES
    for _ in range(rng.randint(1, 2)):
        chars.insert(rng.randint(0, len(chars)), rng.choice(cues))
    return "".join(chars)


def reviews(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    return [(review(rng, label), label) for label in (["pos", "neg"] * n)[:n]]


def pretrain_bert(directory: Path, steps: int = 300, seed: int = 0) -> Path:
    """Train the tiny BERT at `directory` in place on the anchored corpus (MLM loss at the label word only)."""
    from transformers import AutoTokenizer, BertForMaskedLM

    torch.manual_seed(seed)
    rng = random.Random(seed)
    tok = AutoTokenizer.from_pretrained(directory)
    model = BertForMaskedLM.from_pretrained(directory)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    word_ids = {k: tok.convert_tokens_to_ids(v) for k, v in WORDS.items()}
    for _ in range(steps):
        texts, targets = [], []
        for _ in range(32):
            cue = rng.choice(["pos", "neg"])
            anchor = "总之" if rng.random() < 0.5 else rng.choice(NOISE_ANCHORS)
            label = cue if anchor == "总之" else rng.choice(["pos", "neg"])
            texts.append(f"{review(rng, cue)}。{anchor}很")
            targets.append(word_ids[label])
        enc = tok([t + tok.mask_token for t in texts], return_tensors="pt", padding=True)
        mask_pos = (enc["input_ids"] == tok.mask_token_id).nonzero()
        hidden = model.bert(**enc).last_hidden_state  # the vocabulary head only at the mask: 10× faster
        logits = model.cls(hidden[mask_pos[:, 0], mask_pos[:, 1]])
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor(targets))
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    model.save_pretrained(directory)
    return directory


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    import pandas as pd

    pd.DataFrame(rows, columns=["text", "label"]).to_csv(path, index=False)
    return path
