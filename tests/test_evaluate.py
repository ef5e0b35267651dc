"""Confidence you can act on, through the CLI: predict --abstain-below, eval's calibration, selective accuracy,
--abstain-below and --errors, and eval --predictions scoring a predictions file exactly as eval scores the model."""

import json

import numpy as np
import pandas as pd
import pytest
from test_cli import assert_clean_error, invoke

OLD_KEYS = ("accuracy", "macro_f1", "n", "per_class", "labels", "confusion", "data", "artifact")


@pytest.fixture(scope="module")
def art(models, review_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("evalx") / "art"
    result = invoke("train", review_files["train"], "--template", review_files["template"], "--model", models["bert"],
                    "--verbalizer", review_files["verbalizer"], "-o", out, "--epochs", 2, "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def labeled(review_files, tmp_path_factory):
    """The test rows with a unique id column, and their predictions (CSV and JSONL) from the model."""
    d = tmp_path_factory.mktemp("evalx-data")
    df = pd.read_csv(review_files["test"], dtype=str, keep_default_na=False)
    df.insert(0, "id", [f"r{i:03d}" for i in range(len(df))])
    df.to_csv(d / "test.csv", index=False)
    return d / "test.csv"


@pytest.fixture(scope="module")
def preds(art, labeled, tmp_path_factory):
    d = tmp_path_factory.mktemp("evalx-preds")
    for suffix in ("csv", "jsonl"):
        result = invoke("predict", art, labeled, "-o", d / f"pred.{suffix}", "--device", "cpu")
        assert result.exit_code == 0, result.stderr
    return {"csv": d / "pred.csv", "jsonl": d / "pred.jsonl"}


@pytest.fixture(scope="module")
def model_report(art, labeled):
    result = invoke("eval", art, labeled, "--device", "cpu", "--json", "--abstain-below", 0.55, "--errors", 5)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def read(path):
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def eval_json(*args):
    result = invoke("eval", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


# --- predict --abstain-below ----------------------------------------------------------------------------------------

def test_abstain_keeps_every_row_in_order_and_empties_pred_below_p(art, labeled, preds, tmp_path):
    plain = read(preds["csv"])
    conf = plain["confidence"].astype(float).to_numpy()
    p = float(np.median(conf))
    result = invoke("predict", art, labeled, "-o", tmp_path / "a.csv", "--device", "cpu", "--abstain-below", p)
    assert result.exit_code == 0, result.stderr
    out = read(tmp_path / "a.csv")
    assert out["id"].tolist() == plain["id"].tolist() and out["text"].tolist() == plain["text"].tolist()
    probs = [c for c in plain.columns if c.startswith("prob_")]
    assert out[probs].equals(plain[probs]) and out["confidence"].equals(plain["confidence"])
    below = out["confidence"].astype(float).to_numpy() < p
    assert 0 < below.sum() < len(out)  # the median splits the rows: both cases are exercised
    assert ((out["pred"] == "").to_numpy() == below).all()
    assert (out["pred"][~below] == plain["pred"][~below]).all()
    assert out["abstained"].tolist() == ["True" if b else "False" for b in below]
    assert pd.read_csv(tmp_path / "a.csv")["abstained"].dtype == bool  # pandas reads it back as booleans
    assert "abstained" not in plain.columns


def test_abstain_in_jsonl_is_a_boolean_and_the_edges_work(art, labeled, tmp_path):
    result = invoke("predict", art, labeled, "--device", "cpu", "--json", "--abstain-below", 1)
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 200 and all(r["abstained"] is True and r["pred"] == "" for r in rows)
    result = invoke("predict", art, labeled, "--device", "cpu", "--json", "--abstain-below", 0)
    assert all(json.loads(line)["abstained"] is False for line in result.stdout.splitlines())


def test_abstain_threshold_is_validated(art, labeled, tmp_path):
    for bad in ("1.5", "-0.1", "nan"):
        assert_clean_error(invoke("predict", art, labeled, "--abstain-below", bad), 2, "--abstain-below",
                           "from 0 to 1")
        assert_clean_error(invoke("eval", art, labeled, "--abstain-below", bad), 2, "--abstain-below")
    clash = tmp_path / "clash.csv"
    clash.write_text("text,abstained\n好,no\n", encoding="utf-8")
    assert_clean_error(invoke("predict", art, clash, "--abstain-below", 0.5, "--device", "cpu"), 1, "abstained")


# --- eval: calibration, selective accuracy, abstention, mistakes ---------------------------------------------------

def test_eval_report_has_calibration_and_keeps_its_keys(model_report, preds):
    r = model_report
    assert set(OLD_KEYS) <= set(r) and r["n"] == 200
    bins = r["reliability"]
    assert len(bins) == 15 and sum(b["count"] for b in bins) == 200
    assert all(set(b) == {"lo", "hi", "count", "confidence", "accuracy"} for b in bins)
    # ECE recomputed by hand from the bins: Σ n_b/N |acc_b − conf_b|
    assert r["ece"] == pytest.approx(sum(b["count"] / 200 * abs(b["accuracy"] - b["confidence"])
                                         for b in bins if b["count"]))
    assert [s["coverage"] for s in r["selective"]] == [1.0, 0.9, 0.8, 0.5]
    assert [s["rows"] for s in r["selective"]] == [200, 180, 160, 100]
    assert r["selective"][0]["accuracy"] == pytest.approx(r["accuracy"])
    # abstention from the predictions file by hand
    df = read(preds["csv"])
    conf = df["confidence"].astype(float).to_numpy()
    kept = conf >= 0.55
    a = r["abstain"]
    assert (a["kept"], a["abstained"]) == (kept.sum(), (~kept).sum())
    if kept.any():
        assert a["accuracy"] == pytest.approx((df["pred"] == df["label"])[kept].mean())


def test_eval_errors_are_the_most_confident_mistakes(model_report, preds):
    df = read(preds["csv"])
    wrong = df[df["pred"] != df["label"]]
    errors = model_report["errors"]
    assert len(errors) == min(5, len(wrong))
    top = np.sort(wrong["confidence"].astype(float).to_numpy())[::-1][: len(errors)]
    assert [e["confidence"] for e in errors] == pytest.approx(top.tolist(), abs=1e-5)
    for e in errors:
        row = df.iloc[e["row"] - 1]  # 1-based data row
        assert (row["label"], row["pred"]) == (e["gold"], e["pred"]) and e["gold"] != e["pred"]
        flat = " ".join(row["text"].split())
        assert e["text"] == (flat if len(flat) <= 60 else flat[:59] + "…")


def test_eval_table_shows_the_new_sections(art, labeled):
    result = invoke("eval", art, labeled, "--device", "cpu", "--errors", 3, "--abstain-below", 0.5)
    assert result.exit_code == 0, result.stderr
    for fragment in ("ECE", "selective accuracy", "reliability", "most confident mistakes", "abstained"):
        assert fragment in result.stdout, fragment


# --- eval --predictions ---------------------------------------------------------------------------------------------

def assert_same_report(a, b):
    for key in ("accuracy", "macro_f1", "n", "labels", "confusion"):
        assert a[key] == b[key], key
    assert a["per_class"].keys() == b["per_class"].keys()
    for label, m in a["per_class"].items():
        assert m == pytest.approx(b["per_class"][label])
    assert a["ece"] == pytest.approx(b["ece"], abs=1e-5)  # CSV keeps 6 significant digits
    assert [x["count"] for x in a["reliability"]] == [x["count"] for x in b["reliability"]]
    assert [x["accuracy"] for x in a["selective"]] == pytest.approx([x["accuracy"] for x in b["selective"]])
    assert a["abstain"] == pytest.approx(b["abstain"])
    assert [(e["row"], e["gold"], e["pred"]) for e in a["errors"]] == [(e["row"], e["gold"], e["pred"])
                                                                       for e in b["errors"]]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_eval_predictions_equals_eval(model_report, preds, labeled, fmt, monkeypatch):
    from ptcli.classifier import Classifier

    def no_model(*a, **k):
        raise AssertionError("eval --predictions loaded a model")

    monkeypatch.setattr(Classifier, "from_artifact", no_model)
    opts = ("--abstain-below", 0.55, "--errors", 5)
    alone = eval_json("--predictions", preds[fmt], *opts)  # the predictions still hold the label column
    assert_same_report(alone, model_report)
    by_order = eval_json("--predictions", preds[fmt], labeled, *opts)
    assert_same_report(by_order, model_report)
    assert by_order["predictions"] == str(preds[fmt]) and by_order["artifact"] is None
    if fmt == "jsonl":
        assert alone["ece"] == pytest.approx(model_report["ece"], abs=1e-12)  # JSON keeps every digit


def test_eval_predictions_of_an_abstaining_predict(art, labeled, model_report, tmp_path):
    """Abstained rows have no pred: they are scored by their top probability, so nothing changes."""
    assert invoke("predict", art, labeled, "-o", tmp_path / "a.jsonl", "--abstain-below", 1, "--device", "cpu"
                  ).exit_code == 0
    report = eval_json("--predictions", tmp_path / "a.jsonl", "--abstain-below", 0.55, "--errors", 5)
    assert_same_report(report, model_report)


def test_eval_predictions_joined_by_id(model_report, preds, labeled, tmp_path):
    shuffled = read(preds["csv"]).drop(columns=["label"]).sample(frac=1, random_state=0)
    shuffled.to_csv(tmp_path / "shuffled.csv", index=False)
    report = eval_json("--predictions", tmp_path / "shuffled.csv", labeled, "--id-col", "id", "--abstain-below", 0.55,
                       "--errors", 5)
    assert_same_report(report, model_report)  # rows (and error row numbers) follow the labeled file


def test_eval_predictions_mismatched_rows(preds, labeled, tmp_path):
    df = read(preds["csv"])
    df.iloc[:-1].to_csv(tmp_path / "short.csv", index=False)
    assert_clean_error(invoke("eval", "--predictions", tmp_path / "short.csv", labeled), 1, "199 data rows",
                       "has 200", "--id-col")
    i = next(i for i in range(5, 199) if df.loc[i, "text"] != df.loc[i + 1, "text"])
    swapped = df.copy()
    swapped.loc[[i, i + 1]] = swapped.loc[[i + 1, i]].to_numpy()
    swapped.to_csv(tmp_path / "swapped.csv", index=False)
    assert_clean_error(invoke("eval", "--predictions", tmp_path / "swapped.csv", labeled), 1, f"data row {i + 1}:",
                       "same rows in the same order")
    dup = df.copy()
    dup.loc[3, "id"] = dup.loc[2, "id"]
    dup.to_csv(tmp_path / "dup.csv", index=False)
    assert_clean_error(invoke("eval", "--predictions", tmp_path / "dup.csv", labeled, "--id-col", "id"), 1,
                       "'r002' is not unique", "data rows 3, 4")
    other = df.copy()
    other.loc[0, "id"] = "zzz"
    other.to_csv(tmp_path / "other.csv", index=False)
    assert_clean_error(invoke("eval", "--predictions", tmp_path / "other.csv", labeled, "--id-col", "id"), 1,
                       "1 id(s)", "'r000'", "no prediction", "'zzz'", "not in")
    df.drop(columns=["label"]).to_csv(tmp_path / "nolabel.csv", index=False)
    assert_clean_error(invoke("eval", "--predictions", tmp_path / "nolabel.csv"), 1, "no column 'label'")
    df.drop(columns=["prob_pos"]).to_csv(tmp_path / "noprob.csv", index=False)
    assert_clean_error(invoke("eval", "--predictions", tmp_path / "noprob.csv"), 1, "sum to")


def test_eval_cli_shape(art, preds, labeled):
    assert_clean_error(invoke("eval", art, labeled, "--predictions", preds["csv"]), 2, "--predictions",
                       "without a model")
    assert_clean_error(invoke("eval", labeled), 2, "ARTIFACT DATA")
    assert_clean_error(invoke("eval"), 2, "ARTIFACT DATA")
    assert_clean_error(invoke("eval", art, labeled, "--id-col", "id"), 2, "--id-col")
    assert_clean_error(invoke("eval", "--predictions", preds["csv"], "--id-col", "id"), 2, "--id-col")
    assert_clean_error(invoke("eval", art, labeled, "--errors", -1), 2, "--errors")
    assert_clean_error(invoke("eval", "--predictions", preds["csv"], "--model", art), 2, "loads no model")
