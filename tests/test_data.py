import json
import os
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from ptcli.data import TableWriter, iter_table, read_labeled, read_table
from ptcli.errors import PtcliError, UsageError


def write(path, text, encoding="utf-8"):
    path.write_text(text, encoding=encoding)
    return path


def test_csv_tsv_jsonl_read_the_same(tmp_path):
    a = read_table(write(tmp_path / "a.csv", "text,label\n好,pos\n差,NA\n"))
    b = read_table(write(tmp_path / "a.tsv", "text\tlabel\n好\tpos\n差\tNA\n"))
    c = read_table(write(tmp_path / "a.jsonl", '{"text": "好", "label": "pos"}\n{"text": "差", "label": "NA"}\n'))
    for df in (a, b, c):
        assert df["label"].tolist() == ["pos", "NA"]  # "NA" stays a string


def test_values_are_strings(tmp_path):
    df = read_table(write(tmp_path / "a.csv", "id,text,label\n007,x,1\n"))
    assert df["id"].tolist() == ["007"] and df["label"].tolist() == ["1"]


def test_bom_just_works(tmp_path):
    df = read_table(write(tmp_path / "a.csv", "text,label\n好,pos\n", encoding="utf-8-sig"))
    assert list(df.columns) == ["text", "label"]


def test_format_override(tmp_path):
    df = read_table(write(tmp_path / "a.txt", "text\tlabel\nx\ty\n"), fmt="tsv")
    assert df["label"].tolist() == ["y"]
    with pytest.raises(UsageError):
        read_table(tmp_path / "a.txt", fmt="xlsx")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.xlsx", "x", "unknown file type"),
        ("a.csv", "", "empty"),
        ("a.csv", "\n\n", "empty"),
        ("a.jsonl", '{"text": "x"}\n[1, 2]\n', "line 2"),
        ("a.jsonl", '{"text": "x"}\n{"text": \n', "line 2, column"),
    ],
)
def test_bad_files(tmp_path, name, content, message):
    with pytest.raises(PtcliError, match=message):
        read_table(write(tmp_path / name, content))


def test_missing_file(tmp_path):
    with pytest.raises(PtcliError, match="no such file"):
        read_table(tmp_path / "nope.csv")


def test_non_utf8_names_offset_and_line(tmp_path):
    p = tmp_path / "a.csv"
    head = "text,label\n好,pos\n".encode()
    p.write_bytes(head + b"caf\xe9,neg\n")
    with pytest.raises(PtcliError) as e:
        read_table(p)
    assert "line 3" in e.value.message and f"offset {len(head) + 3}" in e.value.message


def test_header_only_and_missing_columns(tmp_path):
    with pytest.raises(PtcliError, match="no data rows"):
        read_labeled(write(tmp_path / "h.csv", "text,label\n"), "text", "label")
    with pytest.raises(PtcliError) as e:
        read_labeled(write(tmp_path / "m.csv", "sentence,label\nx,y\n"), "text", "label")
    assert "'sentence'" in e.value.message and "--text-col" in e.value.message


def test_blank_text_rows_are_named(tmp_path):
    with pytest.raises(PtcliError, match=r"line\(s\) 3, 4"):
        read_labeled(write(tmp_path / "b.csv", 'text,label\nx,a\n"  ",b\n,a\n'), "text", "label")
    with pytest.raises(PtcliError, match=r"line\(s\) 2"):
        read_labeled(write(tmp_path / "b.jsonl", '{"text": "x", "label": "a"}\n{"text": "", "label": "a"}\n'),
                     "text", "label")


def test_chunks_keep_order_and_index(tmp_path):
    p = write(tmp_path / "big.csv", "text\n" + "".join(f"r{i}\n" for i in range(10)))
    chunks = list(iter_table(p, chunk_rows=4))
    assert [len(c) for c in chunks] == [4, 4, 2]
    assert pd.concat(chunks)["text"].tolist() == [f"r{i}" for i in range(10)]


def test_writer_formats(tmp_path):
    import io

    df = pd.DataFrame({"text": ["a,b", "c"], "p": [0.5, 0.25]})
    for fmt in ("csv", "tsv", "jsonl"):
        buf = io.StringIO()
        w = TableWriter(buf, fmt)
        w.write(df.iloc[:1])
        w.write(df.iloc[1:])
        lines = buf.getvalue().splitlines()
        if fmt == "jsonl":
            assert [json.loads(x)["text"] for x in lines] == ["a,b", "c"]
        else:
            assert len(lines) == 3  # one header, two rows


def test_output_path_checks(tmp_path):
    from ptcli.outputs import check_output_file

    with pytest.raises(PtcliError, match="does not exist"):
        check_output_file(tmp_path / "missing" / "out.csv")
    with pytest.raises(PtcliError, match="is a directory"):
        check_output_file(tmp_path)


# --- round trips: whatever ptcli writes, ptcli and pandas read back cell for cell -------------------------------

HOSTILE_CELLS = ['他说"很棒"', '"', '""', "a\tb", "a,b", "line\nbreak", "cr\ronly", "crlf\r\nend", " padded ", "",
                 "   ", "NA", "null", "007", "1e5", "\ufeffmid-bom", "\\", "'", "\u2028sep", "😀"]


def write_table(path, df, fmt):
    with path.open("w", encoding="utf-8", newline="") as f:
        TableWriter(f, fmt, name=path).write(df)
    return path


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_hostile_cells_round_trip(tmp_path, fmt):
    df = pd.DataFrame({"text": HOSTILE_CELLS, "label": list(reversed(HOSTILE_CELLS))})
    path = write_table(tmp_path / f"t.{fmt}", df, fmt)
    back = pd.concat(list(iter_table(path, chunk_rows=3)))
    assert list(back.columns) == ["text", "label"]
    assert back.values.tolist() == df.values.tolist()
    assert back.index.tolist() == list(range(len(df)))
    if fmt != "jsonl":
        theirs = pd.read_csv(path, sep="," if fmt == "csv" else "\t", dtype=str, keep_default_na=False)
        assert theirs.values.tolist() == df.values.tolist()


def test_tsv_quotes_read_as_pandas_writes_them(tmp_path):
    path = tmp_path / "p.tsv"
    pd.DataFrame({"text": ['他说"很棒"', "a\tb"], "label": ["pos", "neg"]}).to_csv(path, sep="\t", index=False)
    assert read_table(path)["text"].tolist() == ['他说"很棒"', "a\tb"]


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_single_column_blank_cells_are_not_blank_lines(tmp_path, fmt):
    df = pd.DataFrame({"text": ["", "  ", "x", "\t"]})
    path = write_table(tmp_path / f"one.{fmt}", df, fmt)
    assert read_table(path)["text"].tolist() == ["", "  ", "x", "\t"]


def test_writer_formats_numbers_like_before():
    import io

    buf = io.StringIO()
    TableWriter(buf, "csv").write(pd.DataFrame({"p": [0.123456789, float("nan")], "n": [1, 2], "s": ["a", None]}))
    assert buf.getvalue() == "p,n,s\n0.123457,1,a\n,2,\n"


def test_writer_writes_a_header_for_an_empty_frame():
    import io

    buf = io.StringIO()
    TableWriter(buf, "tsv").write(pd.DataFrame({"text": [], "pred": []}))
    assert buf.getvalue() == "text\tpred\n"


@pytest.mark.parametrize(
    ("df", "message"),
    [
        (pd.DataFrame({"text": ["ok", "a\x00b"]}), r"row 2, column 'text'.*NUL"),
        (pd.DataFrame({"text": ["\ud800"]}, dtype=object), r"row 1, column 'text'.*surrogate"),
        (pd.DataFrame([["a", "b"]], columns=["x", "x"]), r"repeats column name\(s\) 'x' \(columns 1, 2\)"),
        (pd.DataFrame({"": ["a"]}), "column 1 of the header has no name"),
        (pd.DataFrame({"\ufeffid": ["a"]}), "byte-order mark"),
    ],
)
def test_writer_refuses_what_cannot_round_trip(tmp_path, df, message):
    with pytest.raises(PtcliError, match=message) as e:
        write_table(tmp_path / "out.csv", df, "csv")
    assert e.value.message.startswith(str(tmp_path / "out.csv"))


def test_writer_counts_rows_across_chunks():
    import io

    w = TableWriter(io.StringIO(), "jsonl", name="out.jsonl")
    w.write(pd.DataFrame({"t": ["a", "b"]}))
    with pytest.raises(PtcliError, match=r"out\.jsonl: row 4, column 't'"):
        w.write(pd.DataFrame({"t": ["c", "\x00"]}))


# --- headers and keys -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("d.csv", "note,text,note\na,b,c\n", r"repeats column name\(s\) 'note' \(columns 1, 3\)"),
        ("d.tsv", "label\ttext\tlabel\tlabel\na\tb\tc\td\n", r"'label' \(columns 1, 3, 4\)"),
        ("e.csv", "text,,label\na,b,c\n", "column 2 of the header has no name"),
        ("e.csv", "text,label,\na,b,\n", "column 3 of the header has no name"),
        ("e.tsv", "text\t \nx\ty\n", "column 2 of the header has no name"),
        ("d.jsonl", '{"text": "a"}\n{"label": "x", "label": "y"}\n', "line 2: key 'label' appears twice"),
        ("d.jsonl", '{"text": {"a": 1, "a": 2}}\n', "line 1: key 'a' appears twice"),
        ("e.jsonl", '{"text": "a", "": "b"}\n', "line 1: a key with no name"),
        ("x.jsonl", '{"text": "a"}\n\n{"text": "b", "label": "c"}\n', "line 3: key 'label' is not in the first"),
    ],
)
def test_header_names_must_be_named_and_distinct(tmp_path, name, content, message):
    with pytest.raises(PtcliError, match=message) as e:
        read_table(write(tmp_path / name, content))
    assert e.value.message.startswith(str(tmp_path / name))


def test_jsonl_missing_keys_read_as_empty_and_chunks_share_columns(tmp_path):
    p = write(tmp_path / "a.jsonl", '{"text": "a", "label": "x"}\n{"text": "b"}\n{"label": "y", "text": "c"}\n')
    chunks = list(iter_table(p, chunk_rows=1))
    assert all(list(c.columns) == ["text", "label"] for c in chunks)
    assert pd.concat(chunks).values.tolist() == [["a", "x"], ["b", ""], ["c", "y"]]


def test_jsonl_values_become_strings(tmp_path):
    p = write(tmp_path / "a.jsonl", '{"a": null, "b": 1.50, "c": true, "d": {"k": [1, "é"]}, "e": "007"}\r\n')
    assert read_table(p).iloc[0].tolist() == ["", "1.5", "true", '{"k": [1, "é"]}', "007"]


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_header_only_yields_one_empty_frame_with_columns(tmp_path, fmt):
    sep = "," if fmt == "csv" else "\t"
    chunks = list(iter_table(write(tmp_path / f"h.{fmt}", f"id{sep}text\n\n")))
    assert len(chunks) == 1 and len(chunks[0]) == 0 and list(chunks[0].columns) == ["id", "text"]


# --- hostile bytes: nothing but PtcliError, naming the file and the line -----------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.csv", b"text,label\nx,y\na,b,c\n", r"line 3: 3 field\(s\), but the header has 2; quote fields that"),
        ("a.tsv", b"text\tlabel\nx\n", r"line 2: 1 field\(s\), but the header has 2"),
        ("a.csv", b'text,label\nok,y\n"never closed,y\nx,y\n', "line 3: a quoted field opened here never closes"),
        ("a.tsv", b'text\tlabel\n"quoted" then text\ty\n', "line 2: text follows a closing quote"),
        ("a.csv", b"text,label\nx\x00y,z\n", "line 2: byte offset 12 is a NUL byte"),
        ("a.csv", "text,label\n".encode("utf-16-le"), "line 1: byte offset 1 is a NUL byte"),
        ("a.csv", b"text,label\n\xed\xa0\x80,y\n", "line 2: byte offset 11 is not UTF-8"),  # encoded surrogate
        ("a.csv", b"text,label\nx,\xe5\xa5", "ends in the middle of a UTF-8 character"),
        ("a.csv", b"\xef\xbb\xbf \r\n\t\n", "empty"),
        ("a.jsonl", b"\n  \n", "empty"),
        ("a.jsonl", b'{"text": "x"}\n42\n', "line 2: expected a JSON object per line.*got a number"),
        ("a.jsonl", b"[1, 2]\n", "got an array"),
        ("a.jsonl", b'"text"\n', "got a string"),
        ("a.jsonl", b"null\n", "got null"),
        ("a.jsonl", b"true\n", "got true/false"),
        ("a.jsonl", b'{"text": "x"}\n{"text": \n', "line 2, column 10: invalid JSON"),
        ("a.jsonl", b'{"text": "x"}\n{"text": "a\nb"}\n', "line 2, column 10: invalid JSON .Unterminated string"),
        ("a.jsonl", b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n", "line 1: JSON nested too deeply"),
        ("a.jsonl", b'{"a": ' + b"9" * 5000 + b"}\n", "line 1: cannot read this JSON"),
        ("a.jsonl", b'{"text": "ok"}\n{"text": "\\ud800 alone"}\n', r"line 2: key 'text' holds an unpaired surrogate"),
        ("a.jsonl", b'{"text": "\\u0000"}\n', r"line 1: key 'text' holds a NUL character"),
    ],
)
def test_hostile_bytes_are_one_line_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(PtcliError, match=message) as e:
        read_table(path)
    assert e.value.message.startswith(str(path)) and "\n" not in e.value.message


def test_tolerated_oddities(tmp_path):
    cases = {
        "cr.csv": (b"text,label\rx,y\r", ["x", "y"]),
        "crlf.tsv": (b"text\tlabel\r\nx\ty\r\n", ["x", "y"]),
        "bom.csv": ("text,label\nx\ufeffy,z\n".encode(), ["x\ufeffy", "z"]),  # a BOM mid-file is a character
        "pair.jsonl": (b'{"text": "\\ud83d\\ude00", "label": "\\u00e9"}\n', ["😀", "é"]),
        "quote.csv": (b'text,label\nsay "hi",y\n', ['say "hi"', "y"]),  # a quote inside an unquoted field
        "cr.jsonl": (b'{"text":\r"x", "label": "y"}\n', ["x", "y"]),  # CR is JSON whitespace, not a line break
        "cat.jsonl": ('\ufeff{"text": "x", "label": "y"}\n\ufeff{"text": "z"}\n'.encode(), ["x", "y"]),
    }
    for name, (content, row) in cases.items():
        (tmp_path / name).write_bytes(content)
        assert read_table(tmp_path / name).iloc[0].tolist() == row, name


def test_long_lines_and_fields(tmp_path):
    long = "长" * 300_000  # over the csv module's default field limit of 131072
    for name in ("l.csv", "l.jsonl"):
        content = f"text,label\n{long},y\n" if name.endswith("csv") else json.dumps({"text": long}) + "\n"
        assert read_table(write(tmp_path / name, content))["text"].tolist() == [long]


def test_field_limit_is_a_clean_error(tmp_path, monkeypatch):
    import ptcli.data

    monkeypatch.setattr(ptcli.data, "MAX_FIELD", 100)
    with pytest.raises(PtcliError, match="line 2: a field is longer than 100 characters"):
        read_table(write(tmp_path / "a.csv", "text\n" + "x" * 200 + "\n"))
    monkeypatch.undo()
    assert read_table(write(tmp_path / "a.csv", "text\n" + "x" * 200 + "\n"))["text"].str.len().tolist() == [200]


# --- paths, pipes and devices -------------------------------------------------------------------------------------


def test_directory_and_null_device(tmp_path):
    with pytest.raises(PtcliError, match="is a directory"):
        read_table(tmp_path, fmt="csv")
    with pytest.raises(PtcliError, match="/dev/null: the file is empty"):
        read_table(Path("/dev/null"), fmt="csv")


def test_permission_denied_is_one_line(tmp_path, monkeypatch):
    p = write(tmp_path / "a.csv", "text\nx\n")

    def deny(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", deny)
    with pytest.raises(PtcliError, match=r"a\.csv: permission denied"):
        read_table(p)


def feed_fifo(path, data, delay=0.05):
    def writer():
        time.sleep(delay)
        with open(path, "wb") as f:
            f.write(data)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """Spool copies land here, so a test can see that they are gone."""
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    return spool


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_fifo_is_read_once_and_the_copy_removed(tmp_path, private_tmp, fmt):
    fifo = tmp_path / f"in.{fmt}"
    os.mkfifo(fifo)
    if fmt == "csv":
        body = "text,label\n" + "".join(f"r{i},y\n" for i in range(50))
    else:
        body = "".join(json.dumps({"text": f"r{i}", "label": "y"}) + "\n" for i in range(50))
    thread = feed_fifo(fifo, body.encode())
    chunks = iter_table(fifo, chunk_rows=7)
    first = next(chunks)
    assert len(list(private_tmp.iterdir())) == 1  # the private copy exists while reading
    texts = pd.concat([first, *chunks])["text"].tolist()
    thread.join(5)
    assert texts == [f"r{i}" for i in range(50)]
    assert not list(private_tmp.iterdir())


def test_abandoned_reader_removes_its_copy(tmp_path, private_tmp):
    fifo = tmp_path / "in.csv"
    os.mkfifo(fifo)
    feed_fifo(fifo, b"text\na\nb\nc\n")
    chunks = iter_table(fifo, chunk_rows=1)
    next(chunks)
    chunks.close()  # what happens when predict stops early
    assert not list(private_tmp.iterdir())


def test_fifo_errors_name_the_fifo_not_the_copy(tmp_path, private_tmp):
    fifo = tmp_path / "in.csv"
    os.mkfifo(fifo)
    feed_fifo(fifo, b"text\n\xff\n")
    with pytest.raises(PtcliError, match=rf"^{fifo}: line 2: byte offset 5 is not UTF-8"):
        read_table(fifo)
    feed_fifo(fifo, b"")
    with pytest.raises(PtcliError, match=rf"^{fifo}: the file is empty"):
        read_table(fifo)
    assert not list(private_tmp.iterdir())


def test_fifo_without_writer_times_out(tmp_path, monkeypatch, private_tmp):
    fifo = tmp_path / "in.csv"
    os.mkfifo(fifo)
    monkeypatch.setenv("PTCLI_PIPE_TIMEOUT", "0.2")
    started = time.monotonic()
    with pytest.raises(PtcliError, match=r"in.csv: nothing is writing to it \(no data within 0.2 s\).*PTCLI_PIPE"):
        read_table(fifo)
    assert time.monotonic() - started < 5
    assert not list(private_tmp.iterdir())
    monkeypatch.setenv("PTCLI_PIPE_TIMEOUT", "soon")
    with pytest.raises(UsageError, match="PTCLI_PIPE_TIMEOUT='soon'"):
        read_table(fifo)


def test_no_room_for_the_pipe_copy_is_one_line(tmp_path, monkeypatch):
    fifo = tmp_path / "in.csv"
    os.mkfifo(fifo)

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tempfile, "mkdtemp", full)
    with pytest.raises(PtcliError, match=r"in\.csv: cannot keep a temporary copy of it in .*No space left.*TMPDIR"):
        read_table(fifo)
