"""Evaluation: score labeled rows, with an artifact (running its model; several artifacts are scored as one
ensemble, see ptcli.ensemble) or from a predictions file `ptcli predict` wrote (no model loaded). Both paths give
the same report: accuracy, macro-F1, per-class P/R/F1, the confusion matrix, calibration (ECE, reliability bins),
selective accuracy and, on request, abstention and the most confident mistakes (see ptcli.calibration for the
definitions)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ptcli import calibration
from ptcli.checks import check_at_least, check_batch_size
from ptcli.errors import PtcliError, UsageError
from ptcli.metrics import Scored, classification_report

ERROR_TEXT_WIDTH = 60


@dataclass
class EvalArgs:
    artifact: Path | Sequence[Path] | None  # several: an ensemble; None with `predictions`: no model is loaded
    data: Path | None  # labeled rows; None when `predictions` holds the label column
    text_col: str | None = None
    text_b_col: str | None = None
    label_col: str | None = None
    format: str | None = None
    batch_size: int = 32
    device: str = "auto"
    precision: str = "auto"
    model: str | None = None
    predictions: Path | None = None  # a file `ptcli predict` wrote: score it instead of running a model
    id_col: str | None = None  # join `predictions` to `data` by this column instead of by row order
    abstain_below: float | None = None  # also report coverage and accuracy keeping rows with confidence >= this
    errors: int = 0  # list this many of the most confident mistakes


def _check(args: EvalArgs) -> None:
    check_batch_size(args.batch_size)
    calibration.check_threshold(args.abstain_below)
    check_at_least("errors", args.errors, low=0)
    if args.predictions is None:
        if args.artifact is None or args.data is None:
            raise UsageError("eval needs an artifact and labeled rows (ptcli eval ARTIFACT DATA), or a predictions "
                             "file (ptcli eval --predictions PRED [DATA])")
        if args.id_col:
            raise UsageError("--id-col joins a --predictions file to the labeled rows; it needs --predictions")
    elif args.artifact is not None:
        raise UsageError(f"--predictions {args.predictions}: scores a predictions file without a model; drop the "
                         f"artifact {args.artifact}, or drop --predictions to run the model")
    elif args.model is not None:
        raise UsageError(f"--model {args.model}: --predictions loads no model; drop --model")


def evaluate(args: EvalArgs) -> dict[str, Any]:
    _check(args)
    scored = _from_predictions(args) if args.predictions is not None else _from_model(args)
    report = build_report(scored, args.abstain_below, args.errors)
    report["data"] = str(args.data if args.data is not None else args.predictions)
    if args.artifact is None:
        report["artifact"] = None
    else:
        from ptcli.ensemble import as_paths

        paths = [str(p) for p in as_paths(args.artifact)]
        report["artifact"] = paths[0] if len(paths) == 1 else " + ".join(paths)
        report["artifacts"], report["members"] = paths, len(paths)  # the ensemble's members (one alone)
    if args.predictions is not None:
        report["predictions"] = str(args.predictions)
    return report


def _from_model(args: EvalArgs) -> Scored:
    # Imported here: the --predictions path needs neither torch nor the artifact code.
    from ptcli import ensemble
    from ptcli.console import progress
    from ptcli.data import read_labeled

    arts = ensemble.load_artifacts(args.artifact)
    labels = arts[0].labels
    text_col, text_b_col = ensemble.input_columns(arts, args.text_col, args.text_b_col)
    label_col = args.label_col or arts[0].meta.columns.label
    df = read_labeled(args.data, text_col, label_col, text_b_col, args.format)
    unknown = sorted(set(df[label_col]) - set(labels))
    if unknown:
        raise PtcliError(f"{args.data}: label(s) {', '.join(map(repr, unknown))} are not among the artifact's labels "
                         f"({', '.join(map(repr, labels))})")
    model = ensemble.build(arts, args.device, args.precision, args.model)
    texts, texts_b = df[text_col].tolist(), df[text_b_col].tolist() if text_b_col else None
    pred, confidence = [], []  # per row only: the [rows × labels] matrix is never held whole
    with progress() as bar:
        task = bar.add_task("evaluating", total=len(df))
        for _, probs in model.predict_slices(texts, texts_b, args.batch_size, lambda n: bar.advance(task, n)):
            pred.append(probs.argmax(1))
            confidence.append(probs.max(1))
    index = {label: i for i, label in enumerate(labels)}
    return Scored(labels=list(labels), gold=np.array([index[v] for v in df[label_col]], dtype=np.int64),
                  pred=np.concatenate(pred) if pred else np.zeros(0, dtype=np.int64),
                  confidence=np.concatenate(confidence) if confidence else np.zeros(0), texts=df[text_col].tolist())


def _from_predictions(args: EvalArgs) -> Scored:
    from ptcli.predictions import Sources, read_scored

    return read_scored(Sources(predictions=args.predictions, labeled=args.data, label_col=args.label_col or "label",
                               text_col=args.text_col or "text", id_col=args.id_col, format=args.format))


def one_line(text: str, width: int = ERROR_TEXT_WIDTH) -> str:
    """`text` on one line (whitespace runs as one space), cut to `width` characters with an ellipsis."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def build_report(scored: Scored, abstain_below: float | None = None, errors: int = 0) -> dict[str, Any]:
    report = classification_report(scored.gold.tolist(), scored.pred.tolist(), scored.labels)
    confidence, correct = scored.confidence, scored.correct
    bins = calibration.reliability(confidence, correct)
    report["ece"] = calibration.ece(bins)
    report["reliability"] = bins
    report["selective"] = calibration.selective(confidence, correct)
    if abstain_below is not None:
        report["abstain"] = calibration.abstention(confidence, correct, abstain_below)
    if errors:
        report["errors"] = [{"row": i + 1, "text": one_line(scored.texts[i]), "gold": scored.labels[scored.gold[i]],
                             "pred": scored.labels[scored.pred[i]], "confidence": float(confidence[i])}
                            for i in calibration.confident_mistakes(confidence, correct, errors)]
    return report
