"""Parquet tables in and out (needs the `parquet` extra: pyarrow), streamed by record batches.

Reading follows ptcli's string-cell contract: every cell becomes a string the way the JSONL reader turns JSON values
into strings (null → "", numbers, booleans, lists and structs as JSON text), and other Parquet types (dates,
timestamps, decimals) as their usual text. Writing keeps the input columns as strings and writes float columns
(predict's `confidence` and `prob_*`) as float64, one row group per chunk, so memory stays flat both ways.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pandas as pd

from ptcli.data import _cell, check_header, os_error
from ptcli.errors import PtcliError

INSTALL = "pip install 'ptcli[parquet]'"


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise PtcliError(f"Parquet files need pyarrow, which is not installed; install it with {INSTALL}") from None
    return pa, pq


# --- reading ----------------------------------------------------------------------------------------------------


def iter_parquet(path: Path, chunk_rows: int = 4096) -> Iterator[pd.DataFrame]:
    """Yield the table in chunks of at most `chunk_rows` rows of string columns; the index holds 0-based row numbers.
    A file with a schema and no rows yields one empty frame that still has the columns."""
    pa, pq = _pyarrow()
    if not stat.S_ISREG(path.stat().st_mode):
        raise PtcliError(f"{path}: Parquet keeps its index at the end of the file, so it cannot be read from a pipe; "
                         "save it to a file first")
    try:
        path.open("rb").close()
    except OSError as e:
        raise os_error(path, e) from None
    try:
        with pq.ParquetFile(path) as pf:
            columns = _columns(pf.schema_arrow, path)
            start = 0
            for batch in pf.iter_batches(batch_size=chunk_rows, columns=columns, use_pandas_metadata=False):
                yield _frame(batch, columns, start, path)
                start += batch.num_rows
            if start == 0:
                yield pd.DataFrame({c: pd.Series([], dtype=str) for c in columns})
    except (pa.ArrowException, OSError) as e:
        raise PtcliError(f"{path}: not a readable Parquet file ({_reason(e)}); check that it was written completely, "
                         "or pass --format if it is another format") from None


def _columns(schema: Any, path: Path) -> list[str]:
    """The data columns: pandas' stored index (`__index_level_0__`) is not one."""
    meta = schema.pandas_metadata or {}
    index = {c for c in meta.get("index_columns", []) if isinstance(c, str)}
    names = [name for name in schema.names if name not in index]
    for i, name in enumerate(names, start=1):
        if not name.strip():
            raise PtcliError(f"{path}: column {i} has no name; name it")
    check_header(names, path, "parquet")
    return names


def _frame(batch: Any, columns: list[str], start: int, path: Path) -> pd.DataFrame:
    data = {name: _strings(batch.column(i), name, start, path) for i, name in enumerate(columns)}
    return pd.DataFrame(data, index=range(start, start + batch.num_rows), dtype=str)


def _strings(column: Any, name: str, start: int, path: Path) -> list[str]:
    values = column.to_pylist()
    cells = [_text(v, name, start + i, path) for i, v in enumerate(values)]
    for i, cell in enumerate(cells):
        if "\0" in cell:
            raise PtcliError(f"{path}: row {start + i + 1}, column {name!r} holds a NUL character (\\u0000), which no "
                             "table can hold; remove it")
    return cells


def _text(value: object, name: str, row: int, path: Path) -> str:
    """One cell as a string: JSON values exactly as the JSONL reader writes them, other types as their text."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise PtcliError(f"{path}: row {row + 1}, column {name!r} holds binary data that is not UTF-8 text; "
                             "convert the column to strings") from None
    if value is None or isinstance(value, str | int | float | list | dict):
        try:
            return _cell(value)
        except TypeError:  # a list or struct holding dates, decimals, bytes…
            return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _reason(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


# --- writing ----------------------------------------------------------------------------------------------------


class ParquetTableWriter:
    """TableWriter's interface (`write`, `close`, `header`, `rows`) for Parquet on a binary stream: float columns
    as float64, every other column as strings, each `write` one or more row groups. `close` writes the footer."""

    def __init__(self, stream: IO[bytes], name: str | Path | None = None) -> None:
        self.stream = stream
        self.name = str(name) if name is not None else "the output"
        self.header = True
        self.rows = 0
        self._writer: Any = None
        self._schema: Any = None

    def write(self, df: pd.DataFrame) -> None:
        pa, pq = _pyarrow()
        if self._writer is None:
            names = [str(c) for c in df.columns]
            check_header(names, self.name, "parquet")
            self._schema = pa.schema([(str(c), _arrow_type(pa, df[c])) for c in df.columns])
            self._writer = pq.ParquetWriter(self.stream, self._schema)
        arrays = [pa.array(_values(df[c]), type=field.type) for c, field in zip(df.columns, self._schema, strict=True)]
        self._writer.write_table(pa.Table.from_arrays(arrays, schema=self._schema))
        self.header = False
        self.rows += len(df)

    def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()


def _arrow_type(pa: Any, column: pd.Series) -> Any:
    return pa.float64() if pd.api.types.is_float_dtype(column.dtype) else pa.string()


def _values(column: pd.Series) -> list[Any]:
    if pd.api.types.is_float_dtype(column.dtype):
        return column.astype("float64").tolist()
    return ["" if v is None or (isinstance(v, float) and v != v) else str(v) for v in column.tolist()]
