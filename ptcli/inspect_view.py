"""`ptcli inspect` for people: rich tables and small text charts on stdout, from `inspection.inspect_artifact`."""

from __future__ import annotations

import json
from typing import Any

from rich.table import Table

from ptcli.console import out
from ptcli.head import describe

SPARKS = "▁▂▃▄▅▆▇█"
BAR_WIDTH = 20


def sparkline(values: list[float]) -> str:
    """One character per value, scaled between the series' min and max (a flat series sits mid-height)."""
    if not values:
        return ""
    low, high = min(values), max(values)
    if high - low < 1e-12:
        return SPARKS[len(SPARKS) // 2] * len(values)
    return "".join(SPARKS[round((v - low) / (high - low) * (len(SPARKS) - 1))] for v in values)


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """A horizontal bar for a value in [0, 1], in eighths of a character."""
    eighths = round(max(0.0, min(1.0, fraction)) * width * 8)
    full, rest = divmod(eighths, 8)
    return "█" * full + (" ▏▎▍▌▋▊▉"[rest] if rest else "")


def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # shows leading spaces and newlines


def _token(n: dict[str, Any]) -> str:
    """The decoded text, or the vocabulary entry where a byte-level piece decodes to no whole character."""
    return _quoted(n["text"]) if "\ufffd" not in n["text"] else f"<{n['token']}>"


def print_inspection(report: dict[str, Any]) -> None:
    for table in (_summary(report), _labels(report), _training(report), _metrics(report)):
        out.print(table)
    if report["history"]:
        out.print(_curve(report))
    if report["prompts"] is None:
        out.print(f"prompt reading: {report['prompt_note']}")
    else:
        out.print(_prompts(report))


def _summary(report: dict[str, Any]) -> Table:
    b, enc, t = report["backbone"], report["encoder"], report["template"]
    table = Table(title=f"artifact {report['artifact']}", show_header=False)
    rows = [
        ("template", t["text"]),
        ("prompts", f"{t['n_prompts']} [P] × {enc['hidden_size']}, {enc['kind']} encoder"),
        ("backbone", f"{b['name']} ({b['kind']} LM, {b['model_type']})"),
        ("revision", b["revision"]),
        ("local path", b["local_path"]),
        ("GGUF", f"{b['gguf_file'] or ''} SHA-256 {b['gguf_sha256']}" if b["gguf_sha256"] else None),
        ("fingerprint", b["fingerprint"]),
        ("tuned fingerprint", b["tuned_fingerprint"]),
        ("read from", f"{b['read_from']} ({b['embeddings_from']})" if b.get("read_from") else None),
        ("created", f"{report['created']} by ptcli {report['ptcli_version']}"),
    ]
    for key, value in rows:
        if value is not None:
            table.add_row(key, str(value))
    return table


def _labels(report: dict[str, Any]) -> Table:
    table = Table(title="labels")
    for col in ("label", "word", "token ids", "tokens", "train rows"):
        table.add_column(col, justify="right" if col == "train rows" else "left")
    for label in report["labels"]:
        for j, word in enumerate(label["words"]):
            tokens = " ".join(_quoted(t) for t in word["tokens"]) if "tokens" in word else ""
            table.add_row(label["label"] if j == 0 else "", word["word"], " ".join(map(str, word["token_ids"])),
                          tokens, str(label["train_rows"]) if j == 0 else "")
    return table


def _training(report: dict[str, Any]) -> Table:
    t = report["training"]
    table = Table(title="training", show_header=False)
    table.add_row("rows", f"{t['n_train']} train, {t['n_dev']} dev"
                  + (" (refit: the dev rows chose the epoch, then trained too)" if t.get("refit") else ""))
    table.add_row("best epoch", f"{t['best_epoch']} (0 = the untrained prompts)")
    table.add_row("seed, max length", f"{t['seed']}, {t['max_length']}")
    table.add_row("precision, device", f"{t['precision']}, {t['device']}")
    if t["tune_backbone"]:
        table.add_row("backbone", "tuned too (saved in the artifact)")
    if report.get("label_bias") is not None:
        bias = ", ".join(f"{label['label']} {b:+.3f}" for label, b in zip(report["labels"], report["label_bias"],
                                                                          strict=True))
        table.add_row("label bias", f"{bias} (--calibrate {t['calibrate']})")
    if report.get("head") == "linear":
        start = " (started at the training rows' probe, --head-init fit)" if t["args"].get("head_init") == "fit" else ""
        refit = ("; fit again on the training and dev rows at the kept prompts (--head-refit)"
                 if t.get("head_refit") else "")
        reads = describe(report["head_features"])
        table.add_row("head", f"linear: a read-out of {reads} added to the label words' scores{start}{refit}")
    args = {k: v for k, v in t["args"].items() if v is not None and v is not False}
    table.add_row("arguments", " ".join(f"{k}={v}" for k, v in args.items()))
    return table


def _metrics(report: dict[str, Any]) -> Table:
    before, after = report["dev"]["untrained"], report["dev"]["trained"]
    table = Table(title="dev metrics")
    for col in ("", "before training", "after training"):
        table.add_column(col, justify="left" if not col else "right")
    for key, name in (("accuracy", "accuracy"), ("macro_f1", "macro-F1"), ("loss", "loss"), ("n", "rows")):
        cells = [("–" if m[key] is None else f"{m[key]:.4f}" if isinstance(m[key], float) else str(m[key]))
                 for m in (before, after)]
        table.add_row(name, *cells)
    return table


def _curve(report: dict[str, Any]) -> Table:
    history, best = report["history"], report["training"]["best_epoch"]
    acc = [h["dev_accuracy"] for h in history]
    caption = (f"dev accuracy {sparkline(acc)}   train loss {sparkline([h['train_loss'] for h in history])}   "
               f"dev loss {sparkline([h['dev_loss'] for h in history])}")
    kept = "* = kept" if best else "kept: epoch 0, the untrained prompts"
    table = Table(title=f"training curve ({kept})", caption=caption)
    for col in ("epoch", "train loss", "dev loss", "dev accuracy", ""):
        table.add_column(col, justify="left" if not col else "right")
    for h in history:
        mark = "*" if h["epoch"] == best else ""
        table.add_row(f"{mark}{h['epoch']}", f"{h['train_loss']:.4f}", f"{h['dev_loss']:.4f}",
                      f"{h['dev_accuracy']:.4f}", bar(h["dev_accuracy"]))
    return table


def _prompts(report: dict[str, Any]) -> Table:
    table = Table(title="learned prompts, read as vocabulary (cosine similarity to the input embeddings)",
                  caption=f"norm ÷ median token-embedding norm ({report['median_token_norm']:.4f})")
    for col in ("[P]", "norm", "÷ median", "nearest tokens"):
        table.add_column(col, justify="left" if col == "nearest tokens" else "right")
    for p in report["prompts"]:
        nearest = "  ".join(f"{_token(n)} {n['similarity']:.3f}" for n in p["nearest"])
        table.add_row(str(p["index"]), f"{p['norm']:.4f}", f"{p['relative_norm']:.2f}", nearest)
    return table
