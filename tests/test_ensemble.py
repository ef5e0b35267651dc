"""Ensembles: `predict A1 A2 … INPUT` and `eval A1 A2 … DATA` average the members' probabilities on one backbone.

Members: the shared `tiny_artifact` (labels pos, neg) and a second artifact on the same tiny BERT with another
template, another seed and its labels in the other order (neg, pos), so alignment is exercised on every test.
Probabilities are read from JSONL, which keeps every digit.
"""

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from test_cli import assert_clean_error, invoke

from ptcli import artifact, ensemble
from ptcli.classifier import Classifier

LABELS = ["pos", "neg"]


@pytest.fixture(scope="module")
def second(models, review_files, tmp_path_factory):
    d = tmp_path_factory.mktemp("ensemble-second")
    (d / "template.txt").write_text("[P]<text>[P]总之很[MASK]\n", encoding="utf-8")
    (d / "verbalizer.json").write_text('{"neg": "差", "pos": "好"}', encoding="utf-8")
    result = invoke("train", review_files["train"], "--template", d / "template.txt", "--model", models["bert"],
                    "--verbalizer", d / "verbalizer.json", "-o", d / "art", "--epochs", 1, "--seed", 7,
                    "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    return d / "art"


@pytest.fixture(scope="module")
def first(tiny_artifact, second):
    assert artifact.load(tiny_artifact).labels == LABELS  # precondition: the members order their labels differently
    assert artifact.load(second).labels == LABELS[::-1]
    return tiny_artifact


@pytest.fixture(scope="module")
def rows(review_files):
    return review_files["test"]


def predict_jsonl(tmp_path, name, *args):
    out = tmp_path / f"{name}.jsonl"
    result = invoke("predict", *args, "-o", out, "--device", "cpu", "--json")
    assert result.exit_code == 0, result.stderr
    return pd.read_json(out, lines=True, dtype=False, precise_float=True), json.loads(result.stdout)


def probs(df, labels=LABELS):
    return df[[f"prob_{label}" for label in labels]].to_numpy(dtype=np.float64)


@pytest.fixture(scope="module")
def members(first, second, rows, tmp_path_factory):
    """Each member predicted alone, and the two as an ensemble in both orders."""
    d = tmp_path_factory.mktemp("ensemble-preds")
    return {"a": predict_jsonl(d, "a", first, rows)[0], "b": predict_jsonl(d, "b", second, rows)[0],
            "ab": predict_jsonl(d, "ab", first, second, rows), "ba": predict_jsonl(d, "ba", second, first, rows),
            "dir": d}


def test_an_ensemble_of_one_is_the_artifact(first, rows, members):
    """One artifact goes through the ensemble code: its probabilities are exactly the classifier's own."""
    art = artifact.load(first)
    clf, prompts = Classifier.from_artifact(art, device="cpu")
    texts = pd.read_csv(rows, dtype=str, keep_default_na=False)["text"].tolist()
    direct = clf.predict_proba(clf.encode(texts), prompts, batch_size=32)
    assert np.array_equal(probs(members["a"], clf.labels), direct)
    assert np.array_equal(ensemble.load([first], device="cpu").predict_proba(texts, None, 32), direct)
    assert members["a"]["pred"].tolist() == [clf.labels[i] for i in direct.argmax(1)]


def test_two_members_average_their_probabilities(members):
    a, b = probs(members["a"]), probs(members["b"])  # both by label name: b's columns come in another order
    ab, summary = members["ab"]
    gap = np.abs(a - b).max(1)
    differ = gap > 1e-3
    assert differ.sum() >= 10, "precondition: the two members must disagree on some rows"
    mean = probs(ab)
    np.testing.assert_allclose(mean, (a + b) / 2, rtol=0, atol=1e-12)
    assert (np.abs(mean - a).max(1)[differ] > 4e-4).all() and (np.abs(mean - b).max(1)[differ] > 4e-4).all()
    assert np.allclose(mean.sum(1), 1.0)
    assert ab["confidence"].to_numpy() == pytest.approx(mean.max(1), abs=1e-12)
    assert ab["pred"].tolist() == [LABELS[i] for i in mean.argmax(1)]
    assert summary["members"] == 2 and len(summary["artifacts"]) == 2 and summary["rows"] == len(ab)


def test_label_columns_follow_the_first_artifact(members, first, second):
    ab, ba = members["ab"][0], members["ba"][0]
    assert [c for c in ab.columns if c.startswith("prob_")] == ["prob_pos", "prob_neg"]
    assert [c for c in ba.columns if c.startswith("prob_")] == ["prob_neg", "prob_pos"]
    np.testing.assert_allclose(probs(ab), probs(ba), rtol=0, atol=1e-15)  # same numbers, by label


def test_the_backbone_is_loaded_once(first, second, rows, review_files, tmp_path, monkeypatch):
    calls = []
    real = ensemble.load_backbone

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(ensemble, "load_backbone", counting)
    third = tmp_path / "third"
    shutil.copytree(second, third)  # a third member: a copy under another path is a distinct artifact
    predict_jsonl(tmp_path, "abc", first, second, third, rows)
    assert len(calls) == 1
    result = invoke("eval", first, second, third, review_files["test"], "--device", "cpu", "--json")
    assert result.exit_code == 0, result.stderr
    assert len(calls) == 2


def test_eval_scores_the_mean(first, second, review_files, members):
    result = invoke("eval", first, second, review_files["test"], "--device", "cpu", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    ab = members["ab"][0]
    gold = pd.read_csv(review_files["test"], dtype=str, keep_default_na=False)["label"]
    assert report["accuracy"] == pytest.approx(float((ab["pred"] == gold).mean()), abs=1e-12)
    assert report["members"] == 2 and report["artifacts"] == [str(first), str(second)]
    # The ensemble's predictions file scores the same without a model (--predictions mode is unchanged).
    again = json.loads(invoke("eval", "--predictions", members["dir"] / "ab.jsonl", "--json").stdout)
    assert again["accuracy"] == report["accuracy"] and again["confusion"] == report["confusion"]
    assert again["ece"] == pytest.approx(report["ece"], abs=1e-12)
    one = json.loads(invoke("eval", first, review_files["test"], "--device", "cpu", "--json").stdout)
    assert one["artifact"] == str(first) and one["members"] == 1


# --- refused: one line, non-zero exit, nothing written, no model loaded --------------------------------------------

def edited(src, dst, change):
    shutil.copytree(src, dst)
    meta = json.loads((dst / "ptcli.json").read_text(encoding="utf-8"))
    change(meta)
    (dst / "ptcli.json").write_text(json.dumps(meta), encoding="utf-8")
    return dst


def other_labels(meta):
    meta["labels"] = ["pos", "bad"]
    meta["verbalizer"] = {"pos": meta["verbalizer"]["pos"], "bad": meta["verbalizer"]["neg"]}


def pair_template(meta):
    meta["template"]["text"] = "<text>。<text_b>[P][P]很[MASK]"
    meta["columns"]["text_b"] = "text_b"


@pytest.fixture
def no_model(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a backbone was loaded before the members were checked")

    monkeypatch.setattr(ensemble, "load_backbone", refuse)


@pytest.fixture(scope="module")
def other_backbone(models, review_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("ensemble-other") / "art"
    result = invoke("train", review_files["train"], "--template", review_files["template"], "--model",
                    models["bert_other"], "--verbalizer", review_files["verbalizer"], "-o", out, "--epochs", 1,
                    "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    return out


def test_incompatible_members_are_refused(first, second, other_backbone, rows, review_files, tmp_path, no_model):
    labels = edited(first, tmp_path / "labels", other_labels)
    pair = edited(first, tmp_path / "pair", pair_template)
    out = tmp_path / "out" / "p.csv"
    out.parent.mkdir()
    cases = [
        ((first, labels), ("labels differ", str(labels), "'bad'", "'neg'")),
        ((first, other_backbone), ("different backbones", str(first), str(other_backbone), "fingerprint")),
        ((second, pair), ("second text column", str(pair), str(second))),
        ((first, tmp_path / "nothing"), ("not an artifact directory", "nothing")),
        ((first, rows), (str(rows), "ARTIFACT... INPUT", "-o")),  # `predict A INPUT OUT`: forgot -o
    ]
    for members_, fragments in cases:
        assert_clean_error(invoke("predict", *members_, rows, "-o", out, "--device", "cpu"), 1, *fragments)
        assert_clean_error(invoke("eval", *members_, review_files["test"], "--device", "cpu"), 1, *fragments)
    assert not list(out.parent.iterdir())


def test_a_repeated_artifact_is_refused(first, second, rows, tmp_path, no_model):
    link = tmp_path / "link"
    os.symlink(first, link)
    for members_ in ((first, first), (first, second, link)):
        result = invoke("predict", *members_, rows, "-o", tmp_path / "p.csv", "--device", "cpu")
        assert_clean_error(result, 2, "the same artifact is given twice")
    assert_clean_error(invoke("eval", first, first, rows), 2, "twice")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link"]


def test_the_output_may_not_lie_in_any_member(first, second, rows, tmp_path, no_model):
    for target in (second / "p.csv", second, rows):
        result = invoke("predict", first, second, rows, "-o", target, "--device", "cpu")
        assert result.exit_code == 1, result.stderr
    assert_clean_error(invoke("predict", first, second, rows, "-o", second / "p.csv"), 1, "inside the artifact",
                       str(second))
    assert not (second / "p.csv").exists()


def test_members_trained_on_other_column_names_warn(first, tmp_path, capsys):
    renamed = edited(first, tmp_path / "renamed", lambda meta: meta["columns"].update(text="sentence"))
    arts = ensemble.load_artifacts([first, renamed])
    assert ensemble.input_columns(arts, None, None) == ("text", None)
    assert "'sentence'" in capsys.readouterr().err
    assert ensemble.input_columns(arts, "body", None) == ("body", None)  # chosen: nothing to warn about
    assert capsys.readouterr().err == ""
