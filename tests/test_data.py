import json

import pandas as pd
import pytest

from ptcli.data import TableWriter, check_output_path, iter_table, read_labeled, read_table
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
    with pytest.raises(PtcliError, match="does not exist"):
        check_output_path(tmp_path / "missing" / "out.csv")
    with pytest.raises(PtcliError, match="is a directory"):
        check_output_path(tmp_path)
