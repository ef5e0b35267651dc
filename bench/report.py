#!/usr/bin/env python3
"""Render bench results as Markdown. Every number comes from the JSON; verdicts are computed, not written.

    python bench/report.py bench/results/<stamp>-<grid>.json [-o OUT.md]
    python bench/report.py --merge bench/results/*.json -o bench/results/latest.md

`--merge` keeps, for every data set, backbone, K and method (and ablation lever), the records of the newest run
that has it, so a verdict can be assembled from several runs (e.g. one `--only` per data set). Records are paired
only when they scored the same test rows (the same test-set hash); for each data set and backbone the test set of
the newest run wins and older records on other test rows are dropped (the header counts them).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import stats

NAMES = {"zero_shot": "zero-shot (manual template)", "untrained": "ptcli, untrained prompts",
         "ptcli": "**ptcli P-tuning**", "peft": "PEFT P-tuning (LSTM)", "icl": "in-context learning (K demos)",
         "probe": "linear probe (LogReg)", "setfit": "SetFit (MiniLM-L6)"}
SHORT = {"zero_shot": "zero-shot", "untrained": "untrained", "ptcli": "ptcli", "peft": "PEFT", "icl": "ICL",
         "probe": "probe", "setfit": "SetFit"}
ORDER = list(NAMES)
PEERS = [m for m in ORDER if m != "ptcli"]
LEVER_WORDS = ("better", "worse", "tie (inside noise)")


# --- reading records ----------------------------------------------------------------------------------------------

def study(r: dict[str, Any]) -> str:
    return r.get("study", "verdict")


def correctness(data: dict[str, Any], r: dict[str, Any]) -> np.ndarray | None:
    """Per test row: did this record get it right (None for records without per-row predictions)."""
    test = data.get("tests", {}).get(r.get("test_hash") or "")
    if test is None or "rows" not in r:
        return None
    pred, _ = stats.decode_rows(r["rows"])
    gold = stats.decode_labels(test["gold"])
    return pred == gold if len(pred) == len(gold) else None


def by_seed(data: dict[str, Any], records: list[dict[str, Any]]) -> dict[int | None, np.ndarray]:
    out: dict[int | None, np.ndarray] = {}
    for r in records:
        c = correctness(data, r)
        if c is not None:
            out[r.get("seed")] = c
    return out


def compare(data: dict[str, Any], a: list[dict[str, Any]], b: list[dict[str, Any]],
            words: tuple[str, str, str] = ("wins", "loses", "tie (inside noise)")) -> stats.Paired | None:
    return stats.compare(by_seed(data, a), by_seed(data, b), words)


def groups(data: dict[str, Any], which: str) -> dict[tuple[str, str], dict[Any, dict[str, list[dict[str, Any]]]]]:
    """(dataset, backbone) → K → method (verdict) or lever (ablation) → records. Zero-shot (no K) joins every K."""
    out: dict[tuple[str, str], dict[Any, dict[str, list[dict[str, Any]]]]] = {}
    seedless: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in data["runs"]:
        if study(r) != which:
            continue
        g = out.setdefault((r["dataset"], r["backbone"]), {})
        if r["method"] == "zero_shot" and r.get("k") is None:
            seedless[(r["dataset"], r["backbone"])].append(r)
            continue
        key = (r.get("lever") or "default") if which == "ablation" else r["method"]
        g.setdefault(r.get("k"), {}).setdefault(key, []).append(r)
    for gk, rs in seedless.items():
        ks = out[gk] or {None: {}}
        for methods in ks.values():
            methods["zero_shot"] = rs
        out[gk] = ks
    return out


# --- formatting ---------------------------------------------------------------------------------------------------

def _ms(values: list[float]) -> tuple[float, float]:
    mean = float(np.mean(values))
    return mean, float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _pct(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    mean, std = _ms(values)
    return f"{100 * mean:.1f} ± {100 * std:.1f}" if len(values) > 1 else f"{100 * mean:.1f}"


def _num(values: list[Any], digits: int = 3) -> str:
    values = [v for v in values if v is not None]
    return f"{np.mean(values):.{digits}f}" if values else "–"


def _secs(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    mean = float(np.mean(values))
    return f"{mean:.0f}" if mean >= 10 else f"{mean:.1f}"


def _delta(p: stats.Paired | None) -> str:
    if p is None:
        return "–"
    return f"{p.diff:+.1f} [{p.lo:+.1f}, {p.hi:+.1f}]"


def _seeds_spread(p: stats.Paired) -> str:
    if len(p.per_seed) < 2:
        return ""
    return f" (per seed {min(p.per_seed):+.1f} to {max(p.per_seed):+.1f})"


def _epochs(rs: list[dict[str, Any]]) -> str:
    """The epoch each seed kept (0: the untrained prompts won on dev), for the methods that choose one."""
    kept = [r["best_epoch"] for r in rs if r.get("best_epoch") is not None]
    return ", ".join(map(str, kept)) if kept else "–"


def _title(data: dict[str, Any], dataset: str, backbone: str) -> str:
    meta = data["meta"]
    title = meta.get("datasets", {}).get(dataset, {}).get("title", dataset)
    btitle = meta.get("backbones", {}).get(backbone, {}).get("title", backbone)
    return f"{title} · {btitle}"


def _source(data: dict[str, Any], rs: list[dict[str, Any]]) -> str:
    tags = sorted({r["source"] for r in rs if "source" in r})
    return ", ".join(f"#{t + 1}" for t in tags) or "–"


def _members(rs: list[dict[str, Any]]) -> str:
    """The seed count of a seedless record: the ensemble's members."""
    return f"{rs[0]['members']} (mean)" if rs and rs[0].get("members") else "–"


def _merged(data: dict[str, Any]) -> bool:
    return len(data["meta"].get("sources", [])) > 1


# --- the verdict --------------------------------------------------------------------------------------------------

def comparisons(data: dict[str, Any]) -> list[dict[str, Any]]:
    """ptcli vs every peer, per (dataset, backbone, K), paired on the same test rows."""
    out = []
    for (dataset, backbone), by_k in groups(data, "verdict").items():
        for k in sorted(by_k, key=lambda x: (x is None, x)):
            methods = by_k[k]
            if "ptcli" not in methods:
                continue
            for peer in PEERS:
                if peer not in methods:
                    continue
                p = compare(data, methods["ptcli"], methods[peer])
                mine = float(np.mean([r["accuracy"] for r in methods["ptcli"]]))
                theirs = float(np.mean([r["accuracy"] for r in methods[peer]]))
                out.append({"dataset": dataset, "backbone": backbone, "k": k, "peer": peer, "paired": p,
                            "ptcli": mine, "peer_accuracy": theirs, "seeds": len(methods["ptcli"])})
    return out


def verdict_section(data: dict[str, Any]) -> list[str]:
    cs = comparisons(data)
    lines = ["## Verdict", ""]
    if not cs:
        return [*lines, "No ptcli run to compare yet.", ""]
    lines += ["ptcli − peer accuracy in points, mean over seeds, with a paired bootstrap 95% interval over the test "
              "rows (same rows, same seeds; each row's correctness averaged over the seeds both ran, rows "
              f"resampled {stats.BOOTSTRAP_RESAMPLES} times). **wins**: the interval is above 0; **loses**: below 0; "
              "*tie*: it contains 0, the difference is inside the noise of this many test rows.", ""]
    peers = [p for p in PEERS if any(c["peer"] == p for c in cs)]
    lines += ["| data set · backbone | K | test rows | " + " | ".join(f"vs {SHORT[p]}" for p in peers) + " |",
              "|---|---:|---:|" + "---|" * len(peers)]
    cells: dict[tuple[str, str, Any], dict[str, dict[str, Any]]] = defaultdict(dict)
    for c in cs:
        cells[(c["dataset"], c["backbone"], c["k"])][c["peer"]] = c
    for (dataset, backbone, k), row in cells.items():
        n = next((c["paired"].n for c in row.values() if c["paired"]), "–")
        out = []
        for p in peers:
            c = row.get(p)
            if c is None:
                out.append("")
            elif c["paired"] is None:
                out.append(f"{100 * (c['ptcli'] - c['peer_accuracy']):+.1f} (unpaired)")
            else:
                pr = c["paired"]
                word = f"**{pr.verdict}**" if pr.verdict in ("wins", "loses") else pr.verdict
                out.append(f"{_delta(pr)} {word}")
        lines.append(f"| {dataset} · {backbone} | {k if k is not None else '–'} | {n} | " + " | ".join(out) + " |")
    paired = [c for c in cs if c["paired"] is not None]
    tally = {w: sum(c["paired"].verdict == w for c in paired) for w in ("wins", "tie (inside noise)", "loses")}
    lines += ["", f"ptcli **wins {tally['wins']}**, ties {tally['tie (inside noise)']} and **loses "
              f"{tally['loses']}** of {len(paired)} paired comparisons."]
    unpaired = len(cs) - len(paired)
    if unpaired:
        lines.append(f"{unpaired} comparison(s) could not be paired (records without per-row predictions, from an "
                     "older bench, or on other test rows); their difference of means is shown as *unpaired*.")
    lines.append("")
    return lines


def accuracy_section(data: dict[str, Any]) -> list[str]:
    merged = _merged(data)
    lines = ["## Accuracy", "",
             "Mean ± sample std over seeds (one K-shot training set per seed; the test rows are fixed per data set). "
             "Zero-shot trains nothing, so it has one figure per data set. *ECE*: expected calibration error of the "
             "top label's probability (15 bins, ptcli/calibration.py). *train s*: training time per run (ptcli and "
             "PEFT: the epochs, dev evaluation included, backbone load excluded; ICL: 0, nothing is trained (runs "
             "before 2026-11-30 09:00 timed a train() call that also scored the K rows as dev rows); probe: "
             "train-row features + fit; SetFit: `trainer.train()`); *predict s*: scoring "
             "all test rows once. *ptcli − this*: the paired difference and its 95% interval (see *Verdict*).", ""]
    cmp = {(c["dataset"], c["backbone"], c["k"], c["peer"]): c for c in comparisons(data)}
    for (dataset, backbone), by_k in groups(data, "verdict").items():
        lines += [f"### {_title(data, dataset, backbone)}", ""]
        any_run = next(r for ms in by_k.values() for rs in ms.values() for r in rs)
        lines += [f"{any_run['n_test']} test rows. *best epoch*: the epoch each seed kept on its dev split (0 = the "
                  "untrained prompts).", "",
                  "| K/class | method | accuracy % | macro-F1 % | ECE | seeds | best epoch | train s | predict s | "
                  "ptcli − this (pts) | verdict |" + (" run |" if merged else ""),
                  "|---:|---|---:|---:|---:|---:|---|---:|---:|---|---|" + ("---|" if merged else "")]
        for k in sorted(by_k, key=lambda x: (x is None, x)):
            methods = by_k[k]
            for m in ORDER:
                rs = methods.get(m)
                if not rs:
                    continue
                c = cmp.get((dataset, backbone, k, m))
                p = c["paired"] if c else None
                lines.append(
                    f"| {k if k is not None else '–'} | {NAMES.get(m, m)} | {_pct([r['accuracy'] for r in rs])} | "
                    f"{_pct([r.get('macro_f1') for r in rs])} | {_num([r.get('ece') for r in rs])} | "
                    f"{sum(r.get('seed') is not None for r in rs) or '–'} | {_epochs(rs)} | "
                    f"{_secs([r.get('train_seconds') for r in rs]) if m != 'zero_shot' else '0'} | "
                    f"{_secs([r.get('predict_seconds') for r in rs])} | {_delta(p)} | {p.verdict if p else ''} |"
                    + (f" {_source(data, rs)} |" if merged else ""))
        lines.append("")
    return lines


def gaps_section(data: dict[str, Any]) -> list[str]:
    cs = [c for c in comparisons(data) if c["paired"] is not None]
    lines = ["## Gaps: where ptcli is not ahead", ""]
    if not cs:
        return [*lines, "No paired comparison yet.", ""]
    losses = sorted((c for c in cs if c["paired"].verdict == "loses"), key=lambda c: c["paired"].diff)
    behind = sorted((c for c in cs if c["paired"].verdict != "loses" and c["paired"].diff < 0),
                    key=lambda c: c["paired"].diff)
    if not losses and not behind:
        lines += ["None: ptcli's mean is at or above every peer's on every data set, backbone and K measured.", ""]
    if losses:
        lines += ["Losses (the whole 95% interval below 0), largest first:", ""]
        lines += [_gap_line(c) for c in losses] + [""]
    if behind:
        lines += ["Behind, but inside the noise (the interval contains 0), largest first:", ""]
        lines += [_gap_line(c) for c in behind] + [""]
    return lines + selection_notes(data)


def _gap_line(c: dict[str, Any]) -> str:
    p = c["paired"]
    return (f"- {c['dataset']} / {c['backbone']}, K={c['k']}: {SHORT[c['peer']]} {100 * c['peer_accuracy']:.1f} vs "
            f"ptcli {100 * c['ptcli']:.1f}: **{p.diff:+.1f} pts** [{p.lo:+.1f}, {p.hi:+.1f}]{_seeds_spread(p)}, "
            f"{p.seeds} seed(s), {p.n} test rows; McNemar p per seed {', '.join(f'{x:.2g}' for x in p.mcnemar_p)}")


def selection_notes(data: dict[str, Any]) -> list[str]:
    """How often model selection kept the untrained prompts: the dev split of a K-shot set is tiny."""
    lines = []
    for method in ("ptcli", "peft"):
        rs = [r for r in data["runs"] if study(r) == "verdict" and r["method"] == method
              and r.get("best_epoch") is not None]
        zero = [r for r in rs if r["best_epoch"] == 0]
        if zero:
            dev = sorted({r["n_dev"] for r in zero})
            lines.append(f"- {SHORT[method]} kept its **untrained** prompts (best epoch 0) in {len(zero)} of {len(rs)} "
                         f"runs: on a dev split of {', '.join(map(str, dev))} rows the untrained prompts tied or beat "
                         "every trained epoch.")
    return ["### Model selection", "", *lines, ""] if lines else []


# --- the ablation -------------------------------------------------------------------------------------------------

# Levers that became defaults, for the rows of older runs that measured them.
RETIRED_LEVERS = {
    "prompt_init=vocab": "[P] start from vocabulary embeddings (the default since 2026-11-30)",
    "select=dev-loss": "keep the epoch with the lowest dev loss (the default since 2026-11-30)",
}


def ablation_section(data: dict[str, Any]) -> list[str]:
    gs = groups(data, "ablation")
    skipped = [s for s in data.get("skipped", []) if s["where"].startswith("ablation ")]
    if not gs and not skipped:
        return []
    import ablation as levers_module

    what = {lv.name: lv.what for lv in levers_module.LEVERS}
    what[levers_module.ENSEMBLE] = "mean of the default runs' test probabilities over the seeds"
    what["default"] = "ptcli's defaults (the bench's epochs)"
    what.update({name: text for name, text in RETIRED_LEVERS.items() if name not in what})
    lines = ["## Ablation: ptcli's levers one at a time", "",
             "Each lever changes one thing in ptcli's TrainArgs and runs on the same K-shot rows, seeds, backbone and "
             "test rows as the default. *Δ vs default*: lever − default accuracy in points with the paired bootstrap "
             "95% interval over test rows (seeds averaged per row); **better**/**worse** when the interval excludes "
             "0. Merged from several runs, each lever is compared with the default of its own run (*run*), since "
             "the defaults change when a lever wins.", ""]
    merged = _merged(data)
    for (dataset, backbone), by_k in gs.items():
        for k in sorted(by_k, key=lambda x: (x is None, x)):
            levers = by_k[k]
            default = levers.get("default", [])
            n = next((r["n_test"] for rs in levers.values() for r in rs), "–")
            lines += [f"### {_title(data, dataset, backbone)}, K={k}, {n} test rows", "",
                      "| lever | what it changes | accuracy % | Δ vs default (pts) | verdict | ECE | seeds | train s |"
                      + (" run |" if merged else ""),
                      "|---|---|---:|---|---|---:|---:|---:|" + ("---|" if merged else "")]
            order = ["default", *[n for n in levers_module.NAMES if n in levers],
                     *sorted(x for x in levers if x not in levers_module.NAMES and x != "default")]
            for name in order:
                rs = levers.get(name)
                if not rs:
                    continue
                base = rs[0].get("baseline") or default
                p = compare(data, rs, base, LEVER_WORDS) if name != "default" and base else None
                lines.append(f"| {name} | {what.get(name, '')} | {_pct([r['accuracy'] for r in rs])} | {_delta(p)} | "
                             f"{p.verdict if p else ''} | {_num([r.get('ece') for r in rs])} | "
                             f"{sum(r.get('seed') is not None for r in rs) or _members(rs)} | "
                             f"{_secs([r.get('train_seconds') for r in rs])} |"
                             + (f" {_source(data, rs)} |" if merged else ""))
            lines.append("")
    if skipped:
        lines += ["Levers not run:", ""] + [f"- {s['where'].removeprefix('ablation ')}: {s['reason']}"
                                            for s in skipped] + [""]
    return lines


# --- speed --------------------------------------------------------------------------------------------------------

def speed_section(data: dict[str, Any]) -> list[str]:
    sp = data.get("speed", {})
    if not sp:
        return []
    lines = ["## Speed and memory", "", "Ratios come from figures measured in one run, on one machine.", ""]
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
    if sp.get("peak_rss", {}).get("runs"):
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
    for (dataset, backbone), by_k in groups(data, "verdict").items():
        mine = [r["predict_seconds"] for ms in by_k.values() for r in ms.get("ptcli", [])]
        peft = [r["predict_seconds"] for ms in by_k.values() for r in ms.get("peft", [])]
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


# --- header, plan, set-up -----------------------------------------------------------------------------------------

def _machine(meta: dict[str, Any]) -> str:
    m = meta.get("machine") or {}
    return (f"{m.get('cpu')} ({', '.join(m.get('cpu_flags', [])) or 'no AVX2/AVX-512 flags'}), "
            f"{m.get('logical_cpus')} logical CPUs, {m.get('memory_gb')} GB RAM, torch threads "
            f"{m.get('torch_threads')}, CUDA {m.get('cuda')}")


def header(data: dict[str, Any]) -> list[str]:
    meta = data["meta"]
    if meta.get("sources"):
        return merged_header(data)
    m, v, g = meta.get("machine", {}), meta.get("versions", {}), meta.get("git", {})
    status = "complete" if meta.get("finished") else "**partial (still running or interrupted)**"
    lines = [f"# ptcli benchmarks: {meta['mode']}", "",
             f"- command: `{meta.get('command', '')}`; started {meta.get('started')}; wall time "
             f"{meta.get('wall_seconds', 0) / 60:.1f} min; {status}",
             f"- machine: {_machine(meta)}; {m.get('platform')}, Python {m.get('python')}",
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
    return lines + plan_section(data)


def merged_header(data: dict[str, Any]) -> list[str]:
    meta = data["meta"]
    lines = [f"# ptcli benchmarks: latest results merged from {len(meta['sources'])} run(s)", "",
             "For every data set, backbone, K and method (and ablation lever) the newest run that has it is kept; "
             "*run* columns below name the source.", "",
             "| run | file | command | started | machine | precision, device | wall min | complete |",
             "|---|---|---|---|---|---|---:|---|"]
    for i, s in enumerate(meta["sources"]):
        lines.append(f"| #{i + 1} | `{s['file']}` | `{s.get('command', '')}` | {s.get('started')} | "
                     f"{_machine(s)} | {s.get('precision')}, {s.get('device')} | "
                     f"{s.get('wall_seconds', 0) / 60:.0f} | {'yes' if s.get('finished') else '**no**'} |")
    if meta.get("dropped"):
        lines += ["", f"{meta['dropped']} older record(s) on other test rows (a different test size) were left out."]
    lines.append("")
    return lines + plan_section(data)


def plan_section(data: dict[str, Any]) -> list[str]:
    """What ran: test rows, K, seeds and epochs per data set, and the time model's estimate next to what it took."""
    meta = data["meta"]
    sources = meta.get("sources") or [meta]
    used = {(study(r), r["dataset"], r["backbone"], r.get("source", 0)) for r in data["runs"]}
    rows = []
    for i, s in enumerate(sources):
        plan = s.get("plan") or {}
        est, took = s.get("estimates_seconds", {}), s.get("took_seconds", {})
        entries = [("verdict", d) for d in plan.get("datasets", [])]
        if plan.get("ablation"):
            entries.append(("ablation", plan["ablation"]))
        for which, d in entries:
            name = f"{d['dataset']}/{d['backbone']}"
            if (which, d["dataset"], d["backbone"], i) not in used and meta.get("sources"):
                continue
            key = "ablation" if which == "ablation" else name
            rows.append(f"| {which} | {d['dataset']} | {d['backbone']} | {d['test_size']} | "
                        f"{', '.join(map(str, d['ks']))} | {', '.join(map(str, d['seeds']))} | {d['epochs']} | "
                        + (f"{est[key] / 60:.0f}" if key in est else "–") + " | "
                        + (f"{took[key] / 60:.0f}" if key in took else "–") + " |"
                        + (f" #{i + 1} |" if meta.get("sources") else ""))
    if not rows:
        return []
    merged = bool(meta.get("sources"))
    return ["## What ran", "",
            "Test rows, K-shot training rows per class, seeds and the epochs ptcli and PEFT trained for (ptcli's own "
            "default is 20 with early stopping). *est. min*: the time model's estimate (bench/timing.py); *took "
            "min*: measured.", "",
            "| part | data set | backbone | test rows | K per class | seeds | epochs | est. min | took min |"
            + (" run |" if merged else ""),
            "|---|---|---|---:|---|---|---:|---:|---:|" + ("---|" if merged else ""), *rows, ""]


def setup_section(data: dict[str, Any]) -> list[str]:
    meta = data["meta"]
    pt = next((r for r in data["runs"] if r["method"] == "ptcli" and r.get("encoder")), None)
    pe = next((r for r in data["runs"] if r["method"] == "peft" and r.get("trainable_params")), None)
    un = next((r for r in data["runs"] if r["method"] == "untrained"), None)
    ic = next((r for r in data["runs"] if r["method"] == "icl"), None)
    lines = ["## Methods", ""]
    if pt:
        lines.append(f"- **ptcli**: `ptcli.train.train` with its defaults: {pt['n_prompts']} [P] in the template, "
                     f"{pt['encoder']} prompt encoder, lr {pt['lr']}, batch {pt['batch_size']}, patience "
                     f"{pt['patience']}, {pt.get('prompt_init', 'random')} prompt init, 25% of each class held out "
                     f"as dev for choosing the epoch by {pt.get('select', 'dev-acc')}; test rows scored through the "
                     "artifact's `Classifier`.")
    if un:
        lines.append(f"- **untrained**: ptcli's [P] vectors as train() initialises them for the same seed "
                     f"({un.get('prompts_from', '')}), scored without training: ptcli − untrained is what training "
                     "bought.")
    if pe:
        lines.append(f"- **PEFT P-tuning**: `PromptEncoderConfig(encoder_reparameterization_type='LSTM', "
                     f"num_virtual_tokens={pe['n_prompts']}, encoder_hidden_size={pe['encoder_hidden_size']})` "
                     f"({pe['trainable_params']:,} trainable parameters), virtual tokens prepended to the manual "
                     f"template; same label words scored by teacher forcing, same lr {pe['lr']}, batch "
                     f"{pe['batch_size']}, epochs, patience, dev split and seeds as ptcli.")
    lines.append("- **in-context learning**: the same K rows per class as demonstrations of the manual template "
                 "(ptcli's template without [P], same label words), same backbone, fixed seeded order, the "
                 "demonstration prefix KV-cached: the `Classifier` that `ptcli train --template <manual> --demos K` "
                 "writes (ptcli.demos.choose, the seed's order), built directly."
                 + ("" if ic else " Not run yet where *Not run* says so."))
    for dataset, t in meta.get("templates", {}).items():
        lines.append(f"- template for {dataset}: `{t['template'].strip()!r}`, label words `{t['verbalizer'].strip()}`")
    lines += ["- **zero-shot**: ptcli's template without its [P], nothing trained.",
              "- **linear probe**: scikit-learn `LogisticRegression(C=1)` on standardized, mean-pooled last hidden "
              "states of the raw text (same frozen backbone), fit on all K-shot rows.",
              "- **SetFit** (English only): `setfit` defaults on all-MiniLM-L6-v2 (a different, 22M-parameter "
              "sentence encoder), fit on all K-shot rows.",
              "- **Statistics**: per-row predictions and confidences are in the JSON (`rows`: one label index per "
              "row, confidence in per-mille); gold labels once per test set (`tests`). McNemar: exact two-sided, "
              "per seed. The bootstrap interval covers the test-row sampling; the seeds' spread is shown beside it "
              "in *Gaps*. Macro-F1 is reported, the verdict is on accuracy.", ""]
    return lines


def skipped_section(data: dict[str, Any]) -> list[str]:
    rows = [s for s in data.get("skipped", []) if not s["where"].startswith("ablation ")]
    if not rows:
        return []
    return ["## Not run", "", *[f"- {s['where']}: {s['reason']}" for s in rows], ""]


def errors_section(data: dict[str, Any]) -> list[str]:
    if not data.get("errors"):
        return []
    return ["## Errors", "", *[f"- {e['where']}: `{e['error']}`" for e in data["errors"]], ""]


def render(data: dict[str, Any]) -> str:
    parts = header(data) + verdict_section(data) + accuracy_section(data) + gaps_section(data)
    parts += ablation_section(data) + skipped_section(data) + speed_section(data) + setup_section(data)
    parts += errors_section(data)
    return "\n".join(parts).rstrip() + "\n"


# --- merging ------------------------------------------------------------------------------------------------------

def run_key(r: dict[str, Any]) -> tuple[Any, ...]:
    return (study(r), r["dataset"], r["backbone"], r.get("test_hash"), r.get("k"), r["method"], r.get("lever"))


def merge(items: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """One results dict from several: per (study, data set, backbone, test set, K, method, lever) the records of the
    newest run that has them; per (study, data set, backbone) only the newest run's test set is kept."""
    items = sorted(items, key=lambda it: (it[1]["meta"].get("started") or "", it[0]))
    latest: dict[tuple[Any, ...], tuple[int, list[dict[str, Any]]]] = {}
    for i, (_, d) in enumerate(items):
        mine: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
        for r in d["runs"]:
            mine[run_key(r)].append({**r, "source": i})
        for key, rs in mine.items():
            # A lever is measured against the default of its own run: a later run's default may be another recipe.
            own = mine.get((*key[:6], "default")) if key[0] == "ablation" and key[6] != "default" else None
            for r in rs if own else []:
                r["baseline"] = own
        latest.update({key: (i, rs) for key, rs in mine.items()})
    newest: dict[tuple[Any, ...], tuple[int, Any]] = {}
    for key, (i, _) in latest.items():
        if i >= newest.get(key[:3], (-1, None))[0]:
            newest[key[:3]] = (i, key[3])
    runs, dropped = [], 0
    for key, (_, rs) in sorted(latest.items(), key=lambda kv: _sort_key(kv[0])):
        if key[3] == newest[key[:3]][1]:
            runs += sorted(rs, key=lambda r: (r.get("seed") is None, r.get("seed") or 0))
        else:
            dropped += len(rs)
    have = {(study(r), f"{r['dataset']}/{r['backbone']}", r.get("lever") or r["method"]) for r in runs}
    skipped = []
    for _, d in items:
        for s in d.get("skipped", []):
            words = s["where"].split(" ")
            which = "ablation" if words[0] == "ablation" else "verdict"
            rest = words[1:] if which == "ablation" else words
            if len(rest) >= 2 and (which, rest[0], " ".join(rest[1:])) in have:
                continue  # a newer run has it now
            if s not in skipped:
                skipped.append(s)
    meta_keys = ("mode", "command", "started", "machine", "versions", "git", "plan", "precision", "device",
                 "wall_seconds", "finished", "estimates_seconds", "took_seconds")
    sources = [{"file": name, **{k: d["meta"][k] for k in meta_keys if k in d["meta"]}} for name, d in items]
    union: dict[str, dict[str, Any]] = {"datasets": {}, "backbones": {}, "templates": {}}
    tests: dict[str, Any] = {}
    speed: dict[str, Any] = {}
    errors = []
    for i, (_, d) in enumerate(items):
        for k in union:
            union[k].update(d["meta"].get(k) or {})
        tests.update(d.get("tests", {}))
        speed = d.get("speed") or speed
        errors += [{**e, "where": f"run #{i + 1}: {e['where']}"} for e in d.get("errors", [])]
    return {"meta": {"mode": "merged", "sources": sources, "dropped": dropped, **union},
            "runs": runs, "tests": tests, "speed": speed, "errors": errors, "skipped": skipped}


def _sort_key(key: tuple[Any, ...]) -> tuple[Any, ...]:
    which, dataset, backbone, _, k, method, lever = key
    return (which, dataset, backbone, k is not None, k or 0, ORDER.index(method) if method in ORDER else 99,
            lever or "")


def main(argv: list[str] | None = None) -> int:
    import json

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path, nargs="+", help="results JSON (several with --merge)")
    ap.add_argument("--merge", action="store_true", help="merge the newest result per data set/backbone/K/method")
    ap.add_argument("-o", "--output", type=Path,
                    help="default: the JSON's path with .md; with --merge, bench/results/latest.md beside them")
    args = ap.parse_args(argv)
    if len(args.results) > 1 and not args.merge:
        ap.error("several results files: pass --merge to assemble them into one report")
    loaded = [(p.name, json.loads(p.read_text(encoding="utf-8"))) for p in args.results]
    if args.merge:  # bench/results/*.json also matches bench/speed.py's results, which have no accuracy runs
        skipped = [name for name, d in loaded if not isinstance(d, dict) or "runs" not in d or "meta" not in d]
        for name in skipped:
            print(f"{name}: not an accuracy run (no runs/meta), left out of the merge", file=sys.stderr)
        loaded = [(name, d) for name, d in loaded if name not in skipped]
        if not loaded:
            ap.error("none of these files is an accuracy run of bench/run.py")
    if args.merge:
        data = merge(loaded)
        out = args.output or args.results[0].parent / "latest.md"
    else:
        data = loaded[0][1]
        out = args.output or args.results[0].with_suffix(".md")
    out.write_text(render(data), encoding="utf-8")
    print(out, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
