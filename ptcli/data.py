"""Reading and writing tables (CSV, TSV, JSONL), with errors that say which file, line and column to fix.

Every cell is read as a string: a label "NA" stays "NA", an id "007" stays "007", and predict writes the input
columns back exactly as they came. CSV and TSV follow the csv module's `excel` and `excel-tab` dialects (what
pandas reads and writes by default): fields holding the delimiter, a quote, CR or LF are quoted, quotes inside
are doubled. Whatever ptcli writes, ptcli and `pd.read_csv` read back cell for cell. Large inputs are read in
chunks so predict's memory stays flat; pipes and devices are read exactly once, into a private temporary copy.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import json
import os
import re
import select
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from ptcli.errors import PtcliError, UsageError

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
DIALECTS = {"csv": "excel", "tsv": "excel-tab"}
TABLE_FILE = "a .csv, .tsv, .jsonl or .parquet file"
PIPE_TIMEOUT_ENV = "PTCLI_PIPE_TIMEOUT"
PIPE_TIMEOUT_S = 30.0
MAX_FIELD = 1 << 27  # characters; the csv module's default (131072) would refuse long documents pandas accepted
BLOCK = 1 << 20
# Cells may not hold NUL (text files don't; a NUL usually means UTF-16 or a binary file) or an unpaired surrogate
# (JSON's "\ud800" escape; UTF-8 cannot encode it).
UNWRITABLE = re.compile("[\x00\ud800-\udfff]")


def table_format(path: Path, override: str | None = None) -> str:
    if override:
        if override not in ("csv", "tsv", "jsonl", "parquet"):
            raise UsageError(f"--format {override!r}: choose csv, tsv, jsonl or parquet")
        return override
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise PtcliError(f"{path}: unknown file type {path.suffix or '(no suffix)'!r}; use .csv, .tsv, .jsonl or "
                         ".parquet, or pass --format")
    return fmt


# --- opening files: one-line errors, UTF-8 checks, pipes read once ---------------------------------------------


class ByteCheck:
    """Checks a byte stream block by block: UTF-8 only, no NUL; notes whether anything but blanks came by."""

    def __init__(self, name: str | Path) -> None:
        self.name = name
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.offset = 0
        self.lines = 1
        self.has_content = False

    def feed(self, block: bytes) -> None:
        nul = block.find(b"\0")
        self._decode(block if nul < 0 else block[:nul])
        if nul >= 0:
            raise self._error(block, nul, "is a NUL byte; the file looks binary or UTF-16, re-save it as UTF-8 text")
        self.offset += len(block)
        self.lines += block.count(b"\n")

    def finish(self) -> None:
        try:
            self.decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise PtcliError(f"{self.name}: the file ends in the middle of a UTF-8 character (byte offset "
                             f"{self.offset}); re-save the file as UTF-8") from None

    def _decode(self, data: bytes) -> None:
        try:
            text = self.decoder.decode(data)
        except UnicodeDecodeError as e:
            what = f"is not UTF-8 (0x{data[e.start]:02x}); re-save the file as UTF-8"
            raise self._error(data, e.start, what) from None
        self.has_content = self.has_content or bool(text.strip(" \t\r\n\ufeff"))

    def _error(self, block: bytes, at: int, what: str) -> PtcliError:
        line = self.lines + block[:at].count(b"\n")
        return PtcliError(f"{self.name}: line {line}: byte offset {self.offset + at} {what}")


def _stat(path: Path, expected: str) -> os.stat_result:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise PtcliError(f"{path}: no such file; expected {expected}") from None
    except OSError as e:
        raise os_error(path, e) from None
    if stat.S_ISDIR(st.st_mode):
        raise PtcliError(f"{path}: is a directory, expected {expected}")
    return st


def os_error(path: str | Path, e: OSError) -> PtcliError:
    """An OSError from opening or reading `path`, as one line."""
    if isinstance(e, FileNotFoundError):
        return PtcliError(f"{path}: no such file")
    if isinstance(e, IsADirectoryError):
        return PtcliError(f"{path}: is a directory, expected a file")
    if isinstance(e, PermissionError):
        return PtcliError(f"{path}: permission denied; make the file readable (chmod +r) or copy it")
    return PtcliError(f"{path}: cannot read it ({e.strerror or e})")


def pipe_timeout() -> float:
    raw = os.environ.get(PIPE_TIMEOUT_ENV, "")
    if not raw:
        return PIPE_TIMEOUT_S
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:  # also catches NaN
        raise UsageError(f"{PIPE_TIMEOUT_ENV}={raw!r}: expected a positive number of seconds, e.g. 30")
    return seconds


def _read_stream(path: Path, check: ByteCheck, out: io.BufferedIOBase | None) -> None:
    """Read a pipe or device once, `out` receiving the bytes. Waits a bounded time for a writer to show up."""
    try:
        # Non-blocking, so that opening a FIFO nobody writes to returns at once and the wait below can time out.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise os_error(path, e) from None
    try:
        timeout = pipe_timeout()
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            raise PtcliError(f"{path}: nothing is writing to it (no data within {timeout:g} s); start the program "
                             f"that feeds it, or set {PIPE_TIMEOUT_ENV} to wait longer")
        os.set_blocking(fd, True)  # a writer is there: from now on wait for it like any reader would
        while block := _read_block(fd, path):
            check.feed(block)
            if out is not None:
                out.write(block)
    finally:
        os.close(fd)


def _read_block(fd: int, path: Path) -> bytes:
    try:
        return os.read(fd, BLOCK)
    except OSError as e:
        raise os_error(path, e) from None


def _check_regular(path: Path, check: ByteCheck) -> None:
    try:
        with path.open("rb") as f:
            while block := f.read(BLOCK):
                check.feed(block)
    except OSError as e:
        raise os_error(path, e) from None


@contextlib.contextmanager
def checked_input(path: Path, expected: str = TABLE_FILE) -> Iterator[Path]:
    """The path to parse: `path` itself when it is a regular file, else a private copy of what a pipe or device
    delivered (read once, removed on exit). Either way it is UTF-8, has no NUL and is not blank."""
    regular = stat.S_ISREG(_stat(path, expected).st_mode)
    check = ByteCheck(path)
    tmpdir = None
    try:
        if regular:
            _check_regular(path, check)
            local = path
        else:
            tmpdir = _private_dir(path)
            local = _spool(path, check, Path(tmpdir) / "input")
        check.finish()
        if not check.has_content:
            raise PtcliError(f"{path}: the file is empty; it needs a header row and at least one data row")
        yield local
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)


def _private_dir(path: Path) -> str:
    try:
        return tempfile.mkdtemp(prefix="ptcli-")  # readable by this user only
    except OSError as e:
        raise _copy_error(path, tempfile.gettempdir(), e) from None


def _spool(path: Path, check: ByteCheck, local: Path) -> Path:
    try:
        with local.open("wb") as out:
            _read_stream(path, check, out)  # its read errors are PtcliErrors: an OSError here is the copy's
    except OSError as e:
        raise _copy_error(path, local.parent, e) from None
    return local


def _copy_error(path: Path, where: str | Path, e: OSError) -> PtcliError:
    return PtcliError(f"{path}: cannot keep a temporary copy of it in {where} ({e.strerror or e}); free space there "
                      "or set TMPDIR to another directory")


def read_text(path: str | Path, expected: str) -> str:
    """A small UTF-8 text file (template, verbalizer), with one-line errors; pipes work, read once."""
    p = Path(path)
    check = ByteCheck(p)
    if stat.S_ISREG(_stat(p, expected).st_mode):
        try:
            data = p.read_bytes()
        except OSError as e:
            raise os_error(p, e) from None
        check.feed(data)
    else:
        buf = io.BytesIO()
        _read_stream(p, check, buf)
        data = buf.getvalue()
    check.finish()
    return data.decode("utf-8-sig")


# --- reading tables ---------------------------------------------------------------------------------------------


def iter_table(path: Path, fmt: str | None = None, chunk_rows: int = 4096) -> Iterator[pd.DataFrame]:
    """Yield the table in chunks of string columns; the index holds 0-based data-row numbers.

    A CSV/TSV with a header and no rows yields one empty frame that still has the columns.
    """
    _stat(path, TABLE_FILE)  # a missing file is reported before an unknown suffix
    kind = table_format(path, fmt)
    if kind == "parquet":  # binary: no UTF-8 check, and it needs a seekable file
        from ptcli.parquet import iter_parquet

        yield from iter_parquet(path, chunk_rows)
        return
    with checked_input(path) as local:
        if kind == "jsonl":
            yield from _iter_jsonl(local, path, chunk_rows)
        else:
            yield from _iter_delimited(local, path, kind, chunk_rows)


def _frame(rows: list[list[str]], columns: list[str], start: int) -> pd.DataFrame:
    # Column by column: pandas turns a list of rows into columns several times slower.
    data = [list(col) for col in zip(*rows, strict=True)] if rows else [[] for _ in columns]
    return pd.DataFrame(dict(zip(columns, data, strict=True)), index=range(start, start + len(rows)), dtype=str)


def _iter_delimited(local: Path, name: Path, kind: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    csv.field_size_limit(MAX_FIELD)  # process-wide; the default (131072) would refuse long documents
    with local.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, dialect=DIALECTS[kind], strict=True)
        header, _ = _next_record(reader, name, kind)
        if header is None:
            raise PtcliError(f"{name}: the file is empty; it needs a header row and at least one data row")
        check_header(header, name, kind)
        rows: list[list[str]] = []
        start = 0
        while True:
            row, line = _next_record(reader, name, kind)
            if row is None:
                break
            if len(row) != len(header):
                raise _width_error(name, line, len(row), len(header), kind)
            rows.append(row)
            if len(rows) == chunk_rows:
                yield _frame(rows, header, start)
                start += len(rows)
                rows = []
    if rows or start == 0:
        yield _frame(rows, header, start)


def _next_record(reader: Any, name: Path, kind: str) -> tuple[list[str] | None, int]:
    """The next non-blank record and the line it starts on; (None, line) at the end of the file."""
    while True:
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return None, line
        except csv.Error as e:
            raise _csv_error(name, line, kind, str(e)) from None
        if row:
            return row, line


def _csv_error(name: Path, line: int, kind: str, detail: str) -> PtcliError:
    where = f"{name}: line {line}"
    if "end of data" in detail:
        return PtcliError(f"{where}: a quoted field opened here never closes (the file ends inside it); close the "
                          'quote, and write a quote inside a quoted field as ""')
    if "expected after" in detail:
        return PtcliError(f'{where}: text follows a closing quote; quote the whole field and write a quote inside '
                          'it as "", e.g. "he said ""hi"""')
    if "field limit" in detail:
        return PtcliError(f"{where}: a field is longer than {MAX_FIELD} characters; is a quote left open here?")
    return PtcliError(f"{where}: cannot parse as {kind.upper()} ({detail}); check the quoting, or pass --format")


def _width_error(name: Path, line: int, got: int, want: int, kind: str) -> PtcliError:
    sep = "','" if kind == "csv" else "a tab"
    fix = f"quote fields that contain {sep}" if got > want else f"every row needs all {want} fields"
    return PtcliError(f"{name}: line {line}: {got} field(s), but the header has {want}; {fix}")


def check_header(names: list[str], name: str | Path, kind: str) -> None:
    """Refuse blank and repeated column names: pandas would rename them (`Unnamed: 2`, `label.1`) and one of two
    `label` columns would be used silently."""
    for i, col in enumerate(names, start=1):
        if not col.strip():
            raise PtcliError(f"{name}: column {i} of the header has no name; name it, or remove the extra "
                             f"{'delimiter' if kind != 'jsonl' else 'key'}")
        if bad := UNWRITABLE.search(col):
            raise PtcliError(f"{name}: column {i} of the header, {col!r}, holds {_describe(bad.group())}; rename it")
    seen: dict[str, list[int]] = {}
    for i, col in enumerate(names, start=1):
        seen.setdefault(col, []).append(i)
    repeated = {col: at for col, at in seen.items() if len(at) > 1}
    if repeated:
        shown = "; ".join(f"{col!r} (columns {', '.join(map(str, at))})" for col, at in repeated.items())
        raise PtcliError(f"{name}: the header repeats column name(s) {shown}; rename or drop the copies")


class RepeatedKey(Exception):
    """A JSON object names the same key twice."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise RepeatedKey(key)
        obj[key] = value
    return obj


def load_json(text: str) -> Any:
    """json.loads that refuses repeated keys (json.loads keeps the last one silently): raises RepeatedKey."""
    return json.loads(text, object_pairs_hook=_unique_keys)


JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "true/false", int: "a number",
              float: "a number", type(None): "null"}


def _json_record(line: str, name: Path, lineno: int) -> dict[str, str]:
    where = f"{name}: line {lineno}"
    try:
        obj = load_json(line)
        if not isinstance(obj, dict):
            raise PtcliError(f"{where}: expected a JSON object per line, like {{\"text\": \"…\", \"label\": \"…\"}}, "
                             f"got {JSON_TYPES.get(type(obj), type(obj).__name__)}")
        record = {k: _cell(v) for k, v in obj.items()}
    except json.JSONDecodeError as e:
        raise PtcliError(f"{where}, column {e.colno}: invalid JSON ({e.msg})") from None
    except RepeatedKey as e:
        raise PtcliError(f"{where}: key {e.key!r} appears twice in one object; keep one") from None
    except RecursionError:
        raise PtcliError(f"{where}: JSON nested too deeply to read; flatten it") from None
    except ValueError as e:  # e.g. an integer with more digits than Python converts
        raise PtcliError(f"{where}: cannot read this JSON ({str(e).split(':')[0]}); quote the value") from None
    for key, value in record.items():
        if not key.strip():
            raise PtcliError(f"{where}: a key with no name ({key!r}); name it or drop it")
        for text in (key, value):
            if bad := UNWRITABLE.search(text):
                raise PtcliError(f"{where}: key {key!r} holds {_describe(bad.group())}, which no table can hold; "
                                 "remove it")
    return record


def _describe(char: str) -> str:
    return "a NUL character (\\u0000)" if char == "\0" else f"an unpaired surrogate (\\u{ord(char):04x})"


def _iter_jsonl(local: Path, name: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """Lines end at LF only (a CR is JSON whitespace). The first object's keys are the columns: a later line may
    leave one out (it reads as "") but may not add one, so every chunk has the same columns."""
    columns: list[str] | None = None
    rows: list[list[str]] = []
    start = 0
    with local.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.decode("utf-8").rstrip("\r\n")  # checked by checked_input; JSON errors read better unended
            line = line.removeprefix("\ufeff")  # never valid JSON; files joined with `cat` carry one per file
            if not line.strip():
                continue
            record = _json_record(line, name, lineno)
            if columns is None:
                columns = list(record)
            elif extra := [k for k in record if k not in columns]:
                raise PtcliError(f"{name}: line {lineno}: key {extra[0]!r} is not in the first object's keys "
                                 f"({', '.join(map(repr, columns))}); add it to the first line (null for none)")
            rows.append([record.get(c, "") for c in columns])
            if len(rows) == chunk_rows:
                yield _frame(rows, columns, start)
                start += len(rows)
                rows = []
    if rows or start == 0:
        yield _frame(rows, columns or [], start)


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
        offset = 2 if kind in DIALECTS else 1  # CSV/TSV: line 1 is the header
        more = f" and {len(empty) - 10} more" if len(empty) > 10 else ""
        shown = ", ".join(str(r + offset) for r in empty[:10]) + more
        raise PtcliError(f"{path}: column {column!r} is empty or blank on line(s) {shown}; fill or remove those rows")


# --- writing tables ---------------------------------------------------------------------------------------------


def table_writer(stream: Any, fmt: str, name: str | Path | None = None) -> Any:
    """The writer for `fmt`: TableWriter on a text stream, or for parquet a ParquetTableWriter on a binary one."""
    if fmt == "parquet":
        from ptcli.parquet import ParquetTableWriter

        return ParquetTableWriter(stream, name)
    return TableWriter(stream, fmt, name)


class TableWriter:
    """Writes chunks of a table as CSV, TSV or JSONL to an open text stream (opened with newline="").

    CSV/TSV quoting is written here rather than by csv.writer: with a "\\n" line terminator csv.writer leaves a
    lone CR unquoted, and ptcli, pandas and the csv module all read that as a line break.
    """

    def __init__(self, stream: io.TextIOBase, fmt: str, name: str | Path | None = None) -> None:
        self.stream = stream
        self.fmt = fmt
        name = name if name is not None else getattr(stream, "name", None)  # os.fdopen streams are named by an int
        self.name = str(name) if isinstance(name, str | Path) else "the output"
        self.header = True
        self.rows = 0
        self.sep = "," if fmt == "csv" else "\t"
        self.needs_quote = re.compile(f'[{re.escape(self.sep)}"\r\n]')

    def write(self, df: pd.DataFrame) -> None:
        if self.header:
            names = [str(c) for c in df.columns]
            check_header(names, self.name, self.fmt)
            if names and names[0].startswith("\ufeff") and self.fmt != "jsonl":
                raise PtcliError(f"{self.name}: column name {names[0]!r} starts with a byte-order mark, which readers "
                                 "drop at the start of a file; rename the column")
        self._check_cells(df)
        if self.fmt == "jsonl":
            for record in df.to_dict(orient="records"):
                self.stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            self._write_delimited(df)
        self.header = False
        self.rows += len(df)

    def close(self) -> None:
        """Nothing to finish for text formats (the Parquet writer writes its footer here); the stream stays open."""
        self.stream.flush()

    def _check_cells(self, df: pd.DataFrame) -> None:
        for col in df.columns:
            for pos, value in enumerate(df[col].tolist()):
                if isinstance(value, str) and (bad := UNWRITABLE.search(value)):
                    raise PtcliError(f"{self.name}: row {self.rows + pos + 1}, column {col!r}: the cell holds "
                                     f"{_describe(bad.group())}, which cannot be written; remove it from the input")

    def _write_delimited(self, df: pd.DataFrame) -> None:
        lines = []
        if self.header:
            lines.append(self._line([str(c) for c in df.columns]))
        columns = [_as_text(df[c]) for c in df.columns]
        lines.extend(self._line(list(cells)) for cells in zip(*columns, strict=True))
        self.stream.write("".join(lines))

    def _line(self, cells: list[str]) -> str:
        if len(cells) == 1 and not cells[0].strip():
            return self._quote(cells[0]) + "\n"  # unquoted, readers would skip it as a blank line
        return self.sep.join(self._quote(c) if self.needs_quote.search(c) else c for c in cells) + "\n"

    @staticmethod
    def _quote(cell: str) -> str:
        return '"' + cell.replace('"', '""') + '"'


def _as_text(column: pd.Series) -> list[str]:
    """Cells as CSV text, the way pandas' to_csv wrote them: floats with 6 significant digits, missing as ""."""
    if pd.api.types.is_float_dtype(column.dtype):
        return ["" if pd.isna(v) else f"{v:.6g}" for v in column.tolist()]
    return ["" if _missing(v) else str(v) for v in column.tolist()]


def _missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


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
        offset = 2 if table_format(path, fmt) in DIALECTS else 1
        raise PtcliError(f"{path}: column {label_col!r} is empty on line(s) "
                         f"{', '.join(str(r + offset) for r in blank[:10])}; every training row needs a label")
    df[label_col] = df[label_col].str.strip()
    return df
