"""Quick real check of `--chat` and `--demos`: zero-shot vs chat vs in-context demonstrations, nothing trained.

SmolLM2-135M-Instruct (GGUF), MR movie reviews: 200 fixed test rows, K rows per label for demonstrations, the shipped
sentiment_en.causal template without its [P] and its verbalizer. One CPU thread, fp32.

    PYTHONPATH=. HF_HUB_OFFLINE=1 python scripts/chat_demos_check.py [--k 8] [--seed 0] [--test 200]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ptcli.classifier import Classifier
from ptcli.demos import ALL, choose
from ptcli.loading import load_backbone
from ptcli.template import Template
from ptcli.verbalizer import Verbalizer
from scripts import fetch

TEMPLATES = Path(__file__).resolve().parents[1] / "ptcli" / "templates"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test", type=int, default=200)
    opts = parser.parse_args()
    torch.set_num_threads(1)
    train, test = fetch.split(fetch.mr(), opts.k, opts.seed, opts.test)
    backbone = load_backbone(str(fetch.smollm2_gguf()), device="cpu", precision="fp32")
    template = Template.load(TEMPLATES / "sentiment_en.causal.txt").without_prompts()
    verbalizer = Verbalizer.load(TEMPLATES / "sentiment_en.causal.verbalizer.json", sorted(set(test["label"])))
    demos = choose(train, ALL, opts.seed, "text", "label")
    # An answer opens with a capital: the shipped words capitalised, a variant for --chat only.
    capital = Verbalizer(verbalizer.labels, [[w.capitalize() for w in ws] for ws in verbalizer.words])
    for name, kw in {"zero-shot": {}, "zero-shot --chat": {"chat": True},
                     "zero-shot --chat Capital": {"chat": True, "words": capital},
                     f"ICL {opts.k}/label": {"demos": demos},
                     f"ICL {opts.k}/label --chat": {"demos": demos, "chat": True}}.items():
        words = kw.pop("words", verbalizer)
        clf = Classifier.build(backbone, template, words, 256, warn_template=False, **kw)
        t0 = time.perf_counter()
        probs = clf.predict_proba(clf.encode(test["text"].tolist()), None, batch_size=32)
        pred = [clf.labels[i] for i in probs.argmax(1)]
        acc = sum(p == g for p, g in zip(pred, test["label"], strict=True)) / len(pred)
        share = {label: pred.count(label) / len(pred) for label in clf.labels}
        prefix = len(clf.encoder.context.ids) if clf.encoder.context else 0
        print(f"{name:<24} accuracy {acc:.3f}  predicted {share}  prefix {prefix} tokens  "
              f"{time.perf_counter() - t0:.1f}s", flush=True)


if __name__ == "__main__":
    main()
