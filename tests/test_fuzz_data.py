"""Property tests for the parsers users feed by hand: templates, and tables in CSV, TSV and JSONL.

The contract under test: for any input, ptcli either gives a well-formed result or raises PtcliError (one line, the
CLI's clean exit) — never another exception; and any table ptcli writes reads back identically, or the writer
refuses it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptcli.data import UNWRITABLE, TableWriter, iter_table
from ptcli.errors import PtcliError
from ptcli.template import Template, render

# A few seconds in the normal suite; PTCLI_FUZZ_EXAMPLES=5000 for a deeper hunt.
EXAMPLES = int(os.environ.get("PTCLI_FUZZ_EXAMPLES", "150"))
FAST = settings(max_examples=EXAMPLES, deadline=None)

# --- templates ----------------------------------------------------------------------------------------------------

TEMPLATE_PIECES = ["[P]", "[MASK]", "<text>", "<text_b>", "[X]", "[p]", "[", "]", "<", ">", "<text", "<text_c>",
                   "[MASK", "P]", "[[P]", "\n", "\r", "\r\n", " ", "\t", "总之很", "问：", "[ ]", "[长标签]"]
template_sources = st.lists(st.one_of(st.sampled_from(TEMPLATE_PIECES), st.text(max_size=4)), max_size=12).map("".join)


@FAST
@given(template_sources)
def test_template_parse_reassembles_or_refuses(source):
    try:
        t = Template.parse(source, "t.txt")
    except PtcliError as e:
        assert e.message.startswith("t.txt: ") and "\n" not in e.message
        return
    assert t.source == source.rstrip("\r\n")
    assert render(t.segments) == t.source  # literal texts and tags, in order, give back the template
    kinds = [s.kind for s in t.segments]
    assert kinds.count("text") == 1 and kinds.count("slot") == 1 and kinds.count("text_b") <= 1
    assert t.n_prompts == t.source.count("[P]")
    assert [s.size for s in t.segments if s.kind == "prompt"] == list(range(t.n_prompts))
    assert all(s.text for s in t.segments if s.kind == "literal")
    plain = t.without_prompts()
    assert render(plain.segments) == plain.source and plain.n_prompts == 0


# --- readers: any bytes --------------------------------------------------------------------------------------------

BYTE_PIECES = [b'"', b'""', b",", b"\t", b"\n", b"\r", b"\r\n", b" ", b"{", b"}", b"[", b"]", b":", b"\\", b"\\u",
               b"\\ud800", b"\\u0000", b'"text"', b'"label"', b"null", b"1e999", b"-0", b"\xef\xbb\xbf", b"\x00",
               b"\xff", b"\xe5\xa5", "好".encode(), b"text,label\n", b"text\tlabel\n", b'{"text": "', b'"}\n']
file_bytes = st.one_of(
    st.binary(max_size=200),
    st.lists(st.one_of(st.sampled_from(BYTE_PIECES), st.binary(max_size=3)), max_size=30).map(b"".join),
)


@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def assert_string_frames(frames: list[pd.DataFrame]) -> None:
    assert frames
    for df in frames:
        assert all(isinstance(c, str) for c in df.columns)
        for col in df.columns:
            assert all(isinstance(v, str) for v in df[col].tolist())


@FAST
@given(data=file_bytes, suffix=st.sampled_from([".csv", ".tsv", ".jsonl"]), chunk=st.integers(1, 3))
def test_readers_return_string_frames_or_ptcli_error(scratch, data, suffix, chunk):
    path = scratch / f"in{suffix}"
    path.write_bytes(data)
    try:
        frames = list(iter_table(path, chunk_rows=chunk))
    except PtcliError as e:
        assert e.message.startswith(str(path)) and "\n" not in e.message
        return
    assert_string_frames(frames)
    widths = {tuple(df.columns) for df in frames}
    assert len(widths) == 1  # every chunk has the same columns
    index = pd.concat(frames).index.tolist()
    assert index == list(range(len(index)))


# --- round trip: TableWriter → iter_table (and pandas) ---------------------------------------------------------------

# Cells come from the whole of Unicode, surrogates included, plus the characters formats care about. NUL and unpaired
# surrogates cannot be stored (a UTF-8 file cannot hold a surrogate; ptcli refuses NUL as a sign of binary/UTF-16
# input), and a first column name starting with U+FEFF would be eaten as a byte-order mark: the writer must refuse
# exactly those, and everything else must come back unchanged.
SPECIAL = ['"', ",", "\t", "\n", "\r", " ", "\ufeff", "\x00", "\ud800", "\udfff", "中", "é", "\u2028", "\x85", "\\"]
chars = st.one_of(st.sampled_from(SPECIAL), st.characters(codec=None, exclude_categories=()))
cells = st.one_of(st.sampled_from(["", " ", '"', "NA", "007", "null", "\r\n"]), st.text(alphabet=chars, max_size=8))


@st.composite
def tables(draw: st.DrawFn) -> pd.DataFrame:
    names = draw(st.lists(st.text(alphabet=chars, min_size=1, max_size=6).filter(str.strip),
                          min_size=1, max_size=4, unique=True))
    rows = draw(st.lists(st.lists(cells, min_size=len(names), max_size=len(names)), max_size=6))
    # object dtype: with pyarrow installed, pandas 3 stores str in Arrow, which rejects surrogates
    return pd.DataFrame(rows, columns=pd.Index(names, dtype=object), dtype=object)


def unwritable(df: pd.DataFrame, fmt: str) -> bool:
    texts = [*map(str, df.columns), *(v for col in df.columns for v in df[col])]
    return any(UNWRITABLE.search(t) for t in texts) or (fmt != "jsonl" and str(df.columns[0]).startswith("\ufeff"))


@FAST
@given(df=tables(), fmt=st.sampled_from(["csv", "tsv", "jsonl"]), chunk=st.integers(1, 3))
def test_written_tables_read_back_identically(scratch, df, fmt, chunk):
    path = scratch / f"out.{fmt}"
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = TableWriter(f, fmt, name=path)
        try:
            writer.write(df.iloc[:2])  # two writes: the header once, rows carried across
            writer.write(df.iloc[2:])
        except PtcliError as e:
            assert unwritable(df, fmt), e.message
            return
    assert not unwritable(df, fmt)
    if fmt == "jsonl" and df.empty:
        with pytest.raises(PtcliError, match="empty"):  # no rows, no lines: nothing to read
            list(iter_table(path))
        return
    back = pd.concat(list(iter_table(path, chunk_rows=chunk)))
    assert list(back.columns) == list(df.columns)
    assert back.values.tolist() == df.values.tolist()
    assert back.index.tolist() == list(range(len(df)))
    if fmt != "jsonl":
        theirs = pd.read_csv(path, sep="," if fmt == "csv" else "\t", dtype=str, keep_default_na=False)
        assert list(theirs.columns) == list(df.columns)
        assert theirs.values.tolist() == df.values.tolist()
