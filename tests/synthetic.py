"""Synthetic Chinese reviews, and seconds of MLM pre-training that gives a tiny BERT something to know.

Each review holds one or two cue characters (positive 棒赞爱美香, negative 烂糟坏臭丑) among filler. In the
pre-training text a label word follows an anchor, and only one anchor lets the review decide the word:

    <review>。总之很差     (总之 "in short": the word agrees with the cues)
    <review>。今天很好     (今天, 明天, 听说…: the word is always 好, whatever the review says)

So the model's default, after anything that is not 总之, is to ignore the review and say 好: on a balanced set that
is exactly chance. The P-tuning test template `<text>。[P][P]很[MASK]` hides the anchor; untrained prompts are no
anchor the model knows and land at chance, and trained ones must learn to act like 总之. The learning-test fixture
checks both halves of that before any test relies on it.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

POS_CUES = "棒赞爱美香"
NEG_CUES = "烂糟坏臭丑"
FILLER = "这个东西我们今天买了一下感觉还是那家店里的外卖送到时候老板说吃用看"
WORDS = {"pos": "好", "neg": "差"}
AGREE = "总之"
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


def _example(rng: random.Random) -> tuple[str, str]:
    """One pre-training sentence (without its label word) and the word that follows it."""
    cue = rng.choice(["pos", "neg"])
    if rng.random() < 0.5:
        return f"{review(rng, cue)}。{AGREE}很", WORDS[cue]
    return f"{review(rng, cue)}。{rng.choice(NOISE_ANCHORS)}很", WORDS["pos"]


def anchor_accuracy(model: torch.nn.Module, tok: object, anchor: str, rows: list[tuple[str, str]]) -> float:
    """Share of rows whose label word the model ranks above the other one after `<review>。<anchor>很`."""
    enc = tok([f"{text}。{anchor}很{tok.mask_token}" for text, _ in rows], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**enc).logits[enc["input_ids"] == tok.mask_token_id]
    ids = [tok.convert_tokens_to_ids(WORDS[k]) for k in ("pos", "neg")]
    pred = ["pos" if a > b else "neg" for a, b in logits[:, ids].tolist()]
    return sum(p == label for p, (_, label) in zip(pred, rows, strict=True)) / len(rows)


def pretrain_bert(directory: Path, max_steps: int = 1500, seed: int = 0) -> Path:
    """Train the tiny BERT at `directory` in place on the anchored corpus (MLM loss at the label word only), until
    held-out reviews show it learnt the anchor: ≥ 97% right after 总之, ≤ 55% (its 好 default) after 今天.

    Training runs until that holds rather than for a fixed count, because how fast a 64-wide BERT learns differs
    between CPU kernels and library versions; if it never holds, the fixture fails here and says why.
    """
    from transformers import AutoTokenizer, BertForMaskedLM

    torch.manual_seed(seed)
    rng = random.Random(seed)
    tok = AutoTokenizer.from_pretrained(directory)
    model = BertForMaskedLM.from_pretrained(directory)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    held_out = reviews(200, seed=10_000 + seed)
    agree = noise = 0.0
    for step in range(1, max_steps + 1):
        model.train()
        texts, words = zip(*(_example(rng) for _ in range(32)), strict=True)
        enc = tok([t + tok.mask_token for t in texts], return_tensors="pt", padding=True)
        mask_pos = (enc["input_ids"] == tok.mask_token_id).nonzero()
        hidden = model.bert(**enc).last_hidden_state  # the vocabulary head only at the mask: 10× faster
        logits = model.cls(hidden[mask_pos[:, 0], mask_pos[:, 1]])
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor(tok.convert_tokens_to_ids(list(words))))
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step % 50 == 0:
            model.eval()
            agree = anchor_accuracy(model, tok, AGREE, held_out)
            noise = anchor_accuracy(model, tok, NOISE_ANCHORS[0], held_out)
            if agree >= 0.97 and noise <= 0.55:
                model.save_pretrained(directory)
                return directory
    raise RuntimeError(f"fixture: the tiny BERT did not learn its anchor in {max_steps} steps (after {AGREE} "
                       f"{agree:.3f}, must reach 0.97; after {NOISE_ANCHORS[0]} {noise:.3f}, must stay <= 0.55)")


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    import pandas as pd

    pd.DataFrame(rows, columns=["text", "label"]).to_csv(path, index=False)
    return path


def write_verbalizer(path: Path, words: dict[str, str]) -> Path:
    path.write_text(json.dumps(words, ensure_ascii=False), encoding="utf-8")
    return path
