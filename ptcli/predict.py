"""Prediction: stream a table through an artifact, adding pred, confidence and prob_<label> to every row.

Rows are read and written in chunks, so memory stays flat however long the input; output goes to a temporary file
beside the target and is renamed into place only when every row is written.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ptcli import artifact
from ptcli.checks import check_batch_size
from ptcli.classifier import Classifier
from ptcli.console import progress, warn
from ptcli.data import TableWriter, iter_table, require_columns, table_format
from ptcli.errors import PtcliError
from ptcli.outputs import atomic_file, check_output_file

ADDED = ("pred", "confidence")


@dataclass
class PredictArgs:
    artifact: Path
    input: Path
    output: Path | None = None  # .csv/.tsv/.jsonl by suffix; stdout when None
    text_col: str | None = None  # default: the column the artifact was trained on
    text_b_col: str | None = None
    format: str | None = None  # input format when the suffix does not say
    batch_size: int = 32
    device: str = "auto"
    precision: str = "auto"
    model: str | None = None  # where the backbone is now, if it moved since training
    chunk_rows: int = 4096
    json: bool = False  # JSONL on stdout when no output file is given


@dataclass
class PredictResult:
    rows: int
    seconds: float
    output: str
    labels: list[str]

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def output_columns(df: pd.DataFrame, labels: list[str], probs: np.ndarray) -> pd.DataFrame:
    out = df.copy()
    best = probs.argmax(1)
    out["pred"] = [labels[i] for i in best]
    out["confidence"] = probs[np.arange(len(best)), best]
    for j, label in enumerate(labels):
        out[f"prob_{label}"] = probs[:, j]
    return out


def predict(args: PredictArgs) -> PredictResult:
    started = time.perf_counter()
    check_batch_size(args.batch_size)
    art = artifact.load(args.artifact)
    text_col = args.text_col or art.meta.columns.text
    text_b_col = args.text_b_col or art.meta.columns.text_b
    if args.output is not None:
        check_output_file(args.output, reads=(args.input,), protected=(art.path,))
        out_fmt = table_format(args.output)
    else:
        out_fmt = "jsonl" if args.json else "csv"
    # Bound a chunk's [rows × labels] probabilities (10,000 intents × 4,096 rows would be 330 MB of float64).
    chunk_rows = max(1, min(args.chunk_rows, 4_000_000 // len(art.labels)))
    chunks = iter_table(args.input, args.format, chunk_rows)
    first = next(chunks)  # fails on an unreadable input before the backbone is loaded
    needed = {text_col: "--text-col", **({text_b_col: "--text-b-col"} if text_b_col else {})}
    require_columns(first, args.input, needed)
    clashes = [c for c in [*ADDED, *(f"prob_{lab}" for lab in art.labels)] if c in first.columns]
    if clashes:
        raise PtcliError(f"{args.input}: already has column(s) {', '.join(clashes)} that predict adds; rename or drop "
                         "them (is this a predictions file?)")
    clf, prompts = Classifier.from_artifact(art, args.device, args.precision, args.model)

    with contextlib.ExitStack() as stack:
        stream = stack.enter_context(atomic_file(args.output)) if args.output is not None else sys.stdout
        writer = TableWriter(stream, out_fmt, name=str(args.output or "stdout"))
        rows = blank = 0
        with progress() as bar:
            task = bar.add_task("predicting", total=None)
            for chunk in _chain(first, chunks):
                n, n_blank = _predict_chunk(clf, prompts, chunk, text_col, text_b_col, args.batch_size, writer,
                                            lambda k: bar.advance(task, k))
                rows += n
                blank += n_blank
                bar.update(task, description=f"predicted {rows} rows")
        stream.flush()
    if blank:
        warn(f"{args.input}: {blank} row(s) have an empty {text_col!r}; they were predicted from the template alone")
    return PredictResult(rows=rows, seconds=time.perf_counter() - started,
                         output=str(args.output) if args.output else "-", labels=clf.labels)


def _predict_chunk(clf: Classifier, prompts: torch.Tensor, chunk: pd.DataFrame, text_col: str, text_b_col: str | None,
                   batch_size: int, writer: TableWriter, on_batch: Callable[[int], None]) -> tuple[int, int]:
    """Predict and write one chunk; returns (rows written, rows with blank text). An input with a header and no rows
    still gets its header (with the added columns) written."""
    texts = chunk[text_col].astype(str).tolist()
    texts_b = chunk[text_b_col].astype(str).tolist() if text_b_col else None
    if texts:
        probs = clf.predict_proba(clf.encode(texts, texts_b), prompts, batch_size, on_batch)
    else:
        probs = np.zeros((0, len(clf.labels)))
    finite = np.isfinite(probs).all(axis=1)
    if not finite.all():
        bad = chunk.index[~finite][:5].tolist()
        raise PtcliError(f"the backbone produced NaN or infinite scores for data row(s) {', '.join(map(str, bad))} "
                         "(0-based); nothing was written. Try --precision fp32")
    if texts or writer.header:
        writer.write(output_columns(chunk, clf.labels, probs))
    return len(chunk), sum(1 for t in texts if not t.strip())


def _chain(first: pd.DataFrame, rest: object) -> object:
    yield first
    yield from rest  # type: ignore[misc]
