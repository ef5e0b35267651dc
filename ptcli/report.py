"""Human-readable evaluation output: rich tables on stdout."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from ptcli.console import out


def print_report(report: dict[str, Any]) -> None:
    summary = Table(title=f"{report.get('artifact', '')} on {report.get('data', '')}", show_header=False)
    summary.add_row("rows", str(report["n"]))
    summary.add_row("accuracy", f"{report['accuracy']:.4f}")
    summary.add_row("macro-F1", f"{report['macro_f1']:.4f}")
    out.print(summary)

    per_class = Table(title="per class")
    for col in ("label", "precision", "recall", "F1", "support"):
        per_class.add_column(col, justify="left" if col == "label" else "right")
    for label, m in report["per_class"].items():
        per_class.add_row(label, f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}", str(m["support"]))
    out.print(per_class)

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
