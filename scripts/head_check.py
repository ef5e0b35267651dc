"""Why --head linear: how much a linear read-out of the slot's hidden state knows, before any prompt is trained.

THUCNews/Qwen, K=16: for each seed, the K-shot rows go through the shipped news template without its
[P] (新闻标题：<text>\\n这条新闻的类别是) on the frozen backbone, and a standardized logistic regression (C=1, as the
bench's probe) is fit on the hidden state the slot is read from, on the 75% of rows `ptcli train` trains on (and
on all of them). Printed beside: the label words' zero-shot accuracy on the same test rows.

    PYTHONPATH=. HF_HUB_OFFLINE=1 python scripts/head_check.py [--seeds 1 2 3] [--test 120]

With --features: instead, ptcli's own fit (LabelHead.fit, --head-init fit: the words' scores as offset, L2 0.01)
on the slot state, on the mean of the row's states, and on both (--head-features slot+mean), from the training
rows and from all K rows (what --head-refit fits on).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ptcli.loading import load_backbone
from ptcli.train import stratified_split
from scripts import fetch

QUESTION = "新闻标题：{}\n这条新闻的类别是"
WORDS = Path(__file__).resolve().parents[1] / "ptcli" / "templates" / "news_zh.verbalizer.json"


def slot_states(backbone, texts: list[str], first: list[int], mean: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """[N, H] last hidden states before the slot ([N, 2, H] with `mean`: and the mean of every position's), and
    [N, labels] the words' first-token log-probabilities."""
    tok, body, lm_head = backbone.tokenizer, backbone.model.base_model, backbone.model.get_output_embeddings()
    states = np.zeros((len(texts), 2, backbone.hidden_size), np.float32)
    words = np.zeros((len(texts), len(first)), np.float32)
    with torch.inference_mode(), backbone.autocast():
        for i, text in enumerate(texts):
            ids = tok(QUESTION.format(text), add_special_tokens=True)["input_ids"][-256:]
            hidden = body(input_ids=torch.tensor([ids])).last_hidden_state[0]
            states[i] = torch.stack([hidden[-1], hidden.mean(0)]).float().numpy()
            words[i] = torch.log_softmax(lm_head(hidden[-1]).float(), -1)[first].numpy()
    return (states if mean else states[:, 0]), words


def features_check(backbone, first: list[int], labels: list[str], seeds: list[int], n_test: int) -> None:
    """--features: ptcli's fitted head on each kind of state, the test rows' accuracy."""
    from ptcli.head import LabelHead

    _, test = fetch.split(fetch.thucnews(), 16, seeds[0], n_test)
    y_test = np.array([labels.index(v) for v in test["label"]])
    test_states, test_words = (torch.from_numpy(a) for a in slot_states(backbone, test["text"].tolist(), first, True))
    for seed in seeds:
        train, _ = fetch.split(fetch.thucnews(), 16, seed, n_test)
        states, words = (torch.from_numpy(a) for a in slot_states(backbone, train["text"].tolist(), first, True))
        y = torch.tensor([labels.index(v) for v in train["label"]])
        trained, _ = stratified_split(train["label"].tolist(), 0.25, seed)
        out = []
        for features in (("slot",), ("mean",), ("slot", "mean")):
            for name, rows in (("train rows", trained), ("all K rows", list(range(len(y))))):
                head = LabelHead(len(labels), backbone.hidden_size, features)
                head.fit(words[rows], states[rows], y[rows])
                with torch.no_grad():
                    acc = float(np.mean((test_words + head(test_states)).argmax(1).numpy() == y_test))
                out.append(f"{'+'.join(features)} ({name}) {acc:.3f}")
        print(f"seed {seed}: " + "; ".join(out))


def main() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--test", type=int, default=120)
    ap.add_argument("--features", action="store_true", help="ptcli's fitted head on slot, mean and both states")
    a = ap.parse_args()
    backbone = load_backbone(str(fetch.qwen_gguf()), "cpu", "auto")
    words = json.loads(WORDS.read_text(encoding="utf-8"))
    labels = sorted(words)
    first = [backbone.tokenizer(words[label], add_special_tokens=False)["input_ids"][0] for label in labels]
    if a.features:
        features_check(backbone, first, labels, a.seeds, a.test)
        return
    _, test = fetch.split(fetch.thucnews(), 16, a.seeds[0], a.test)
    y_test = np.array([labels.index(v) for v in test["label"]])
    test_states, test_words = slot_states(backbone, test["text"].tolist(), first)
    print(f"label words, zero-shot (first token): {np.mean(test_words.argmax(1) == y_test):.3f}")
    for seed in a.seeds:
        train, _ = fetch.split(fetch.thucnews(), 16, seed, a.test)
        states, _ = slot_states(backbone, train["text"].tolist(), first)
        y = np.array([labels.index(v) for v in train["label"]])
        trained, _ = stratified_split(train["label"].tolist(), 0.25, seed)
        out = {}
        for name, rows in (("train rows", trained), ("all K rows", list(range(len(y))))):
            probe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000, random_state=seed))
            probe.fit(states[rows], y[rows])
            out[name] = float(np.mean(probe.predict(test_states) == y_test))
        print(f"seed {seed}: logistic regression on the slot state, {len(trained)} train rows: "
              f"{out['train rows']:.3f}; all {len(y)} K rows: {out['all K rows']:.3f}")


if __name__ == "__main__":
    main()
