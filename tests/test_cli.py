"""End to end through the CLI: train → predict → eval → export, and every bad input as a one-line error."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from safetensors import safe_open
from typer.testing import CliRunner

from ptcli.cli import app

runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result


def assert_clean_error(result, code, *fragments):
    """Exit code, no traceback, one error line naming what is wrong."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr.replace("\n", " "), result.stderr


@pytest.fixture(scope="module")
def trained(models, review_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "art"
    result = invoke("train", review_files["train"], "--template", review_files["template"], "--model", models["bert"],
                    "--verbalizer", review_files["verbalizer"], "-o", out, "--epochs", 2, "--device", "cpu",
                    "--json")
    assert result.exit_code == 0, result.output + result.stderr
    return out, json.loads(result.stdout)


def test_train_json_and_artifact_layout(trained):
    out, info = trained
    assert info["artifact"] == str(out) and set(info["labels"]) == {"pos", "neg"}
    assert len(info["history"]) >= 1 and "accuracy" in info["dev"]
    for name in ("ptcli.json", "prompts.safetensors", "encoder.safetensors", "README.md"):
        assert (out / name).is_file()
    meta = json.loads((out / "ptcli.json").read_text())
    assert meta["template"]["text"] == "<text>。[P][P]很[MASK]"
    assert meta["backbone"]["fingerprint"] and meta["versions"]["torch"]
    assert "ptcli predict" in (out / "README.md").read_text()


def test_predict_keeps_every_row_and_column(trained, tmp_path):
    out, _ = trained
    src = tmp_path / "in.csv"
    texts = ["很棒", "太烂了", "NA", "好,逗号", '引号"里', "x" * 500]
    pd.DataFrame({"id": ["007", "2", "3", "4", "5", "6"], "text": texts, "note": ["", "a", "b", "c", "d", "e"]}).to_csv(
        src, index=False)
    dst = tmp_path / "pred.csv"
    result = invoke("predict", out, src, "-o", dst, "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    df = pd.read_csv(dst, dtype=str, keep_default_na=False)
    assert df["id"].tolist() == ["007", "2", "3", "4", "5", "6"] and df["text"].tolist() == texts
    assert list(df.columns) == ["id", "text", "note", "pred", "confidence", "prob_pos", "prob_neg"] or list(
        df.columns) == ["id", "text", "note", "pred", "confidence", "prob_neg", "prob_pos"]
    probs = df[[c for c in df.columns if c.startswith("prob_")]].astype(float).to_numpy()
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)
    assert np.allclose(df["confidence"].astype(float), probs.max(1), atol=1e-5)
    assert set(df["pred"]) <= {"pos", "neg"}


def test_predict_to_stdout_and_jsonl(trained, tmp_path):
    out, _ = trained
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "很棒", "n": 1}\n{"text": "太烂", "n": 2}\n', encoding="utf-8")
    result = invoke("predict", out, src, "--device", "cpu", "--json")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["n"] for r in rows] == ["1", "2"] and all("pred" in r for r in rows)
    dst = tmp_path / "p.tsv"
    assert invoke("predict", out, src, "-o", dst, "--device", "cpu").exit_code == 0
    assert dst.read_text().splitlines()[0].split("\t")[:3] == ["text", "n", "pred"]


def test_predict_in_chunks_equals_one_chunk(trained, tmp_path):
    from ptcli.predict import PredictArgs, predict

    out, _ = trained
    src = tmp_path / "in.csv"
    pd.DataFrame({"text": [f"第{i}个很棒" if i % 2 else f"第{i}个太烂" for i in range(50)]}).to_csv(src, index=False)
    predict(PredictArgs(artifact=out, input=src, output=tmp_path / "a.csv", device="cpu", chunk_rows=7, batch_size=3))
    predict(PredictArgs(artifact=out, input=src, output=tmp_path / "b.csv", device="cpu", chunk_rows=1000))
    a, b = pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "b.csv")
    assert a["text"].tolist() == b["text"].tolist() and a["pred"].tolist() == b["pred"].tolist()
    assert np.allclose(a["confidence"], b["confidence"], atol=1e-5)


def test_eval_table_and_json(trained, review_files):
    out, _ = trained
    result = invoke("eval", out, review_files["test"], "--device", "cpu", "--json")
    report = json.loads(result.stdout)
    assert report["n"] == 200 and 0 <= report["accuracy"] <= 1
    assert sum(map(sum, report["confusion"])) == 200
    table = invoke("eval", out, review_files["test"], "--device", "cpu")
    assert "macro-F1" in table.stdout and "confusion" in table.stdout


@pytest.mark.parametrize("fmt", ["safetensors", "npy", "json"])
def test_export_prompts(trained, tmp_path, fmt):
    out, _ = trained
    dst = tmp_path / f"prompts.{fmt}"
    result = invoke("export-prompts", out, "-o", dst, "--format", fmt)
    assert result.exit_code == 0, result.stderr
    if fmt == "safetensors":
        with safe_open(str(dst), "pt") as f:
            assert f.get_tensor("prompt_embeddings").shape == (2, 64 if False else f.get_tensor(
                "prompt_embeddings").shape[1])
            meta = f.metadata()
        assert json.loads(meta["template"]) == "<text>。[P][P]很[MASK]" and json.loads(meta["fingerprint"])
    elif fmt == "npy":
        assert np.load(dst, allow_pickle=False).shape[0] == 2
        assert json.loads((tmp_path / "prompts.npy.json").read_text())["backbone"]
    else:
        data = json.loads(dst.read_text())
        assert len(data["prompt_embeddings"]) == 2 and data["labels"]


# --- bad input: one line, exit code, nothing half-written ----------------------------------------------------------

@pytest.fixture
def base(models, review_files, tmp_path):
    return ["train", review_files["train"], "--template", review_files["template"], "--model", models["bert"],
            "--verbalizer", review_files["verbalizer"], "-o", tmp_path / "out", "--epochs", 1, "--device", "cpu"]


def replace(argv, option, value):
    argv = list(argv)
    argv[argv.index(option) + 1] = value
    return argv


def with_data(argv, path):
    return [argv[0], path, *argv[2:]]


def test_train_bad_data(base, tmp_path):
    cases = {
        "missing.csv": (None, "no such file"),
        "data.xlsx": ("text,label\nx,y\n", "unknown file type"),
        "empty.csv": ("", "empty"),
        "header.csv": ("text,label\n", "no data rows"),
        "cols.csv": ("sentence,label\n好,pos\n差,neg\n", "columns: 'sentence', 'label'"),
        "blank.csv": ("text,label\n好,pos\n  ,neg\n差,neg\n", "line(s) 3"),
        "one.csv": ("text,label\n好,pos\n棒,pos\n", "only one class"),
    }
    for name, (content, fragment) in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_text(content, encoding="utf-8")
        assert_clean_error(invoke(*with_data(base, path)), 1, name, fragment)
    bad = tmp_path / "bytes.csv"
    bad.write_bytes(b"text,label\n\xff\xfe,pos\n")
    assert_clean_error(invoke(*with_data(base, bad)), 1, "offset 11", "line 2")
    assert not (tmp_path / "out").exists()


def test_train_bom_just_works(base, tmp_path, review_files):
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + review_files["train"].read_bytes())
    result = invoke(*with_data(base, bom))
    assert result.exit_code == 0, result.stderr


def test_train_bad_template_and_verbalizer(base, tmp_path):
    cases = {
        "no_text.txt": ("[P][MASK]", "no <text>"),
        "no_mask.txt": ("<text>很好", "no [MASK]"),
        "two_runs.txt": ("[MASK]<text>[MASK]", "second [MASK] run"),
        "unknown.txt": ("<text>[X][MASK]", "unknown tag [X]"),
        "empty.txt": ("", "empty"),
    }
    for name, (content, fragment) in cases.items():
        (tmp_path / name).write_text(content, encoding="utf-8")
        assert_clean_error(invoke(*replace(base, "--template", tmp_path / name)), 1, name, fragment)
    (tmp_path / "long.json").write_text('{"pos": "很好", "neg": "差"}', encoding="utf-8")
    assert_clean_error(invoke(*replace(base, "--verbalizer", tmp_path / "long.json")), 1, "'很好'", "1 [MASK]")
    (tmp_path / "unk.json").write_text('{"pos": "😀", "neg": "差"}', encoding="utf-8")
    assert_clean_error(invoke(*replace(base, "--verbalizer", tmp_path / "unk.json")), 1, "'😀'", "unknown")


def test_train_bad_usage(base, tmp_path):
    assert_clean_error(invoke(*base, "--encoder", "gru"), 2, "--encoder")
    assert_clean_error(invoke(*base, "--prompt-init", "glove"), 2, "--prompt-init 'glove'", "random, vocab")
    assert_clean_error(invoke(*base, "--calibrate", "platt"), 2, "--calibrate 'platt'", "none, contextual, bias")
    assert_clean_error(invoke(*base, "--select", "f1"), 2, "--select 'f1'", "dev-acc, dev-loss, kfold")
    assert_clean_error(invoke(*base, "--select", "kfold", "--dev", base[1]), 2, "--dev", "--select kfold")
    assert_clean_error(invoke(*replace(base, "-o", tmp_path / "missing" / "art")), 1, "does not exist")
    result = invoke(*replace(base, "--device", "cuda"))
    import torch

    if not torch.cuda.is_available():
        assert_clean_error(result, 1, "CUDA is not available")


def test_train_levers_are_recorded(base, tmp_path):
    result = invoke(*base, "--prompt-init", "vocab", "--calibrate", "contextual", "--select", "dev-loss", "--json")
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["select"] == "dev-loss" and info["calibrate"] == "contextual" and len(info["label_bias"]) == 2
    meta = json.loads((tmp_path / "out" / "ptcli.json").read_text())
    assert meta["encoder"]["init"] == "vocab" and meta["label_bias"] == info["label_bias"]
    assert (meta["training"]["select"], meta["training"]["calibrate"]) == ("dev-loss", "contextual")
    assert meta["training"]["args"]["prompt_init"] == "vocab"


def test_train_demos_and_chat_options(base, tmp_path):
    assert_clean_error(invoke(*base, "--demos", "some"), 2, "--demos some", "`all` or `auto`")
    assert_clean_error(invoke(*base, "--chat"), 2, "--chat", "masked LM")
    assert not (tmp_path / "out").exists()
    result = invoke(*base, "--demos", "2", "--json")
    assert result.exit_code == 0, result.stderr
    meta = json.loads((tmp_path / "out" / "ptcli.json").read_text(encoding="utf-8"))
    assert [d["label"] for d in meta["demonstrations"]].count("pos") == 2 and len(meta["demonstrations"]) == 4


def test_unseen_dev_label(base, tmp_path):
    dev = tmp_path / "dev.csv"
    dev.write_text("text,label\n好,pos\n一般,meh\n", encoding="utf-8")
    assert_clean_error(invoke(*base, "--dev", dev), 1, "'meh'")


def test_predict_bad_input(trained, tmp_path, models):
    out, _ = trained
    no_col = tmp_path / "nocol.csv"
    no_col.write_text("sentence\n好\n", encoding="utf-8")
    assert_clean_error(invoke("predict", out, no_col, "--device", "cpu"), 1, "no column 'text'", "'sentence'")
    good = tmp_path / "good.csv"
    good.write_text("text\n好\n", encoding="utf-8")
    assert_clean_error(invoke("predict", out, good, "-o", tmp_path / "nodir" / "p.csv"), 1, "does not exist")
    assert_clean_error(invoke("predict", tmp_path / "nothing", good), 1, "not an artifact directory")
    assert_clean_error(invoke("predict", out, good, "--model", models["bert_other"], "--device", "cpu"), 1,
                       "fingerprint")
    assert not list(tmp_path.glob(".*"))  # no temporary output left behind


def test_predict_refuses_an_artifact_of_a_future_format(trained, tmp_path):
    import shutil

    out, _ = trained
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    meta = json.loads((copy / "ptcli.json").read_text())
    meta["format_version"] = 99
    (copy / "ptcli.json").write_text(json.dumps(meta))
    good = tmp_path / "good.csv"
    good.write_text("text\n好\n", encoding="utf-8")
    assert_clean_error(invoke("predict", copy, good), 1, "format version 99")
    (copy / "prompts.safetensors").write_bytes(b"\x00" * 10)
    meta["format_version"] = 1
    (copy / "ptcli.json").write_text(json.dumps(meta))
    assert_clean_error(invoke("predict", copy, good), 1, "damaged")


def test_help_is_fast_and_lazy():
    code = ("import sys; from ptcli.cli import app; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
    for command in ([], ["train"], ["predict"], ["eval"], ["export-prompts"]):
        result = invoke(*command, "--help")
        assert result.exit_code == 0 and "Example" in result.stdout


def test_python_dash_m():
    result = subprocess.run([sys.executable, "-m", "ptcli", "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("ptcli ")


def test_train_head_linear_through_the_cli_and_inspect_shows_it(base, tmp_path):
    result = invoke(*base, "--head", "linear", "--head-lr", "0.02", "--head-init", "fit", "--select", "kfold", "--json")
    assert result.exit_code == 0, result.output + result.stderr
    assert json.loads(result.stdout)["head"] == "linear"
    out = tmp_path / "out"
    recorded = json.loads((out / "ptcli.json").read_text())["training"]["args"]
    assert (recorded["head_lr"], recorded["head_init"]) == (0.02, "fit")
    with safe_open(str(out / "prompts.safetensors"), "pt") as f:
        assert {"prompt_embeddings", "head_weight", "head_bias"} <= set(f.keys())
    assert "linear read-out" in (out / "README.md").read_text()
    shown = invoke("inspect", out, "--json")
    assert shown.exit_code == 0, shown.stderr
    assert json.loads(shown.stdout)["head"] == "linear"
    assert "--head-init fit" in invoke("inspect", out).stdout
    assert_clean_error(invoke(*base, "--head", "soft"), 2, "--head 'soft'", "words, linear")
    assert_clean_error(invoke(*base, "--head-init", "probe"), 2, "--head-init 'probe'", "fit, zero")


def test_train_head_features_and_head_refit_through_the_cli(base, tmp_path):
    result = invoke(*base, "--head", "linear", "--head-features", "slot+mean", "--head-refit", "--json")
    assert result.exit_code == 0, result.output + result.stderr
    assert json.loads(result.stdout)["head_refit"] is True
    out = tmp_path / "out"
    meta = json.loads((out / "ptcli.json").read_text())
    assert meta["head_features"] == ["slot", "mean"] and meta["training"]["head_refit"] is True
    with safe_open(str(out / "prompts.safetensors"), "pt") as f:
        assert f.get_tensor("head_weight").shape[1] == 2 * meta["encoder"]["hidden_size"]
    assert "--head-refit" in (out / "README.md").read_text()
    shown = invoke("inspect", out)
    assert "mean state" in shown.stdout and "--head-refit" in shown.stdout
    assert json.loads(invoke("inspect", out, "--json").stdout)["head_features"] == ["slot", "mean"]
    assert_clean_error(invoke(*base, "--head-features", "cls"), 2, "--head-features 'cls'", "slot, slot+mean")


def test_train_refit_through_the_cli_and_inspect_shows_it(base, tmp_path):
    result = invoke(*base, "--refit", "--select", "dev-acc", "--lr", "0.05", "--json")
    assert result.exit_code == 0, result.output + result.stderr
    trained = json.loads(result.stdout)
    refitted = trained["best_epoch"] > 0  # the untrained start kept: nothing to refit
    assert trained["refit"] is refitted and trained["n_train"] == (32 if refitted else 24)
    shown = invoke("inspect", tmp_path / "out", "--json")
    assert shown.exit_code == 0, shown.stderr
    assert json.loads(shown.stdout)["training"]["refit"] is refitted
    assert ("refit" in invoke("inspect", tmp_path / "out").stdout) is refitted
