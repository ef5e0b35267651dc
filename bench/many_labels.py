"""Many-label training: time and peak memory of `ptcli train` + `ptcli eval` with thousands of intents.

    python bench/many_labels.py --labels 10000 --rows-per-label 2

Builds a tiny BERT (hidden 32, bert-base-chinese vocab) and a synthetic task whose labels are two-character words
(the template has two [MASK]), trains one epoch and evaluates, each in a fresh process, and prints seconds, peak
RSS and the size of ptcli.json as JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


_PEAK = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
         "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def run(argv: list[str]) -> dict[str, float]:
    """One ptcli command in a fresh process; its own peak RSS, through a wrapper that waits for it alone."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _PEAK, sys.executable, "-m", "ptcli", "-q", "--threads", "2", *argv],
                         check=True, capture_output=True, text=True).stdout
    return {"seconds": round(time.perf_counter() - t0, 1), "peak_rss_mb": round(int(out.split()[-1]) / 1024)}


def main() -> None:
    import pandas as pd
    import tiny

    parser = argparse.ArgumentParser()
    parser.add_argument("--labels", type=int, default=10000)
    parser.add_argument("--rows-per-label", type=int, default=2)
    args = parser.parse_args()
    vocab = [w.strip() for w in tiny.chinese_vocab().read_text(encoding="utf-8").splitlines()]
    chars = [w for w in vocab if len(w) == 1 and "\u4e00" <= w <= "\u9fff"][:200]
    labels = ["".join(p) for p in itertools.islice(itertools.permutations(chars, 2), args.labels)]
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        model = tiny.build_bert(d / "bert")
        rows = [(f"{label}的评论{i}", label) for label in labels for i in range(args.rows_per_label)]
        pd.DataFrame(rows, columns=["text", "label"]).to_csv(d / "data.csv", index=False)
        (d / "t.txt").write_text("<text>[P][P][MASK][MASK]", encoding="utf-8")
        train = run(["train", str(d / "data.csv"), "--template", str(d / "t.txt"), "--model", str(model), "-o",
                     str(d / "art"), "--epochs", "1", "--device", "cpu", "--batch-size", "32"])
        evaluate = run(["eval", str(d / "art"), str(d / "data.csv"), "--device", "cpu", "--json"])
        print(json.dumps({"labels": args.labels, "rows": len(rows), "train": train, "eval": evaluate,
                          "ptcli_json_kb": round((d / "art" / "ptcli.json").stat().st_size / 1024, 1)}))


if __name__ == "__main__":
    main()
