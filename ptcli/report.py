"""Human-readable evaluation output: rich tables on stdout."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from ptcli.console import out


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def print_report(report: dict[str, Any]) -> None:
    source = report.get("artifact") or f"predictions {report.get('predictions', '')}"
    summary = Table(title=f"{source} on {report.get('data', '')}", show_header=False)
    summary.add_row("rows", str(report["n"]))
    summary.add_row("accuracy", f"{report['accuracy']:.4f}")
    summary.add_row("macro-F1", f"{report['macro_f1']:.4f}")
    if "ece" in report:
        summary.add_row("ECE (15 bins)", f"{report['ece']:.4f}")
    if abstain := report.get("abstain"):
        summary.add_row(f"kept (confidence ≥ {abstain['threshold']:g})",
                        f"{abstain['kept']} of {abstain['rows']} ({abstain['coverage']:.1%}), "
                        f"{abstain['abstained']} abstained")
        summary.add_row("accuracy on kept", _num(abstain["accuracy"]))
    out.print(summary)
    _print_per_class(report)
    _print_confusion(report)
    _print_selective(report.get("selective"))
    _print_reliability(report.get("reliability"))
    _print_errors(report.get("errors"))


def _print_per_class(report: dict[str, Any]) -> None:
    per_class = Table(title="per class")
    for col in ("label", "precision", "recall", "F1", "support"):
        per_class.add_column(col, justify="left" if col == "label" else "right")
    for label, m in report["per_class"].items():
        per_class.add_row(label, f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}", str(m["support"]))
    out.print(per_class)


def _print_confusion(report: dict[str, Any]) -> None:
    if report["confusion"] is None:
        out.print(f"(no confusion matrix: {len(report['labels'])} labels)")
        return
    confusion = Table(title="confusion matrix (rows: true, columns: predicted)")
    confusion.add_column("true \\ pred")
    for label in report["labels"]:
        confusion.add_column(label, justify="right")
    for label, row in zip(report["labels"], report["confusion"], strict=True):
        confusion.add_row(label, *(str(v) for v in row))
    out.print(confusion)


def _print_selective(rows: list[dict[str, Any]] | None) -> None:
    if not rows:
        return
    table = Table(title="selective accuracy (most confident rows kept)")
    for col in ("coverage", "rows", "accuracy", "min confidence"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(f"{r['coverage']:.0%}", str(r["rows"]), _num(r["accuracy"]), _num(r["min_confidence"]))
    out.print(table)


def _print_reliability(bins: list[dict[str, Any]] | None) -> None:
    if not bins:
        return
    table = Table(title="reliability (non-empty confidence bins)")
    for col in ("confidence bin", "rows", "mean confidence", "accuracy"):
        table.add_column(col, justify="right")
    for b in bins:
        if b["count"]:
            table.add_row(f"({b['lo']:.3f}, {b['hi']:.3f}]", str(b["count"]), _num(b["confidence"]),
                          _num(b["accuracy"]))
    out.print(table)


def _print_errors(errors: list[dict[str, Any]] | None) -> None:
    if errors is None:
        return
    if not errors:
        out.print("(no mistakes)")
        return
    table = Table(title="most confident mistakes (row: data row, 1 = first after the header)")
    table.add_column("row", justify="right")
    table.add_column("text", no_wrap=True, overflow="ellipsis")  # one line per mistake, cut to the terminal
    for col in ("gold", "pred"):
        table.add_column(col)
    table.add_column("confidence", justify="right")
    for e in errors:  # Text(): user text is not rich markup
        table.add_row(str(e["row"]), Text(e["text"]), Text(e["gold"]), Text(e["pred"]), f"{e['confidence']:.4f}")
    out.print(table)
