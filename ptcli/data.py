"""Reading and writing tables (CSV, TSV, JSONL), with errors that say which file, line and column to fix.

Every cell is read as a string: a label "NA" stays "NA", an id "007" stays "007", and predict writes the input
columns back exactly as they came. Large inputs are read in chunks so predict's memory stays flat.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from ptcli.errors import PtcliError, UsageError

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def table_format(path: Path, override: str | None = None) -> str:
    if override:
        if override not in ("csv", "tsv", "jsonl"):
            raise UsageError(f"--format {override!r}: choose csv, tsv or jsonl")
        return override
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise PtcliError(f"{path}: unknown file type {path.suffix or '(no suffix)'!r}; use .csv, .tsv or .jsonl, "
                         "or pass --format")
    return fmt


def check_utf8(path: Path) -> None:
    """Fail on the first non-UTF-8 byte with its offset and line, before any parsing starts."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    lines = 1
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as e:
                bad = offset + e.start
                line = lines + block[: e.start].count(b"\n")
                raise PtcliError(f"{path}: line {line}: byte offset {bad} is not UTF-8 (0x{block[e.start]:02x}); "
                                 "re-save the file as UTF-8") from None
            offset += len(block)
            lines += block.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise PtcliError(f"{path}: the file ends in the middle of a UTF-8 character (byte offset {offset}); "
                             "re-save the file as UTF-8") from None


def _open_checked(path: Path, fmt: str | None) -> str:
    if not path.exists():
        raise PtcliError(f"{path}: no such file")
    if path.is_dir():
        raise PtcliError(f"{path}: is a directory, expected a .csv, .tsv or .jsonl file")
    kind = table_format(path, fmt)
    with path.open("rb") as f:
        head = f.read(65536)  # enough to tell an empty file; never the whole of a large input
    if not head.strip(b"\xef\xbb\xbf \t\r\n"):
        raise PtcliError(f"{path}: the file is empty; it needs a header row and at least one data row")
    check_utf8(path)
    return kind


def iter_table(path: Path, fmt: str | None = None, chunk_rows: int = 4096) -> Iterator[pd.DataFrame]:
    """Yield the table in chunks of string columns; the index holds 0-based data-row numbers."""
    kind = _open_checked(path, fmt)
    if kind == "jsonl":
        yield from _iter_jsonl(path, chunk_rows)
        return
    sep = "," if kind == "csv" else "\t"
    try:
        reader = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_filter=False,
                             encoding="utf-8-sig", chunksize=chunk_rows,
                             quoting=csv.QUOTE_MINIMAL if kind == "csv" else csv.QUOTE_NONE)
        first = True
        for chunk in reader:
            first = False
            yield chunk
        if first:
            raise pd.errors.EmptyDataError
    except pd.errors.EmptyDataError:
        raise PtcliError(f"{path}: the file is empty; it needs a header row and at least one data row") from None
    except pd.errors.ParserError as e:
        raise PtcliError(f"{path}: cannot parse as {kind.upper()} ({str(e).strip()}); check quoting and the "
                         "number of fields on that line, or pass --format") from None


def _iter_jsonl(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    records: list[dict[str, str]] = []
    start = 0
    with path.open(encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise PtcliError(f"{path}: line {lineno}, column {e.colno}: invalid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise PtcliError(f"{path}: line {lineno}: expected a JSON object per line, got {type(obj).__name__}")
            records.append({str(k): _cell(v) for k, v in obj.items()})
            if len(records) == chunk_rows:
                yield pd.DataFrame.from_records(records, index=range(start, start + len(records))).fillna("")
                start += len(records)
                records = []
    if records or start == 0:
        yield pd.DataFrame.from_records(records, index=range(start, start + len(records))).fillna("")


def _cell(value: object) -> str:
    """JSON values as the strings a CSV would hold: null → "", numbers and nested values as JSON text."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def read_table(path: Path, fmt: str | None = None) -> pd.DataFrame:
    frames = list(iter_table(path, fmt))
    return pd.concat(frames) if len(frames) > 1 else frames[0]


def require_columns(df: pd.DataFrame, path: Path, columns: dict[str, str]) -> None:
    """`columns` maps a column name to the option that names it, for the error message."""
    if df.empty and not len(df.columns):
        raise PtcliError(f"{path}: the file has no columns")
    for name, option in columns.items():
        if name not in df.columns:
            have = ", ".join(repr(c) for c in df.columns)
            raise PtcliError(f"{path}: no column {name!r} (columns: {have}); rename it or pass {option} COLUMN")


def require_rows(df: pd.DataFrame, path: Path) -> None:
    if len(df) == 0:
        raise PtcliError(f"{path}: the file has a header but no data rows")


def require_text(df: pd.DataFrame, path: Path, column: str, fmt: str | None = None) -> None:
    empty = df.index[df[column].str.strip() == ""].tolist()
    if empty:
        kind = table_format(path, fmt)
        offset = 1 if kind == "jsonl" else 2
        more = f" and {len(empty) - 10} more" if len(empty) > 10 else ""
        shown = ", ".join(str(r + offset) for r in empty[:10]) + more
        raise PtcliError(f"{path}: column {column!r} is empty or blank on line(s) {shown}; fill or remove those rows")


def check_output_path(path: Path) -> None:
    if not path.parent.exists():
        raise PtcliError(f"{path}: the directory {path.parent} does not exist; create it first")
    if path.exists() and path.is_dir():
        raise PtcliError(f"{path}: is a directory; give a file name like predictions.csv")


class TableWriter:
    """Writes chunks of a table as CSV, TSV or JSONL to an open text stream."""

    def __init__(self, stream: io.TextIOBase, fmt: str) -> None:
        self.stream = stream
        self.fmt = fmt
        self.header = True

    def write(self, df: pd.DataFrame) -> None:
        if self.fmt == "jsonl":
            for record in df.to_dict(orient="records"):
                self.stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            df.to_csv(self.stream, sep="," if self.fmt == "csv" else "\t", index=False, header=self.header,
                      lineterminator="\n", float_format="%.6g")
        self.header = False


def read_labeled(path: Path, text_col: str, label_col: str, text_b_col: str | None = None,
                 fmt: str | None = None) -> pd.DataFrame:
    """A labeled table with its text, optional second text and label columns checked."""
    df = read_table(path, fmt)
    columns = {text_col: "--text-col", label_col: "--label-col"}
    if text_b_col:
        columns[text_b_col] = "--text-b-col"
    require_columns(df, path, columns)
    require_rows(df, path)
    require_text(df, path, text_col, fmt)
    if text_b_col:
        require_text(df, path, text_b_col, fmt)
    blank = df.index[df[label_col].str.strip() == ""].tolist()
    if blank:
        offset = 1 if table_format(path, fmt) == "jsonl" else 2
        raise PtcliError(f"{path}: column {label_col!r} is empty on line(s) "
                         f"{', '.join(str(r + offset) for r in blank[:10])}; every training row needs a label")
    df[label_col] = df[label_col].str.strip()
    return df
