"""Predictions files read back: what `ptcli predict` wrote (pred, prob_<label>), lined up with labeled rows, so
`ptcli eval --predictions` scores without loading any model.

The labels are the `prob_<label>` columns, in file order (predict writes them in the artifact's order); a row's
prediction is its `pred` (the top probability where `pred` is empty, as on an abstained row) and its confidence the
top probability. The gold labels come from the labeled file, joined by row order (same count; and where both files
have the text column, the same text on every row) or by an id column (unique in both, the same ids in both), or from
the predictions file itself when predict ran on labeled rows. Row numbers in errors count data rows from 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ptcli.data import read_table, require_columns, require_rows
from ptcli.errors import PtcliError, UsageError
from ptcli.metrics import Scored

PROB = "prob_"
SUM_TOLERANCE = 1e-3  # predict writes CSV probabilities with 6 significant digits


@dataclass
class Sources:
    predictions: Path
    labeled: Path | None = None  # None: the gold labels are in the predictions file
    label_col: str = "label"
    text_col: str = "text"
    id_col: str | None = None
    format: str | None = None


def _short(text: str, width: int = 40) -> str:
    one = " ".join(str(text).split())
    return repr(one if len(one) <= width else one[: width - 1] + "…")


def labels_of(df: pd.DataFrame, path: Path) -> list[str]:
    labels = [str(c)[len(PROB):] for c in df.columns if str(c).startswith(PROB)]
    if not labels:
        raise PtcliError(f"{path}: no {PROB}<label> columns; give the file `ptcli predict` wrote")
    return labels


def probabilities(df: pd.DataFrame, labels: list[str], path: Path) -> np.ndarray:
    cols = [PROB + label for label in labels]
    probs = np.column_stack([pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=np.float64) for c in cols])
    bad = ~(np.isfinite(probs) & (probs >= 0) & (probs <= 1))
    if bad.any():
        row, col = (int(v) for v in np.argwhere(bad)[0])
        raise PtcliError(f"{path}: data row {row + 1}, column {cols[col]!r}: {_short(df[cols[col]].iloc[row])} is not "
                         "a probability from 0 to 1")
    off = np.abs(probs.sum(axis=1) - 1) > SUM_TOLERANCE
    if off.any():
        row = int(np.argmax(off))
        raise PtcliError(f"{path}: data row {row + 1}: the {PROB} columns sum to {probs[row].sum():.6g}, not 1; every "
                         f"{PROB}<label> column must be a label (rename an input column that starts with {PROB})")
    return probs


def predicted(df: pd.DataFrame, labels: list[str], probs: np.ndarray, path: Path) -> np.ndarray:
    best = probs.argmax(axis=1)
    if "pred" not in df.columns:
        return best
    index = {label: i for i, label in enumerate(labels)}
    pred = best.copy()
    for row, value in enumerate(df["pred"].tolist()):
        if value == "":
            continue
        if value not in index:
            raise PtcliError(f"{path}: data row {row + 1}: pred {value!r} is not among the labels of its {PROB} "
                             f"columns ({', '.join(map(repr, labels))})")
        pred[row] = index[value]
    return pred


def _unique_ids(df: pd.DataFrame, col: str, path: Path) -> None:
    repeated = df[col].duplicated(keep=False)
    if repeated.any():
        rows = [str(i + 1) for i in np.flatnonzero(repeated.to_numpy())[:5]]
        raise PtcliError(f"{path}: --id-col {col!r}: id {df[col][repeated].iloc[0]!r} is not unique (data rows "
                         f"{', '.join(rows)}); ids must be unique to join on them")


def _join_by_id(pred: pd.DataFrame, gold: pd.DataFrame, src: Sources) -> pd.DataFrame:
    """The predictions' rows in the labeled file's order."""
    col = src.id_col
    require_columns(pred, src.predictions, {col: "--id-col"})
    require_columns(gold, src.labeled, {col: "--id-col"})
    _unique_ids(pred, col, src.predictions)
    _unique_ids(gold, col, src.labeled)
    have, want = set(pred[col]), set(gold[col])
    missing = [i for i in gold[col] if i not in have]
    extra = [i for i in pred[col] if i not in want]
    if missing or extra:
        def show(ids: list[str]) -> str:
            return ", ".join(map(repr, ids[:5])) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")

        parts = ([f"{len(missing)} id(s) of {src.labeled} have no prediction ({show(missing)})"] if missing else [])
        parts += [f"{len(extra)} predicted id(s) are not in {src.labeled} ({show(extra)})"] if extra else []
        raise PtcliError(f"{src.predictions}: --id-col {col!r}: {'; '.join(parts)}; predict exactly the labeled rows")
    position = {v: i for i, v in enumerate(pred[col])}
    return pred.iloc[[position[v] for v in gold[col]]].reset_index(drop=True)


def _check_same_rows(pred: pd.DataFrame, gold: pd.DataFrame, src: Sources) -> None:
    if len(pred) != len(gold):
        raise PtcliError(f"{src.predictions}: {len(pred)} data rows, but {src.labeled} has {len(gold)}; they must be "
                         "the same rows in the same order, or pass --id-col COLUMN to join them by id")
    col = src.text_col
    if col in pred.columns and col in gold.columns:
        differs = pred[col].to_numpy() != gold[col].to_numpy()
        if differs.any():
            row = int(np.argmax(differs))
            raise PtcliError(f"{src.predictions}: data row {row + 1}: {col!r} is {_short(pred[col].iloc[row])}, but "
                             f"{_short(gold[col].iloc[row])} in {src.labeled}; the files must hold the same rows in "
                             "the same order, or pass --id-col COLUMN to join them by id")


def _gold_labels(gold: pd.DataFrame, labels: list[str], src: Sources, where: Path) -> np.ndarray:
    values = gold[src.label_col].str.strip()
    blank = np.flatnonzero((values == "").to_numpy())
    if len(blank):
        raise PtcliError(f"{where}: column {src.label_col!r} is empty on data row(s) "
                         f"{', '.join(str(i + 1) for i in blank[:10])}; every scored row needs a label")
    unknown = sorted(set(values) - set(labels))
    if unknown:
        raise PtcliError(f"{where}: label(s) {', '.join(map(repr, unknown))} are not among the predicted labels "
                         f"({', '.join(map(repr, labels))}, from {src.predictions}'s {PROB} columns)")
    index = {label: i for i, label in enumerate(labels)}
    return np.array([index[v] for v in values], dtype=np.int64)


def read_scored(src: Sources) -> Scored:
    """The predictions file's rows lined up with their gold labels."""
    pred = read_table(src.predictions, src.format).reset_index(drop=True)
    require_rows(pred, src.predictions)
    labels = labels_of(pred, src.predictions)
    if src.labeled is None:
        if src.id_col:
            raise UsageError("--id-col joins the predictions to a labeled file: give one, `ptcli eval --predictions "
                             "PRED LABELED --id-col COLUMN`")
        require_columns(pred, src.predictions, {src.label_col: "--label-col"})
        gold, where = pred, src.predictions
    else:
        gold = read_table(src.labeled, src.format).reset_index(drop=True)
        require_rows(gold, src.labeled)
        require_columns(gold, src.labeled, {src.label_col: "--label-col"})
        pred = _join_by_id(pred, gold, src) if src.id_col else pred
        _check_same_rows(pred, gold, src)
        where = src.labeled
    probs = probabilities(pred, labels, src.predictions)
    texts = next((df[src.text_col].tolist() for df in (gold, pred) if src.text_col in df.columns), [""] * len(pred))
    return Scored(labels=labels, gold=_gold_labels(gold, labels, src, where),
                  pred=predicted(pred, labels, probs, src.predictions),
                  confidence=probs.max(axis=1) if len(probs) else np.zeros(0), texts=texts)
