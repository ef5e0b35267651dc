"""Hostile input through the CLI: data is never lost, nothing half-written, every refusal one `error:` line."""

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file
from test_cli import assert_clean_error, invoke

from ptcli.data import read_table


@pytest.fixture(scope="module")
def art(tiny_artifact):
    return tiny_artifact


@pytest.fixture
def rows(tmp_path):
    path = tmp_path / "data.csv"
    pd.DataFrame({"id": ["1", "2", "3"], "text": ["很棒", '他说"很棒"', "太烂\t了\n真的"]}).to_csv(path, index=False)
    return path


def train_argv(models, review_files, tmp_path, **options):
    argv = ["train", review_files["train"], "--template", review_files["template"], "--model", models["bert"],
            "--verbalizer", review_files["verbalizer"], "-o", tmp_path / "out", "--epochs", 1, "--device", "cpu"]
    for option, value in options.items():
        argv += [f"--{option.replace('_', '-')}", value]
    return argv


# --- outputs that would destroy what the command reads ---------------------------------------------------------------

def test_export_into_the_artifact_is_refused(art, tmp_path):
    before = {p.name: p.read_bytes() for p in art.iterdir() if p.is_file()}
    for target in (art / "ptcli.json", art / "prompts.safetensors", art / "new.safetensors"):
        assert_clean_error(invoke("export-prompts", art, "-o", target), 1, "inside the artifact")
    assert {p.name: p.read_bytes() for p in art.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("how", ["same", "relative", "hardlink", "symlink"])
def test_predict_onto_its_own_input_is_refused(art, rows, tmp_path, monkeypatch, how):
    original = rows.read_bytes()
    target = rows
    if how == "relative":
        monkeypatch.chdir(tmp_path)
        target = "./sub/../data.csv"
        (tmp_path / "sub").mkdir()
    elif how == "hardlink":
        target = tmp_path / "link.csv"
        os.link(rows, target)
    elif how == "symlink":
        target = tmp_path / "sym.csv"
        target.symlink_to(rows)
    assert_clean_error(invoke("predict", art, rows, "-o", target, "--device", "cpu"), 1, "is the input")
    assert rows.read_bytes() == original


def test_outputs_in_unwritable_places_fail_before_any_work(models, review_files, art, rows, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for bad in (a_file / "art", "/proc/ptcli-art"):
        result = invoke(*train_argv(models, review_files, tmp_path, output=bad))
        assert_clean_error(result, 1, str(bad))
        assert "epoch" not in result.stderr  # refused before training, not after it
    for bad in (a_file / "p.csv", "/proc/ptcli.csv"):
        assert_clean_error(invoke("predict", art, rows, "-o", bad, "--device", "cpu"), 1, str(bad))
        assert_clean_error(invoke("export-prompts", art, "-o", bad), 1, str(bad))
    (tmp_path / "p.npy.json").mkdir()  # the .npy export's sidecar path is taken by a directory
    assert_clean_error(invoke("export-prompts", art, "-o", tmp_path / "p.npy"), 1, "p.npy.json", "is a directory")
    assert not (tmp_path / "p.npy").exists()


# --- what is written is what was read -----------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", ["csv", "tsv", "jsonl"])
def test_predict_round_trip_keeps_every_cell(art, rows, tmp_path, suffix):
    dst = tmp_path / f"pred.{suffix}"
    assert invoke("predict", art, rows, "-o", dst, "--device", "cpu").exit_code == 0
    original = read_table(rows)
    for back in (read_table(dst), None if suffix == "jsonl" else pd.read_csv(
            dst, sep="\t" if suffix == "tsv" else ",", dtype=str, keep_default_na=False)):
        if back is not None:
            assert back["text"].tolist() == original["text"].tolist()
            assert back["id"].tolist() == original["id"].tolist()


@pytest.mark.parametrize("suffix", ["csv", "tsv"])
def test_header_only_input_gives_header_only_output(art, tmp_path, suffix):
    src = tmp_path / f"empty.{suffix}"
    src.write_text("id\ttext\n" if suffix == "tsv" else "id,text\n", encoding="utf-8")
    dst = tmp_path / f"out.{suffix}"
    result = invoke("predict", art, src, "-o", dst, "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    back = read_table(dst)
    assert len(back) == 0 and list(back.columns)[:4] == ["id", "text", "pred", "confidence"]


def test_output_file_mode_follows_the_umask(art, rows, tmp_path):
    old = os.umask(0o022)
    try:
        assert invoke("predict", art, rows, "-o", tmp_path / "p.csv", "--device", "cpu").exit_code == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "p.csv").stat().st_mode) == 0o644
    assert stat.S_IMODE(art.stat().st_mode) & 0o055 == 0o055  # the artifact itself: group/other may read it


# --- numbers and names -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("option", "value"), [
    ("batch_size", -3), ("batch_size", 0), ("lr", "nan"), ("lr", "inf"), ("lr", 0), ("seed", -1),
    ("seed", 99999999999999999999), ("patience", 0), ("epochs", 0), ("dev_fraction", 1.5), ("backbone_lr", "nan"),
])
def test_train_refuses_bad_numbers_up_front(models, review_files, tmp_path, option, value):
    result = invoke(*train_argv(models, review_files, tmp_path, **{option: value}))
    assert_clean_error(result, 2, "--" + option.replace("_", "-"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", [-3, 0])
def test_predict_and_eval_refuse_a_bad_batch_size(art, rows, review_files, tmp_path, value):
    assert_clean_error(invoke("predict", art, rows, "--batch-size", value, "-o", tmp_path / "p.csv"), 2,
                       "--batch-size")
    assert not (tmp_path / "p.csv").exists()
    assert_clean_error(invoke("eval", art, review_files["test"], "--batch-size", value), 2, "--batch-size")


def test_max_length_is_capped_at_the_model_limit(models, review_files, tmp_path):
    result = invoke(*train_argv(models, review_files, tmp_path, max_length=4096))
    assert result.exit_code == 0, result.stderr
    assert "can take (256 positions); using 256" in " ".join(result.stderr.split())
    meta = json.loads((tmp_path / "out" / "ptcli.json").read_text())
    assert meta["training"]["max_length"] == 256
    template = tmp_path / "many.txt"
    template.write_text("<text>" + "[P]" * 500 + "[MASK]", encoding="utf-8")
    assert_clean_error(invoke(*train_argv(models, review_files, tmp_path, template=template)), 1, "template alone")


def test_same_word_for_two_labels_is_refused(models, review_files, tmp_path):
    verbalizer = tmp_path / "v.json"
    verbalizer.write_text('{"pos": "好", "neg": "好"}', encoding="utf-8")
    assert_clean_error(invoke(*train_argv(models, review_files, tmp_path, verbalizer=verbalizer)), 1, "'好'")


def test_duplicate_columns_are_refused(models, review_files, art, tmp_path):
    data = tmp_path / "two_labels.csv"
    data.write_text("text,label,label\n好,pos,neg\n差,neg,pos\n", encoding="utf-8")
    argv = train_argv(models, review_files, tmp_path)
    assert_clean_error(invoke(argv[0], data, *argv[2:]), 1, "label")
    src = tmp_path / "notes.csv"
    src.write_text("id,text,note,note\n1,好,a,b\n", encoding="utf-8")
    assert_clean_error(invoke("predict", art, src, "-o", tmp_path / "p.csv"), 1, "note")


def test_non_finite_prompts_are_refused(art, rows, tmp_path):
    copy = tmp_path / "nan-art"
    shutil.copytree(art, copy)
    prompts = torch.zeros(2, 32)
    prompts[0, 0] = float("nan")
    save_file({"prompt_embeddings": prompts}, str(copy / "prompts.safetensors"))
    assert_clean_error(invoke("predict", copy, rows, "-o", tmp_path / "p.csv"), 1, "NaN")
    assert not (tmp_path / "p.csv").exists()


def test_hand_edited_artifact_is_one_line(art, rows, tmp_path):
    copy = tmp_path / "edited"
    shutil.copytree(art, copy)
    meta = json.loads((copy / "ptcli.json").read_text())
    meta["labels"].append("extra")
    (copy / "ptcli.json").write_text(json.dumps(meta), encoding="utf-8")
    assert_clean_error(invoke("predict", copy, rows), 1, "ptcli.json", "verbalizer")


def test_template_that_is_a_directory(models, review_files, tmp_path):
    assert_clean_error(invoke(*train_argv(models, review_files, tmp_path, template=tmp_path)), 1, "is a directory")


def test_data_from_a_pipe_is_read_once(models, review_files, tmp_path):
    fifo = tmp_path / "train.fifo"
    os.mkfifo(fifo)
    payload = review_files["train"].read_bytes()
    writer = subprocess.Popen(["sh", "-c", f"cat '{review_files['train']}' > '{fifo}'"])
    try:
        argv = train_argv(models, review_files, tmp_path)
        result = invoke(argv[0], fifo, *argv[2:], "--format", "csv")
    finally:
        writer.wait(timeout=30)
    assert payload and result.exit_code == 0, result.stderr


# --- usage errors, signals ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [["train", "x.csv"], ["train", "x.csv", "--template", "t", "--epochs", "abc"],
                                  ["frobnicate"], ["predict"]])
def test_usage_errors_are_one_line(argv):
    result = invoke(*argv)
    assert_clean_error(result, 2)
    assert "╭" not in result.stderr and "Usage:" not in result.stderr and "--help" in result.stderr


def test_sigterm_during_predict_leaves_nothing(art, tmp_path):
    src = tmp_path / "big.csv"
    pd.DataFrame({"text": [f"很棒的东西{i}" * 20 for i in range(30000)]}).to_csv(src, index=False)
    dst = tmp_path / "pred.csv"
    proc = subprocess.Popen([sys.executable, "-m", "ptcli", "--threads", "1", "predict", str(art), str(src), "-o",
                             str(dst), "--device", "cpu"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".pred.csv.*")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)  # wait until the temporary output exists: predict is under way
    assert proc.poll() is None, "predict ended before it could be interrupted; give it more rows"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert not dst.exists() and not list(tmp_path.glob(".pred.csv.*")), list(tmp_path.iterdir())
    assert "Traceback" not in err


def test_many_labels_train_fast_and_keep_the_metadata_small(models, tmp_path):
    import tiny

    vocab = [line.strip() for line in tiny.chinese_vocab().read_text(encoding="utf-8").splitlines()]
    labels = [w for w in vocab if len(w) == 1 and "\u4e00" <= w <= "\u9fff"][:300]
    rng = np.random.default_rng(0)
    rows = [(f"{label}{''.join(rng.choice(labels, 3))}", label) for label in labels for _ in range(2)]
    data = tmp_path / "intents.csv"
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(data, index=False)
    template = tmp_path / "t.txt"
    template.write_text("<text>[P][MASK]", encoding="utf-8")
    result = invoke("train", data, "--template", template, "--model", models["bert"], "-o", tmp_path / "art",
                    "--epochs", 1, "--device", "cpu", "--batch-size", 32)
    assert result.exit_code == 0, result.stderr
    meta = json.loads((tmp_path / "art" / "ptcli.json").read_text())
    assert len(meta["labels"]) == 300 and meta["dev_metrics"]["per_class"] is None
    assert (tmp_path / "art" / "ptcli.json").stat().st_size < 200_000
    report = json.loads(invoke("eval", tmp_path / "art", data, "--device", "cpu", "--json").stdout)
    assert report["n"] == 600 and report["confusion"] is None and len(report["per_class"]) == 300
