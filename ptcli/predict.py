"""Prediction: stream a table through an artifact, adding pred, confidence and prob_<label> to every row.

Rows are read and written in chunks, so memory stays flat however long the input; output goes to a temporary file
beside the target and is renamed into place only when every row is written. Several artifacts are scored as one
ensemble (ptcli.ensemble: mean probabilities, one backbone); one artifact is an ensemble of one.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ptcli import ensemble
from ptcli.calibration import check_threshold
from ptcli.checks import check_batch_size
from ptcli.classifier import rows_per_slice
from ptcli.console import progress, warn
from ptcli.data import iter_table, require_columns, table_format, table_writer
from ptcli.errors import PtcliError
from ptcli.outputs import atomic_file, check_output_file

ADDED = ("pred", "confidence")
ABSTAINED = "abstained"  # added with --abstain-below: true where pred was left empty
# Output frames in input order, told how to report progress (rows scored so far).
Outputs = Callable[[Callable[[float], None]], Iterator[pd.DataFrame]]


@dataclass
class PredictArgs:
    artifact: Path | Sequence[Path]  # one artifact, or several on the same labels and backbone to average
    input: Path
    output: Path | None = None  # .csv/.tsv/.jsonl/.parquet by suffix; stdout when None
    text_col: str | None = None  # default: the column the artifact was trained on
    text_b_col: str | None = None
    format: str | None = None  # input format when the suffix does not say
    batch_size: int = 32
    device: str = "auto"
    precision: str = "auto"
    model: str | None = None  # where the backbone is now, if it moved since training
    chunk_rows: int = 4096
    json: bool = False  # JSONL on stdout when no output file is given
    ray: str | None = None  # run on Ray Data: "" for a local Ray (or $RAY_ADDRESS), else the cluster address
    workers: int = 1  # Ray actors, each with its own copy of the model
    threads: int = 1  # torch threads per Ray actor
    abstain_below: float | None = None  # leave pred empty (abstained=true) where confidence < this


@dataclass
class PredictResult:
    rows: int
    seconds: float
    output: str
    labels: list[str]
    artifacts: list[str] = field(default_factory=list)  # the ensemble's members, in the order given

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
    check_threshold(args.abstain_below)
    arts = ensemble.load_artifacts(args.artifact)
    labels = arts[0].labels
    text_col, text_b_col = ensemble.input_columns(arts, args.text_col, args.text_b_col)
    if args.output is not None:
        check_output_file(args.output, reads=(args.input,), protected=tuple(a.path for a in arts))
        out_fmt = table_format(args.output)
    else:
        out_fmt = "jsonl" if args.json else "csv"
    chunk_rows = min(args.chunk_rows, rows_per_slice(len(labels)))  # bounded [rows × labels] per chunk
    chunks = iter_table(args.input, args.format, chunk_rows)
    first = next(chunks)  # fails on an unreadable input before the backbone is loaded
    needed = {text_col: "--text-col", **({text_b_col: "--text-b-col"} if text_b_col else {})}
    require_columns(first, args.input, needed)
    added = [*ADDED, *([ABSTAINED] if args.abstain_below is not None else []), *(f"prob_{lab}" for lab in labels)]
    clashes = [c for c in added if c in first.columns]
    if clashes:
        raise PtcliError(f"{args.input}: already has column(s) {', '.join(clashes)} that predict adds; rename or drop "
                         "them (is this a predictions file?)")
    if args.ray is not None:
        from ptcli.distributed import RayRun

        outputs = RayRun(args, text_col, text_b_col, chunk_rows, labels).predict(first, chunks)
    else:
        model = ensemble.build(arts, args.device, args.precision, args.model)
        outputs = _local_outputs(ChunkPredictor(model, text_col, text_b_col, args.batch_size), first, chunks)

    with contextlib.ExitStack() as stack:
        mode = "wb" if out_fmt == "parquet" else "w"
        stream = stack.enter_context(atomic_file(args.output, mode)) if args.output is not None else sys.stdout
        writer = table_writer(stream, out_fmt, name=str(args.output or "stdout"))
        stack.callback(writer.close)  # before atomic_file's rename: Parquet's footer; on an error, before removal
        rows = blank = 0
        with progress() as bar:
            task = bar.add_task("predicting", total=None)
            for out in outputs(lambda k: bar.advance(task, k)):
                if args.abstain_below is not None:
                    out = abstain(out, args.abstain_below)
                if len(out) or writer.header:  # a header-only input still gets its header, added columns too
                    writer.write(out)
                rows += len(out)
                blank += blank_rows(out, text_col)
                bar.update(task, description=f"predicted {rows} rows")
    if blank:
        warn(f"{args.input}: {blank} row(s) have an empty {text_col!r}; they were predicted from the template alone")
    return PredictResult(rows=rows, seconds=time.perf_counter() - started,
                         output=str(args.output) if args.output else "-", labels=labels,
                         artifacts=[str(a.path) for a in arts])


@dataclass
class ChunkPredictor:
    """One chunk of input rows in, the same rows plus pred/confidence/prob_* out. The single-process path and every
    Ray actor (ptcli.distributed) run this same code."""

    model: ensemble.Ensemble
    text_col: str
    text_b_col: str | None
    batch_size: int

    def __call__(self, chunk: pd.DataFrame, on_batch: Callable[[float], None] | None = None) -> pd.DataFrame:
        texts = chunk[self.text_col].astype(str).tolist()
        texts_b = chunk[self.text_b_col].astype(str).tolist() if self.text_b_col else None
        probs = self.model.predict_proba(texts, texts_b, self.batch_size, on_batch)
        finite = np.isfinite(probs).all(axis=1)
        if not finite.all():
            bad = chunk.index[~finite][:5].tolist()
            raise PtcliError(f"the backbone produced NaN or infinite scores for data row(s) "
                             f"{', '.join(map(str, bad))} (0-based); nothing was written. Try --precision fp32")
        return output_columns(chunk, self.model.labels, probs)


def abstain(out: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """--abstain-below: `pred` left empty where the confidence is below `threshold`, and a boolean `abstained`
    column right after `confidence`. Applied to the output frames, so the local and the Ray paths both get it."""
    below = out["confidence"].to_numpy(dtype=np.float64) < threshold
    out = out.copy()
    out["pred"] = out["pred"].where(~below, "")
    out.insert(out.columns.get_loc("confidence") + 1, ABSTAINED, below.tolist())
    return out


def blank_rows(df: pd.DataFrame, text_col: str) -> int:
    return sum(1 for t in df[text_col].astype(str).tolist() if not t.strip())


def _local_outputs(run: ChunkPredictor, first: pd.DataFrame, rest: Iterator[pd.DataFrame]) -> Outputs:
    def outputs(on_batch: Callable[[float], None]) -> Iterator[pd.DataFrame]:
        for chunk in _chain(first, rest):
            yield run(chunk, on_batch)

    return outputs


def _chain(first: pd.DataFrame, rest: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    yield first
    yield from rest
