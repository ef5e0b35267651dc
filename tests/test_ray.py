"""`ptcli predict --ray`: the same output as a single process, row for row, on a local 2-CPU Ray.

Skipped when Ray is not installed (`pip install 'ptcli[ray]'`), except the tests of what ptcli says then.
"""

import json
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from ptcli.cli import app
from ptcli.data import read_table
from ptcli.predict import PredictArgs, predict

runner = CliRunner()
TEXTS = ["很棒", "", "太烂了,真的", "NA", '引号"里\n换行', "  ", "007", "x" * 300]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(result, code, fragment):
    assert result.exit_code == code, (result.exit_code, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0] and "Traceback" not in result.stderr, result.stderr


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def trained(tiny_artifact):
    return tiny_artifact


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    d = tmp_path_factory.mktemp("ray-rows")
    texts = [TEXTS[i % len(TEXTS)] + (f"第{i}个很棒" if i % 3 else f"第{i}个太烂") for i in range(61)]
    df = pd.DataFrame({"id": [f"{i:04d}" for i in range(61)], "text": texts, "note": ["NA", "", "a,b"] * 20 + [""]})
    df.to_csv(d / "in.csv", index=False)
    return d / "in.csv"


def assert_same_predictions(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns)
    for col in ("id", "text", "note", "pred"):
        assert a[col].astype(str).tolist() == b[col].astype(str).tolist(), col
    probs = [c for c in a.columns if c.startswith("prob_") or c == "confidence"]
    assert np.allclose(a[probs].astype(float).to_numpy(), b[probs].astype(float).to_numpy(), atol=1e-5)


def test_two_actors_match_one_process_row_by_row(ray_local, trained, rows, tmp_path):
    ours = ray_local.get(ray_local.remote(lambda: __import__("ptcli").__file__).remote())
    assert ours == sys.modules["ptcli"].__file__  # the actors run this tree's ptcli, not another install
    single = tmp_path / "single.csv"
    predict(PredictArgs(artifact=trained, input=rows, output=single, device="cpu", batch_size=4))
    spread = tmp_path / "ray.csv"
    # 7-row chunks: 9 blocks over 2 actors, so blocks finish out of order and must be put back.
    result = predict(PredictArgs(artifact=trained, input=rows, output=spread, device="cpu", batch_size=4,
                                 chunk_rows=7, ray="", workers=2))
    assert result.rows == 61
    a, b = read_table(single), read_table(spread)
    assert a["id"].tolist() == [f"{i:04d}" for i in range(61)] and a["note"].tolist()[:3] == ["NA", "", "a,b"]
    assert_same_predictions(a, b)


def test_an_ensemble_on_two_actors_matches_one_process(ray_local, trained, rows, tmp_path):
    import shutil

    other = tmp_path / "other"  # a second member: the same prompts in another template
    shutil.copytree(trained, other)
    meta = json.loads((other / "ptcli.json").read_text(encoding="utf-8"))
    meta["template"]["text"] = "[P]总之<text>[P]真是很[MASK]"
    (other / "ptcli.json").write_text(json.dumps(meta), encoding="utf-8")
    alone, single, spread = tmp_path / "alone.jsonl", tmp_path / "single.jsonl", tmp_path / "ray.jsonl"
    predict(PredictArgs(artifact=trained, input=rows, output=alone, device="cpu", batch_size=4))
    predict(PredictArgs(artifact=[trained, other], input=rows, output=single, device="cpu", batch_size=4))
    result = predict(PredictArgs(artifact=[trained, other], input=rows, output=spread, device="cpu", batch_size=4,
                                 chunk_rows=7, ray="", workers=2))
    assert result.rows == 61 and len(result.artifacts) == 2
    a, b = read_table(single), read_table(spread)
    assert_same_predictions(a, b)
    probs = [c for c in a.columns if c.startswith("prob_")]
    gap = np.abs(a[probs].astype(float).to_numpy() - read_table(alone)[probs].astype(float).to_numpy()).max()
    assert gap > 1e-4, gap  # the actors used both members: their output is not the first alone


def test_cli_ray_reads_and_writes_parquet_like_one_process(ray_local, trained, rows, tmp_path):
    pytest.importorskip("pyarrow")
    src = tmp_path / "in.parquet"
    read_table(rows).to_parquet(src, index=False)
    single, spread = tmp_path / "single.parquet", tmp_path / "ray.parquet"
    assert invoke("predict", trained, src, "-o", single, "--device", "cpu").exit_code == 0
    threads = torch.get_num_threads()
    result = invoke("--threads", 1, "predict", trained, src, "--device", "cpu", "-o", spread, "--json", "--ray",
                    "--workers", 2)
    torch.set_num_threads(threads)  # --threads set this process's torch too
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["rows"] == 61  # stdout: the summary only, Ray's logs go to stderr
    a, b = pd.read_parquet(single), pd.read_parquet(spread)
    assert b["confidence"].dtype == np.float64 and b["id"].tolist()[:2] == ["0000", "0001"]
    assert_same_predictions(a, b)


def test_an_actor_error_is_one_line_and_writes_nothing(ray_local, trained, rows, models, tmp_path):
    out = tmp_path / "out.csv"
    result = invoke("predict", trained, rows, "-o", out, "--device", "cpu", "--ray", "--model", models["bert_other"])
    one_error_line(result, 1, "fingerprint")
    assert not list(tmp_path.iterdir())


def test_header_only_input(ray_local, trained, tmp_path):
    src = tmp_path / "empty.csv"
    src.write_text("id,text\n", encoding="utf-8")
    result = invoke("predict", trained, src, "-o", tmp_path / "out.jsonl", "--device", "cpu", "--ray")
    assert result.exit_code == 0, result.stderr
    out = tmp_path / "out.csv"
    assert invoke("predict", trained, src, "-o", out, "--device", "cpu", "--ray").exit_code == 0
    assert out.read_text().splitlines() == ["id,text,pred,confidence,prob_pos,prob_neg"] or out.read_text(
    ).splitlines() == ["id,text,pred,confidence,prob_neg,prob_pos"]


def test_more_workers_than_cpus_is_a_usage_error(ray_local, trained, rows, tmp_path):
    result = invoke("predict", trained, rows, "-o", tmp_path / "o.csv", "--ray", "--workers", 3)
    one_error_line(result, 2, "--workers 3 × --threads 1 needs 3 CPUs, but the Ray cluster has 2")


def test_workers_need_ray(trained, rows):
    one_error_line(invoke("predict", trained, rows, "--workers", 2), 2, "--workers needs --ray")


def test_without_ray_installed_says_how_to_install_it(trained, rows, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    result = invoke("predict", trained, rows, "-o", tmp_path / "o.csv", "--ray")
    one_error_line(result, 1, "install it with pip install 'ptcli[ray]'")
    assert not list(tmp_path.iterdir())
