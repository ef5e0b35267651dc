"""`ptcli predict --ray` against a single process on the same rows: rows/s and peak RSS per process.

Every configuration runs `python -m ptcli predict` in a fresh process (Ray start-up, model loads and writing
included) on a small and a large input; the difference between the two gives the steady rate without the fixed
start-up cost. A sampler reads the RSS of the ptcli process and of every process below it (the local Ray it starts:
GCS, raylet, the actors) every 0.1 s. Outputs are checked to agree with the single-process run (pred equal,
probabilities within 1e-5).

    python bench/ray_bench.py                       # tiny random BERT built here (tests/tiny.py), 2k and 20k rows
    python bench/ray_bench.py --artifact ART --rows 100 400   # any trained artifact, e.g. on SmolLM2

Prints one JSON object on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "scripts")]

ACTOR = "ray::MapWorker"  # the process title Ray gives a map_batches actor


@dataclass
class Config:
    name: str
    threads: int
    workers: int | None = None  # None: single process, no Ray

    def argv(self, artifact: Path, src: Path, dst: Path) -> list[str]:
        cmd = [sys.executable, "-m", "ptcli", "-q", "--threads", str(self.threads), "predict", str(artifact), str(src),
               "-o", str(dst), "--device", "cpu", "--precision", "fp32"]
        return cmd + (["--ray", "--workers", str(self.workers)] if self.workers else [])


CONFIGS = [Config("single process, 2 threads", threads=2), Config("ray, 1 actor x 1 thread", threads=1, workers=1),
           Config("ray, 2 actors x 1 thread", threads=1, workers=2)]


@dataclass
class Sampler:
    """Peak RSS of a process and its descendants, by role, sampled on a thread."""

    root: psutil.Process
    peaks: dict[int, float] = field(default_factory=dict)  # pid → MB
    roles: dict[int, str] = field(default_factory=dict)
    total_peak: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            total = 0.0
            for proc in [self.root, *self._children()]:
                try:
                    mb = proc.memory_info().rss / 2**20
                    role = "driver" if proc.pid == self.root.pid else self._role(proc)
                except psutil.Error:
                    continue
                total += mb
                self.peaks[proc.pid] = max(self.peaks.get(proc.pid, 0.0), mb)
                self.roles[proc.pid] = role
            self.total_peak = max(self.total_peak, total)
            time.sleep(0.1)

    def _children(self) -> list[psutil.Process]:
        try:
            return self.root.children(recursive=True)
        except psutil.Error:
            return []

    @staticmethod
    def _role(proc: psutil.Process) -> str:
        title = " ".join(proc.cmdline()) or proc.name()
        return "actor" if title.startswith(ACTOR) else "ray"

    def summary(self) -> dict[str, Any]:
        by_role: dict[str, list[float]] = {}
        for pid, mb in self.peaks.items():
            by_role.setdefault(self.roles[pid], []).append(round(mb, 1))
        return {"driver_peak_rss_mb": max(by_role.get("driver", [0.0])),
                "actor_peak_rss_mb": sorted(by_role.get("actor", []), reverse=True),
                "other_ray_processes": len(by_role.get("ray", [])),
                "all_processes_peak_rss_mb": round(self.total_peak, 1)}


def run_one(config: Config, artifact: Path, src: Path, dst: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(":")}
    started = time.perf_counter()
    proc = subprocess.Popen(config.argv(artifact, src, dst), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    sampler = Sampler(psutil.Process(proc.pid))
    thread = threading.Thread(target=sampler.run, daemon=True)
    thread.start()
    _, err = proc.communicate()
    seconds = time.perf_counter() - started
    sampler.stop.set()
    thread.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{config.name}: exit {proc.returncode}: {err.strip()[-2000:]}")
    return {"seconds": round(seconds, 2), **sampler.summary()}


def tiny_artifact(workdir: Path) -> Path:
    import synthetic
    import tiny

    from ptcli.train import TrainArgs, train

    bert = tiny.build_bert(workdir / "tiny-bert")
    (workdir / "template.txt").write_text("<text>。[P][P]很[MASK]\n", encoding="utf-8")
    (workdir / "verbalizer.json").write_text('{"pos": "好", "neg": "差"}', encoding="utf-8")
    synthetic.write_csv(workdir / "train.csv", synthetic.reviews(32, seed=1))
    train(TrainArgs(data=workdir / "train.csv", template=workdir / "template.txt", model=str(bert),
                    verbalizer=workdir / "verbalizer.json", output=workdir / "artifact", device="cpu",
                    precision="fp32", epochs=1, seed=0))
    return workdir / "artifact"


def write_rows(path: Path, n: int) -> Path:
    import synthetic

    texts = [text for text, _ in synthetic.reviews(n, seed=3)]
    pd.DataFrame({"id": [f"{i:06d}" for i in range(n)], "text": texts}).to_csv(path, index=False)
    return path


def agrees(reference: Path, other: Path) -> bool:
    a, b = pd.read_csv(reference, dtype=str), pd.read_csv(other, dtype=str)
    probs = [c for c in a.columns if c.startswith("prob_")]
    return (a["id"].equals(b["id"]) and a["pred"].equals(b["pred"])
            and bool(np.allclose(a[probs].astype(float), b[probs].astype(float), atol=1e-5)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", type=Path, help="a trained artifact (default: a tiny random BERT built here)")
    parser.add_argument("--rows", type=int, nargs=2, default=[2000, 20000], metavar=("SMALL", "LARGE"))
    parser.add_argument("--workdir", type=Path, help="keep inputs and outputs here (default: a temporary directory)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ptcli-ray-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        artifact = args.artifact or tiny_artifact(workdir)
        report: dict[str, Any] = {"artifact": str(args.artifact or "tiny random BERT (tests/tiny.py), 1 epoch"),
                                  "cpus": os.cpu_count(), "rows": args.rows, "runs": []}
        for config in CONFIGS:
            timed = {}
            for n in args.rows:
                src, dst = write_rows(workdir / f"rows-{n}.csv", n), workdir / f"out-{n}-{config.workers or 0}.csv"
                print(f"{config.name}: {n} rows…", file=sys.stderr, flush=True)
                timed[n] = run_one(config, artifact, src, dst)
                timed[n]["rows_per_second"] = round(n / timed[n]["seconds"], 1)
                timed[n]["agrees_with_single_process"] = agrees(workdir / f"out-{n}-0.csv", dst)
            small, large = args.rows
            steady = (large - small) / (timed[large]["seconds"] - timed[small]["seconds"])
            report["runs"].append({"config": config.name, "by_rows": timed, "steady_rows_per_second": round(steady, 1),
                                   "fixed_cost_seconds": round(timed[small]["seconds"] - small / steady, 1)})
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
