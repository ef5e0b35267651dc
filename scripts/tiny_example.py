#!/usr/bin/env python3
"""Build a self-contained toy setup in DIR: a tiny BERT (real bert-base-chinese vocab, seconds of MLM pre-training
on a synthetic review corpus), train/test CSVs, a template and a verbalizer. No model hub needed.

    python scripts/tiny_example.py /tmp/tiny --rows 10000
    ptcli train /tmp/tiny/train.csv --template /tmp/tiny/template.txt --verbalizer /tmp/tiny/verbalizer.json \\
        --model /tmp/tiny/bert --dev /tmp/tiny/test.csv -o /tmp/tiny/artifact
    ptcli predict /tmp/tiny/artifact /tmp/tiny/predict.csv -o /tmp/tiny/predictions.csv

The same builders make the test suite's fixtures (tests/tiny.py, tests/synthetic.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import synthetic
import tiny


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", type=Path)
    parser.add_argument("--rows", type=int, default=10000, help="rows in predict.csv (unlabeled)")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    if not (args.dir / "bert" / "model.safetensors").is_file():
        tiny.build_bert(args.dir / "bert", hidden=64)
        synthetic.pretrain_bert(args.dir / "bert", steps=300)
    synthetic.write_csv(args.dir / "train.csv", synthetic.reviews(32, seed=1))
    synthetic.write_csv(args.dir / "test.csv", synthetic.reviews(200, seed=2))
    synthetic.write_csv(args.dir / "predict.csv", synthetic.reviews(args.rows, seed=3))
    (args.dir / "template.txt").write_text("<text>。[P][P]很[MASK]\n", encoding="utf-8")
    (args.dir / "verbalizer.json").write_text('{"pos": "好", "neg": "差"}\n', encoding="utf-8")
    print(args.dir)


if __name__ == "__main__":
    main()
