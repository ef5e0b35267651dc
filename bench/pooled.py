"""One lever against its run's default, pooled over data sets: is a lever that ties on each set better overall?

Each ablation file pairs the lever with the default of its own run on the same rows and seeds. Per data set, the
per-row correctness is averaged over the seeds both ran; the per-row differences of every data set are then put
together and resampled (stats.paired_bootstrap), so each test row weighs the same.

    python bench/pooled.py refit bench/results/*-default-ablation.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import report
import stats


def differences(data: dict, lever: str) -> dict[str, np.ndarray]:
    """{data set/backbone: lever − default per test row, seeds averaged} for one result file (K=… appended when a
    file ablates several K)."""
    out = {}
    for (dataset, backbone), by_k in report.groups(data, "ablation").items():
        for k, levers in by_k.items():
            if lever not in levers or "default" not in levers:
                continue
            paired = stats.paired_rows(report.by_seed(data, levers[lever]), report.by_seed(data, levers["default"]))
            if paired is not None:
                where = f"{dataset}/{backbone}" + (f" K={k}" if len(by_k) > 1 else "")
                out[where] = paired[1] - paired[2]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("lever", help="the lever's name as in the ablation table, e.g. refit")
    ap.add_argument("files", nargs="+", type=Path, help="ablation result JSON files; a later file wins per set")
    args = ap.parse_args(argv)
    found: dict[str, np.ndarray] = {}
    for f in args.files:
        found.update(differences(json.loads(f.read_text(encoding="utf-8")), args.lever))
    if not found:
        print(f"no ablation runs of lever {args.lever!r} beside a default in those files", file=sys.stderr)
        return 1
    for where, d in found.items():
        print(f"{where}: {100 * d.mean():+.1f} points on {len(d)} rows")
    pooled = np.concatenate(list(found.values()))
    mean, lo, hi = stats.paired_bootstrap(pooled, np.zeros_like(pooled))
    print(f"pooled {args.lever}: {100 * mean:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] on {len(pooled)} rows, "
          f"{stats.verdict(lo, hi, ('better', 'worse', 'tie (inside noise)'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
