#!/usr/bin/env python3
"""Render a bench results JSON as Markdown. Every number comes from the JSON; verdicts are computed, not written.

    python bench/report.py bench/results/<stamp>-<mode>.json [-o OUT.md]
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

NAMES = {"zero_shot": "zero-shot (manual template)", "ptcli": "**ptcli P-tuning**", "peft": "PEFT P-tuning (LSTM)",
         "probe": "linear probe (LogReg)", "setfit": "SetFit (MiniLM-L6)"}
SHORT = {"zero_shot": "zero-shot", "ptcli": "ptcli", "peft": "PEFT P-tuning", "probe": "linear probe",
         "setfit": "SetFit"}
ORDER = list(NAMES)


def noise_pts(n: int) -> float:
    """Half-width, in points, of the 95% interval of one accuracy measured on n rows (worst case p = 0.5)."""
    return 100 * 1.96 * math.sqrt(0.25 / n) if n else float("nan")


def _ms(values: list[float]) -> tuple[float, float]:
    mean = float(np.mean(values))
    return mean, float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _pct(values: list[float]) -> str:
    mean, std = _ms(values)
    return f"{100 * mean:.1f} ± {100 * std:.1f}" if len(values) > 1 else f"{100 * mean:.1f}"


def _secs(values: list[float]) -> str:
    if not values:
        return "–"
    mean = float(np.mean(values))
    return f"{mean:.0f}" if mean >= 10 else f"{mean:.1f}"


def _groups(runs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(dataset, backbone) → {"zero_shot": record | None, "by_k": {k: {method: [records]}}}."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for r in runs:
        g = out.setdefault((r["dataset"], r["backbone"]), {"zero_shot": None, "by_k": defaultdict(dict)})
        if r["method"] == "zero_shot":
            g["zero_shot"] = r
        else:
            g["by_k"][r["k"]].setdefault(r["method"], []).append(r)
    return out


def _methods_at(g: dict[str, Any], k: int) -> dict[str, list[dict[str, Any]]]:
    methods = dict(g["by_k"].get(k, {}))
    if g["zero_shot"] is not None:
        methods["zero_shot"] = [g["zero_shot"]]
    return methods


def comparisons(data: dict[str, Any]) -> list[dict[str, Any]]:
    """For every (dataset, backbone, K, metric): ptcli's mean, the best peer's mean and the gap in points."""
    out = []
    for (dataset, backbone), g in _groups(data["runs"]).items():
        metrics = ["accuracy"] + (["macro_f1"] if dataset == "thucnews" else [])
        for k in sorted(g["by_k"]):
            methods = _methods_at(g, k)
            if "ptcli" not in methods:
                continue
            n = methods["ptcli"][0]["n_test"]
            for metric in metrics:
                mine = float(np.mean([r[metric] for r in methods["ptcli"]]))
                peers = {m: float(np.mean([r[metric] for r in rs])) for m, rs in methods.items() if m != "ptcli"}
                if not peers:
                    continue
                best = max(peers, key=lambda m: peers[m])
                out.append({"dataset": dataset, "backbone": backbone, "k": k, "metric": metric, "ptcli": mine,
                            "best_peer": best, "peer": peers[best], "gap_pts": 100 * (mine - peers[best]),
                            "noise_pts": noise_pts(n), "n_test": n, "seeds": len(methods["ptcli"])})
    return out


def _verdict(c: dict[str, Any] | None) -> str:
    if c is None:
        return ""
    if c["gap_pts"] >= 0:
        return f"best (+{c['gap_pts']:.1f} over {SHORT[c['best_peer']]})"
    within = " (within test noise)" if -c["gap_pts"] < c["noise_pts"] else ""
    return f"**loses to {SHORT[c['best_peer']]} by {-c['gap_pts']:.1f}**{within}"


def _epochs(rs: list[dict[str, Any]]) -> str:
    """The epoch each seed kept (0: the untrained prompts won on dev), for the methods that choose one."""
    kept = [r["best_epoch"] for r in rs if r.get("best_epoch") is not None]
    return ", ".join(map(str, kept)) if kept else "–"


def selection_notes(data: dict[str, Any]) -> list[str]:
    """How often model selection kept the untrained prompts: the dev split of a K-shot set is tiny."""
    lines = []
    for method in ("ptcli", "peft"):
        rs = [r for r in data["runs"] if r["method"] == method and r.get("best_epoch") is not None]
        zero = [r for r in rs if r["best_epoch"] == 0]
        if zero:
            dev = sorted({r["n_dev"] for r in zero})
            lines.append(f"- {SHORT[method]} kept its **untrained** prompts (best epoch 0) in {len(zero)} of {len(rs)} "
                         f"runs: on a dev split of {', '.join(map(str, dev))} rows the untrained prompts tied or beat "
                         "every trained epoch.")
    return ["### Model selection", "", *lines, ""] if lines else []


def accuracy_section(data: dict[str, Any]) -> list[str]:
    meta = data["meta"]
    cmp = {(c["dataset"], c["backbone"], c["k"], c["metric"]): c for c in comparisons(data)}
    lines = ["## Accuracy", "",
             "Mean ± sample std over seeds (one K-shot training set per seed; the test rows are fixed per dataset). "
             "Zero-shot trains nothing, so it has one figure per dataset. *train s*: training time per run (ptcli "
             "and PEFT: the epochs, dev evaluation included, backbone load excluded; probe: train-row features + "
             "fit; SetFit: `trainer.train()`); *predict s*: scoring all test rows once.", ""]
    for (dataset, backbone), g in _groups(data["runs"]).items():
        title = meta.get("datasets", {}).get(dataset, {}).get("title", dataset)
        btitle = meta.get("backbones", {}).get(backbone, {}).get("title", backbone)
        any_run = g["zero_shot"] or next(iter(next(iter(g["by_k"].values())).values()))[0]
        n = any_run["n_test"]
        lines += [f"### {title} · {btitle}", "",
                  f"{n} test rows: one accuracy is good to about ±{noise_pts(n):.1f} points (95%). *best epoch*: "
                  "the epoch each seed kept on its dev split (0 = the untrained prompts).", "",
                  "| K/class | method | accuracy % | macro-F1 % | seeds | best epoch | train s | predict s | verdict |",
                  "|---:|---|---:|---:|---:|---|---:|---:|---|"]
        ks = sorted(g["by_k"]) or [None]
        for k in ks:
            methods = _methods_at(g, k) if k is not None else {"zero_shot": [g["zero_shot"]]}
            for m in ORDER:
                rs = methods.get(m)
                if not rs:
                    continue
                verdict = ""
                if m == "ptcli":
                    verdict = _verdict(cmp.get((dataset, backbone, k, "accuracy")))
                    f1 = cmp.get((dataset, backbone, k, "macro_f1"))
                    if f1 is not None and f1["gap_pts"] < 0:
                        verdict += f"; macro-F1: {_verdict(f1)}"
                lines.append(
                    f"| {k if k is not None else '–'} | {NAMES[m]} | {_pct([r['accuracy'] for r in rs])} | "
                    f"{_pct([r['macro_f1'] for r in rs])} | {len(rs)} | {_epochs(rs)} | "
                    f"{_secs([r['train_seconds'] for r in rs]) if m != 'zero_shot' else '0'} | "
                    f"{_secs([r['predict_seconds'] for r in rs])} | {verdict} |")
        lines.append("")
    return lines


def gaps_section(data: dict[str, Any]) -> list[str]:
    cs = comparisons(data)
    losses = sorted((c for c in cs if c["gap_pts"] < 0), key=lambda c: c["gap_pts"])
    lines = ["## Gaps: where ptcli is not the best", ""]
    if not cs:
        return [*lines, "No ptcli run to compare yet.", ""]
    if not losses:
        return [*lines, "None: ptcli P-tuning has the best mean on every dataset, backbone and K measured.", "",
                *selection_notes(data)]
    lines.append("Largest first. *noise*: the ±95% half-width of one accuracy on this many test rows; a gap smaller "
                 "than it is not evidence either way.")
    lines.append("")
    for c in losses:
        metric = "accuracy" if c["metric"] == "accuracy" else "macro-F1"
        lines.append(f"- {c['dataset']} / {c['backbone']}, K={c['k']}: {SHORT[c['best_peer']]} {metric} "
                     f"{100 * c['peer']:.1f} vs ptcli {100 * c['ptcli']:.1f} (**{c['gap_pts']:.1f} pts**, "
                     f"noise ±{c['noise_pts']:.1f}, {c['seeds']} seed(s))")
    wins = [c for c in cs if c["gap_pts"] >= 0]
    lines += ["", f"ptcli is best in {len(wins)} of {len(cs)} comparisons.", ""]
    return lines + selection_notes(data)


def speed_section(data: dict[str, Any]) -> list[str]:
    sp = data.get("speed", {})
    if not sp:
        return []
    lines = ["## Speed and memory", "", "Ratios come from figures measured in this run, on this machine.", ""]
    tp = [v for k, v in sp.items() if k.startswith("throughput/")]
    if tp:
        lines += ["### Predict throughput (rows/s, higher is better)", "",
                  "Same texts, same batch size. *bare forward*: the backbone over the raw text (no template), "
                  "logits at the last position only, padding to each batch's longest, in data order; it is a floor, "
                  "not a classifier. *shuffled*: ptcli's scoring with its longest-first ordering replaced by random "
                  "batches. *CLI*: `ptcli predict` in a fresh process (start-up, GGUF hashing and model load "
                  "included).", "",
                  "| backbone | rows | batch | ptcli (longest-first) | ptcli (shuffled) | bare forward (data order) | "
                  "bare forward (longest-first) | `ptcli predict` CLI | ptcli overhead vs bare | gain of bucketing |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for v in tp:
            rps = v["rows_per_second"]
            cli = f"{v['cli']['rows_per_second']:.2f}" if "cli" in v else "–"
            lines.append(f"| {v['backbone']} ({v['dataset']}) | {v['rows']} | {v['batch_size']} | "
                         f"{rps['ptcli_longest_first']:.2f} | {rps['ptcli_shuffled']:.2f} | "
                         f"{rps['bare_forward_data_order']:.2f} | {rps['bare_forward_longest_first']:.2f} | {cli} | "
                         f"{v['overhead_vs_bare']:.2f}× | {v['bucketing_gain']:.2f}× |")
        lines.append("")
        for v in tp:
            lines.append(f"- {v['backbone']}: ptcli scores {v['mean_template_tokens']:.0f} tokens per row "
                         f"(template + text) and {v['n_label_words']} label words, the bare forward "
                         f"{v['mean_raw_tokens']:.0f} raw-text tokens; ptcli is "
                         f"{v['overhead_vs_bare']:.2f}× the time of the bare forward, and longest-first batching "
                         f"makes it {v['bucketing_gain']:.2f}× faster than random batches.")
        lines.append("")
    lines += scoring_lines(data)
    steps = [v for k, v in sp.items() if k.startswith("train_step/")]
    if steps:
        lines += ["### One training step (seconds, lower is better)", "",
                  "| backbone | batch | tokens/row | ptcli | PEFT P-tuning | PEFT / ptcli | trainable params ptcli / "
                  "PEFT |", "|---|---:|---:|---:|---:|---:|---|"]
        for v in steps:
            lines.append(f"| {v['backbone']} | {v['batch_size']} | {v['mean_template_tokens']:.0f} | "
                         f"{v['ptcli_seconds']:.2f} | {v['peft_seconds']:.2f} | {v['peft_over_ptcli']:.2f}× | "
                         f"{v['ptcli_trainable_params']:,} / {v['peft_trainable_params']:,} |")
        lines.append("")
        for v in steps:
            r = v["peft_over_ptcli"]
            word = f"{r:.2f}× faster than" if r >= 1 else f"**{1 / r:.2f}× slower than**"
            lines.append(f"- {v['backbone']}: a ptcli training step is {word} PEFT's (median of {v['repeats']}).")
        lines.append("")
    if "peak_rss" in sp:
        v = sp["peak_rss"]
        lines += ["### Peak memory of `ptcli predict`", "", f"Backbone: {v['backbone']}.", "",
                  "| rows | input MB | peak RSS MB | seconds | rows/s |", "|---:|---:|---:|---:|---:|"]
        for r in v["runs"]:
            lines.append(f"| {r['rows']:,} | {r['input_mb']:.1f} | {r['peak_rss_mb']:.0f} | {r['seconds']:.1f} | "
                         f"{r['rows_per_second']:.0f} |")
        flat = v["rss_ratio"] < 1.2
        first, last = v["runs"][0], v["runs"][-1]
        lines += ["", f"{v['rows_ratio']:.0f}× the rows → {v['rss_ratio']:.2f}× the peak RSS "
                  f"({last['peak_rss_mb'] - first['peak_rss_mb']:+.0f} MB; the input grew by "
                  f"{last['input_mb'] - first['input_mb']:.0f} MB): "
                  + ("flat, streaming holds." if flat else "**not flat: memory grows with the input.**"), ""]
    if "help" in sp:
        v = sp["help"]
        lines += [f"### `ptcli --help`: {v['median_seconds']:.2f} s (median of {v['repeats']}, "
                  f"min {v['min_seconds']:.2f} s)", ""]
    return lines


def scoring_lines(data: dict[str, Any]) -> list[str]:
    """Test-set scoring time of ptcli vs PEFT from the accuracy runs: same rows, backbone, token ids and batch."""
    out = []
    for (dataset, backbone), g in _groups(data["runs"]).items():
        mine = [r["predict_seconds"] for rs in g["by_k"].values() for r in rs.get("ptcli", [])]
        peft = [r["predict_seconds"] for rs in g["by_k"].values() for r in rs.get("peft", [])]
        if mine and peft:
            ratio = float(np.mean(mine)) / float(np.mean(peft))
            word = f"**{ratio:.2f}× the time of**" if ratio > 1 else f"{ratio:.2f}× the time of"
            out.append(f"- {dataset} / {backbone}: scoring the test rows took ptcli {np.mean(mine):.0f} s, "
                       f"PEFT {np.mean(peft):.0f} s (mean of {len(mine)}): ptcli takes {word} PEFT's single pass.")
    if not out:
        return []
    return ["### Scoring the test rows: ptcli vs PEFT P-tuning", "",
            "From the accuracy runs: same rows, backbone, token count and batch size (32), both longest-first.", "",
            *out, ""]


def header(data: dict[str, Any]) -> list[str]:
    meta = data["meta"]
    m, v, g = meta.get("machine", {}), meta.get("versions", {}), meta.get("git", {})
    status = "complete" if meta.get("finished") else "**partial (still running or interrupted)**"
    lines = [f"# ptcli benchmarks: {meta['mode']} mode", "",
             f"- command: `{meta.get('command', '')}`; started {meta.get('started')}; wall time "
             f"{meta.get('wall_seconds', 0) / 60:.1f} min; {status}",
             f"- machine: {m.get('cpu')} ({', '.join(m.get('cpu_flags', [])) or 'no AVX2/AVX-512 flags'}), "
             f"{m.get('logical_cpus')} logical CPUs, {m.get('memory_gb')} GB RAM, torch threads "
             f"{m.get('torch_threads')}, CUDA {m.get('cuda')}; {m.get('platform')}, Python {m.get('python')}",
             f"- load average at start {', '.join(f'{x:.1f}' for x in m.get('load_average_start', []))}"
             + (f", at end {', '.join(f'{x:.1f}' for x in meta['load_average_end'])}"
                if meta.get("load_average_end") else ""),
             "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
             f"- git: {g.get('commit')}{' (uncommitted changes)' if g.get('dirty') else ''}; device "
             f"{meta.get('device')}, precision {meta.get('precision')}", ""]
    load = m.get("load_average_start", [0])[0]
    if m.get("logical_cpus") and load > 0.5 * m["logical_cpus"]:
        lines += [f"> The machine was busy when the run started (load {load:.1f} on {m['logical_cpus']} CPUs): "
                  "absolute timings are pessimistic; ratios measured in this run remain comparable.", ""]
    lines += [f"> {n}" for n in meta.get("plan", {}).get("notes", [])]
    lines.append("")
    return lines


def setup_section(data: dict[str, Any]) -> list[str]:
    meta = data["meta"]
    lines = ["## What ran", "", "| dataset | backbone | test rows | K per class | seeds | max epochs |",
             "|---|---|---:|---|---|---:|"]
    for d in meta.get("plan", {}).get("datasets", []):
        lines.append(f"| {d['dataset']} | {d['backbone']} | {d['test_size']} | {', '.join(map(str, d['ks']))} | "
                     f"{', '.join(map(str, d['seeds']))} | {d['epochs']} |")
    pt = next((r for r in data["runs"] if r["method"] == "ptcli"), None)
    pe = next((r for r in data["runs"] if r["method"] == "peft"), None)
    lines.append("")
    if pt:
        lines.append(f"- **ptcli**: `ptcli.train.train` with its defaults: {pt['n_prompts']} [P] in the template, "
                     f"{pt['encoder']} prompt encoder, lr {pt['lr']}, batch {pt['batch_size']}, patience "
                     f"{pt['patience']}, 25% of each class held out as dev for choosing the epoch.")
    if pe:
        lines.append(f"- **PEFT P-tuning**: `PromptEncoderConfig(encoder_reparameterization_type='LSTM', "
                     f"num_virtual_tokens={pe['n_prompts']}, encoder_hidden_size={pe['encoder_hidden_size']})` "
                     f"({pe['trainable_params']:,} trainable parameters), virtual tokens prepended to the manual "
                     f"template; same label words scored by teacher forcing, same lr {pe['lr']}, batch "
                     f"{pe['batch_size']}, epochs, patience, dev split and seeds as ptcli.")
    for dataset, t in meta.get("templates", {}).items():
        lines.append(f"- template for {dataset}: `{t['template'].strip()!r}`, label words `{t['verbalizer'].strip()}`")
    lines += ["- **zero-shot**: ptcli's template without its [P], nothing trained.",
              "- **linear probe**: scikit-learn `LogisticRegression(C=1)` on standardized, mean-pooled last hidden "
              "states of the raw text (same frozen backbone), fit on all K-shot rows.",
              "- **SetFit** (English only): `setfit` defaults on all-MiniLM-L6-v2 (a different, 22M-parameter "
              "sentence encoder), fit on all K-shot rows.", ""]
    return lines


def errors_section(data: dict[str, Any]) -> list[str]:
    if not data.get("errors"):
        return []
    return ["## Errors", "", *[f"- {e['where']}: `{e['error']}`" for e in data["errors"]], ""]


def render(data: dict[str, Any]) -> str:
    parts = header(data) + accuracy_section(data) + gaps_section(data) + speed_section(data) + setup_section(data)
    parts += errors_section(data)
    return "\n".join(parts).rstrip() + "\n"


def main() -> int:
    import json

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path)
    ap.add_argument("-o", "--output", type=Path, help="default: the JSON's path with .md")
    args = ap.parse_args()
    data = json.loads(args.results.read_text(encoding="utf-8"))
    out = args.output or args.results.with_suffix(".md")
    out.write_text(render(data), encoding="utf-8")
    print(out, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
