"""Parquet in and out: string cells like the other formats, floats as float64, streamed, one-line errors."""

import datetime
import decimal
import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from ptcli.cli import app
from ptcli.data import iter_table, read_labeled, read_table, table_writer
from ptcli.errors import PtcliError

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

runner = CliRunner()
CELLS = ["", "plain", "逗号,引号\"和\n换行", "tab\there\r\nCRLF", "  spaced  ", "NA", "null", "0.10", "😀 emoji"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tiny_artifact):
    return tiny_artifact


def write_parquet(path, table, row_group_size=None):
    pq.write_table(table if isinstance(table, pa.Table) else pa.table(table), path, row_group_size=row_group_size)
    return path


def test_string_cells_round_trip_through_the_writer(tmp_path):
    src = write_parquet(tmp_path / "in.parquet", {"id": [f"{i:03d}" for i in range(len(CELLS))], "text": CELLS})
    df = read_table(src)
    assert df["text"].tolist() == CELLS and df["id"].tolist()[:2] == ["000", "001"]
    dst = tmp_path / "out.parquet"
    with dst.open("wb") as f:
        writer = table_writer(f, "parquet", name=dst)
        writer.write(df.assign(p=np.linspace(0, 1, len(CELLS))))
        writer.close()
    back = pq.read_table(dst)
    assert back.schema.field("text").type == pa.string() and back.schema.field("p").type == pa.float64()
    assert back.column("text").to_pylist() == CELLS
    assert read_table(dst)["text"].tolist() == CELLS


def test_non_string_columns_read_as_the_jsonl_reader_would(tmp_path):
    table = pa.table({
        "n": pa.array([1, None, -7], pa.int64()),
        "f": pa.array([0.5, float("nan"), None], pa.float64()),
        "b": pa.array([True, False, None]),
        "l": pa.array([[1, 2], [], None], pa.list_(pa.int64())),
        "s": pa.array([{"a": "中", "k": 1}, None, {"a": None, "k": 2}],
                      pa.struct([("a", pa.string()), ("k", pa.int64())])),
        "d": pa.array([datetime.date(2024, 1, 2), None, datetime.date(1999, 12, 31)]),
        "dec": pa.array([decimal.Decimal("1.50"), None, decimal.Decimal("-3.00")], pa.decimal128(5, 2)),
        "bin": pa.array([b"bytes", None, "中".encode()], pa.binary()),
        "cat": pa.array(["x", None, "x"]).dictionary_encode(),
    })
    df = read_table(write_parquet(tmp_path / "t.parquet", table))
    assert all(df[c].map(type).eq(str).all() for c in df.columns)
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text("".join(json.dumps({k: row[k] for k in "nfbls"}, ensure_ascii=False) + "\n"
                             for row in table.select(list("nfbls")).to_pylist()), encoding="utf-8")
    assert df[list("nfbls")].equals(read_table(jsonl))  # same strings as the JSONL reader gives
    assert df["n"].tolist() == ["1", "", "-7"] and df["b"].tolist() == ["true", "false", ""]
    assert df["d"].tolist() == ["2024-01-02", "", "1999-12-31"] and df["dec"].tolist() == ["1.50", "", "-3.00"]
    assert df["bin"].tolist() == ["bytes", "", "中"] and df["cat"].tolist() == ["x", "", "x"]


def test_pandas_index_column_is_not_data(tmp_path):
    src = tmp_path / "idx.parquet"
    pd.DataFrame({"text": ["a", "b"]}, index=[5, 9]).to_parquet(src)
    assert list(read_table(src).columns) == ["text"]


def test_chunks_keep_order_and_row_numbers_across_row_groups(tmp_path):
    src = write_parquet(tmp_path / "big.parquet", {"text": [f"r{i}" for i in range(23)]}, row_group_size=5)
    chunks = list(iter_table(src, chunk_rows=4))
    assert all(len(c) <= 4 for c in chunks)
    assert pd.concat(chunks)["text"].tolist() == [f"r{i}" for i in range(23)]
    assert pd.concat(chunks).index.tolist() == list(range(23))


@pytest.mark.parametrize("content", [b"", b"text,label\nx,y\n", b"PAR1" + b"\0" * 64 + b"PAR1"])
def test_unreadable_parquet_is_one_line(tmp_path, content):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(content)
    with pytest.raises(PtcliError, match=r"bad\.parquet: not a readable Parquet file \(.+\); check") as e:
        read_table(bad)
    assert "\n" not in e.value.message


def test_truncated_parquet_is_one_line(tmp_path):
    good = write_parquet(tmp_path / "good.parquet", {"text": [f"row {i}" * 20 for i in range(500)]})
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(PtcliError, match=r"cut\.parquet: not a readable Parquet file"):
        read_table(cut)


def test_parquet_errors_name_the_row(tmp_path):
    with pytest.raises(PtcliError, match=r"row 2, column 'text' holds a NUL"):
        read_table(write_parquet(tmp_path / "nul.parquet", {"text": ["ok", "a\0b"]}))
    with pytest.raises(PtcliError, match="repeats column name"):
        read_table(write_parquet(tmp_path / "dup.parquet", pa.Table.from_arrays(
            [pa.array(["a"]), pa.array(["b"])], names=["text", "text"])))
    with pytest.raises(PtcliError, match=r"column 'text' is empty or blank on line\(s\) 2;"):  # rows count from 1
        read_labeled(write_parquet(tmp_path / "blank.parquet", {"text": ["x", " "], "label": ["a", "b"]}),
                     "text", "label")


def test_predict_parquet_to_parquet_keeps_rows_and_types(trained, tmp_path):
    texts = ["很棒", "", "太烂了\n第二行", "中文 CJK", *CELLS]
    src = write_parquet(tmp_path / "in.parquet", {"id": [str(i) for i in range(len(texts))], "text": texts,
                                                  "n": list(range(len(texts)))}, row_group_size=3)
    dst = tmp_path / "pred.parquet"
    result = invoke("predict", trained, src, "-o", dst, "--device", "cpu", "--batch-size", 2)
    assert result.exit_code == 0, result.stderr
    out = pq.read_table(dst)
    types = {f.name: f.type for f in out.schema}
    assert types["text"] == types["id"] == types["n"] == types["pred"] == pa.string()
    assert types["confidence"] == types["prob_pos"] == types["prob_neg"] == pa.float64()
    df = out.to_pandas()
    assert df["text"].tolist() == texts and df["n"].tolist() == [str(i) for i in range(len(texts))]
    assert np.allclose(df["prob_pos"] + df["prob_neg"], 1.0)
    # The same rows through CSV give the same predictions.
    csv_src = tmp_path / "in.csv"
    pd.DataFrame({"id": df["id"], "text": texts, "n": df["n"]}).to_csv(csv_src, index=False)
    assert invoke("predict", trained, csv_src, "-o", tmp_path / "pred.csv", "--device", "cpu").exit_code == 0
    via_csv = pd.read_csv(tmp_path / "pred.csv", dtype=str, keep_default_na=False)
    assert via_csv["pred"].tolist() == df["pred"].tolist()
    assert np.allclose(via_csv["prob_pos"].astype(float), df["prob_pos"], atol=1e-5)


def test_small_chunks_preserve_order(trained, tmp_path):
    from ptcli.predict import PredictArgs, predict

    texts = [f"第{i}个很棒" if i % 3 else f"第{i}个太烂" for i in range(40)]
    src = write_parquet(tmp_path / "in.parquet", {"text": texts}, row_group_size=7)
    predict(PredictArgs(artifact=trained, input=src, output=tmp_path / "a.parquet", device="cpu", chunk_rows=3))
    predict(PredictArgs(artifact=trained, input=src, output=tmp_path / "b.parquet", device="cpu", chunk_rows=1000))
    a, b = pd.read_parquet(tmp_path / "a.parquet"), pd.read_parquet(tmp_path / "b.parquet")
    assert a["text"].tolist() == texts == b["text"].tolist() and a["pred"].tolist() == b["pred"].tolist()
    assert np.allclose(a["confidence"], b["confidence"], atol=1e-5)
    assert pq.ParquetFile(tmp_path / "a.parquet").metadata.num_row_groups == 14  # one row group per chunk: streamed


def test_zero_row_parquet_gives_zero_row_output_with_added_columns(trained, tmp_path):
    src = write_parquet(tmp_path / "empty.parquet", pa.table({"text": pa.array([], pa.string()),
                                                             "id": pa.array([], pa.int64())}))
    for suffix in ("parquet", "csv"):
        dst = tmp_path / f"out.{suffix}"
        result = invoke("predict", trained, src, "-o", dst, "--device", "cpu")
        assert result.exit_code == 0, result.stderr
        df = read_table(dst)
        assert len(df) == 0 and list(df.columns)[:3] == ["text", "id", "pred"] and "prob_pos" in df.columns
    assert pq.read_table(tmp_path / "out.parquet").schema.field("confidence").type == pa.float64()


def test_eval_reads_parquet(trained, review_files, tmp_path):
    src = tmp_path / "test.parquet"
    read_table(review_files["test"]).to_parquet(src, index=False)
    a = json.loads(invoke("eval", trained, src, "--device", "cpu", "--json").stdout)
    b = json.loads(invoke("eval", trained, review_files["test"], "--device", "cpu", "--json").stdout)
    assert a["n"] == b["n"] == 200 and a["accuracy"] == b["accuracy"]


def test_corrupt_input_is_one_line_and_writes_nothing(trained, tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 not really")
    result = invoke("predict", trained, bad, "-o", tmp_path / "out.parquet", "--device", "cpu")
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        line for line in result.stderr.splitlines() if "not a readable Parquet file" in line]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.parquet"]


def test_a_crash_mid_write_leaves_nothing(trained, tmp_path, monkeypatch):
    from ptcli import predict as predict_module
    from ptcli.predict import PredictArgs

    src = write_parquet(tmp_path / "in.parquet", {"text": [f"第{i}个" for i in range(30)]})
    real = predict_module.ChunkPredictor.__call__
    calls = []

    def dies_on_third(self, chunk, on_batch=None):
        calls.append(len(chunk))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, chunk, on_batch)

    monkeypatch.setattr(predict_module.ChunkPredictor, "__call__", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        predict_module.predict(PredictArgs(artifact=trained, input=src, output=tmp_path / "out.parquet",
                                           device="cpu", chunk_rows=5))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet"]


def test_parquet_from_a_pipe_is_refused(tmp_path):
    import os

    fifo = tmp_path / "rows.parquet"
    os.mkfifo(fifo)
    with pytest.raises(PtcliError, match="cannot be read from a pipe"):
        read_table(fifo)
