"""Evaluation: score an artifact on labeled rows (accuracy, macro-F1, per-class P/R/F1, confusion matrix)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ptcli import artifact
from ptcli.checks import check_batch_size
from ptcli.classifier import Classifier
from ptcli.console import progress
from ptcli.data import read_labeled
from ptcli.errors import PtcliError
from ptcli.metrics import classification_report


@dataclass
class EvalArgs:
    artifact: Path
    data: Path
    text_col: str | None = None
    text_b_col: str | None = None
    label_col: str | None = None
    format: str | None = None
    batch_size: int = 32
    device: str = "auto"
    precision: str = "auto"
    model: str | None = None


def evaluate(args: EvalArgs) -> dict[str, Any]:
    check_batch_size(args.batch_size)
    art = artifact.load(args.artifact)
    cols = art.meta.columns
    text_col, label_col = args.text_col or cols.text, args.label_col or cols.label
    text_b_col = args.text_b_col or cols.text_b
    df = read_labeled(args.data, text_col, label_col, text_b_col, args.format)
    unknown = sorted(set(df[label_col]) - set(art.labels))
    if unknown:
        raise PtcliError(f"{args.data}: label(s) {', '.join(map(repr, unknown))} are not among the artifact's labels "
                         f"({', '.join(map(repr, art.labels))})")
    clf, prompts = Classifier.from_artifact(art, args.device, args.precision, args.model)
    rows = clf.encode(df[text_col].tolist(), df[text_b_col].tolist() if text_b_col else None)
    with progress() as bar:
        task = bar.add_task("evaluating", total=len(rows))
        probs = clf.predict_proba(rows, prompts, args.batch_size, lambda n: bar.advance(task, n))
    index = {label: i for i, label in enumerate(clf.labels)}
    report = classification_report([index[v] for v in df[label_col]], probs.argmax(1).tolist(), clf.labels)
    report["data"] = str(args.data)
    report["artifact"] = str(args.artifact)
    return report
