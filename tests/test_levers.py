"""The three training levers end to end on tiny models: --prompt-init, --calibrate and --select."""

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

import ptcli.train as train_module
from ptcli import artifact, selection
from ptcli.classifier import Classifier
from ptcli.errors import PtcliError, UsageError
from ptcli.evaluate import EvalArgs, evaluate
from ptcli.label_bias import FIT_L2, content_free_bias
from ptcli.loading import load_backbone
from ptcli.predict import PredictArgs, predict
from ptcli.template import Template
from ptcli.train import TrainArgs, initial_encoder, train
from ptcli.verbalizer import Verbalizer


def args(files, model, tmp_path, **kw):
    base = dict(data=files["train"], template=files["template"], model=str(model), verbalizer=files["verbalizer"],
                output=tmp_path / "art", device="cpu", precision="fp32", epochs=2, seed=0)
    base.update(kw)
    return TrainArgs(**base)


def classifier(a):
    backbone = load_backbone(a.model, device="cpu", precision="fp32")
    verbalizer = Verbalizer.load(a.verbalizer, ["pos", "neg"])
    return Classifier.build(backbone, Template.load(a.template), verbalizer, a.max_length)


def prompts_of(result):
    return load_file(str(result.artifact / "prompts.safetensors"))["prompt_embeddings"]


@pytest.mark.parametrize("init", ["random", "vocab"])
def test_initial_encoder_is_where_train_starts(models, review_files, tmp_path, init):
    a = args(review_files, models["bert"], tmp_path, prompt_init=init, epochs=1, lr=1e-12)
    result = train(a)  # a negligible lr: whichever epoch is kept, the prompts are the untrained ones
    with torch.no_grad():
        start = initial_encoder(a, classifier(a))()
    assert torch.allclose(prompts_of(result), start, atol=1e-5)
    assert artifact.load(result.artifact).meta.encoder.init == init


def test_vocab_prompts_start_at_token_embeddings_and_resume(models, review_files, tmp_path):
    a = args(review_files, models["bert"], tmp_path, prompt_init="vocab")
    clf = classifier(a)
    with torch.no_grad():
        start = initial_encoder(a, clf)()
    weight = clf.backbone.input_embeddings.weight.detach()
    nearest = torch.cdist(start, weight).min(dim=1).values
    assert float(nearest.max()) < 1e-6  # every untrained prompt is a token's embedding
    assert not torch.equal(start, initial_encoder(args(review_files, models["bert"], tmp_path, prompt_init="vocab",
                                                       seed=1), clf)())
    first = train(a)
    resumed = train(args(review_files, models["bert"], tmp_path, prompt_init="vocab", output=tmp_path / "b",
                         resume=first.artifact, lr=1e-12, epochs=1))
    assert torch.allclose(prompts_of(first), prompts_of(resumed), atol=1e-5)  # the base came back with the state
    # --prompt-init does not matter once trained weights replace the start: resume follows the artifact's init,
    # either way round (artifacts trained before vocab became the default resume under the new default).
    other = train(args(review_files, models["bert"], tmp_path, prompt_init="random", output=tmp_path / "c",
                       resume=first.artifact, lr=1e-12, epochs=1))
    assert artifact.load(other.artifact).meta.encoder.init == "vocab"
    assert torch.allclose(prompts_of(first), prompts_of(other), atol=1e-5)
    old = train(args(review_files, models["bert"], tmp_path, prompt_init="random", output=tmp_path / "d", epochs=1))
    again = train(args(review_files, models["bert"], tmp_path, output=tmp_path / "e", resume=old.artifact,
                       lr=1e-12, epochs=1))
    assert artifact.load(again.artifact).meta.encoder.init == "random"
    assert torch.allclose(prompts_of(old), prompts_of(again), atol=1e-5)
    with pytest.raises(PtcliError, match="its encoder"):
        train(args(review_files, models["bert"], tmp_path, encoder="mlp", output=tmp_path / "f", resume=old.artifact))


def predicted_probs(result, data, tmp_path):
    out = tmp_path / "pred.csv"
    predict(PredictArgs(artifact=result.artifact, input=data, output=out, device="cpu", precision="fp32"))
    df = pd.read_csv(out, dtype=str, keep_default_na=False)
    return df[[f"prob_{label}" for label in result.labels]].astype(float).to_numpy()


def unbiased_probs(result, data):
    clf, prompts = Classifier.from_artifact(artifact.load(result.artifact), device="cpu", precision="fp32")
    clf.label_bias = None
    texts = pd.read_csv(data, dtype=str, keep_default_na=False)["text"].tolist()
    return clf, prompts, clf.predict_proba(clf.encode(texts), prompts, 32)


def shifted(p, bias):
    """p × exp(bias), renormalised: what adding a log-space bias does to probabilities."""
    q = p * np.exp(np.asarray(bias))
    return q / q.sum(1, keepdims=True)


@pytest.mark.parametrize("mode", ["contextual", "bias"])
def test_calibration_is_stored_reloaded_and_applied_everywhere(models, review_files, tmp_path, monkeypatch, mode):
    real_fit = train_module.fit
    # keep the last epoch whatever the dev rows say, so the artifact holds trained prompts (and a trained bias)
    monkeypatch.setattr(train_module, "fit", lambda *a, **kw: real_fit(*a[:5], replace(a[5], select="last"), **kw))
    result = train(args(review_files, models["bert"], tmp_path, calibrate=mode, dev=review_files["test"], lr=0.05))
    assert result.best_epoch == 2
    meta = artifact.load(result.artifact).meta
    assert meta.training.calibrate == mode and meta.label_bias == result.label_bias
    assert len(meta.label_bias) == 2 and all(math.isfinite(b) for b in meta.label_bias)
    clf, prompts, p = unbiased_probs(result, review_files["test"])
    if mode == "contextual":  # −log p_cf of the kept prompts
        assert np.allclose(content_free_bias(clf, prompts).numpy(), meta.label_bias, atol=1e-5)
    else:  # trained from zero: it moved (how far depends on the batches; Adam moves it at every step)
        assert any(b != 0.0 for b in meta.label_bias)
    # predict applies it...
    assert np.allclose(predicted_probs(result, review_files["test"], tmp_path), shifted(p, meta.label_bias),
                       atol=1e-5)
    # ...and so did training's dev evaluation: eval on the same dev rows reproduces the recorded dev metrics
    report = evaluate(EvalArgs(artifact=result.artifact, data=review_files["test"], device="cpu", precision="fp32"))
    assert report["accuracy"] == pytest.approx(result.dev["accuracy"])


def test_calibrate_fit_is_the_best_bias_of_every_labeled_row_and_predict_applies_it(models, review_files, tmp_path):
    result = train(args(review_files, models["bert"], tmp_path, calibrate="fit"))
    meta = artifact.load(result.artifact).meta
    assert meta.training.calibrate == "fit" and meta.label_bias == result.label_bias and result.n_dev > 0
    clf, prompts, p = unbiased_probs(result, review_files["test"])
    data = pd.read_csv(review_files["train"], dtype=str, keep_default_na=False)  # training and dev rows alike
    scores, _ = clf.words_and_states(clf.encode(data["text"].tolist()), prompts, 8)
    y = torch.tensor([clf.labels.index(v) for v in data["label"]])
    bias = torch.tensor(meta.label_bias, requires_grad=True)
    objective = torch.nn.functional.cross_entropy(scores + bias, y) + 0.5 * FIT_L2 * bias.pow(2).sum()
    assert float(torch.autograd.grad(objective, bias)[0].abs().max()) < 1e-4  # stationary on all DATA rows
    assert np.allclose(predicted_probs(result, review_files["test"], tmp_path), shifted(p, meta.label_bias),
                       atol=1e-5)


def test_the_trained_bias_moves_at_its_own_rate(models, review_files, tmp_path, monkeypatch):
    real_fit = train_module.fit
    monkeypatch.setattr(train_module, "fit", lambda *a, **kw: real_fit(*a[:5], replace(a[5], select="last"), **kw))
    moved = {}
    for bias_lr in (1e-3, 0.1):
        result = train(args(review_files, models["bert"], tmp_path, calibrate="bias", bias_lr=bias_lr, lr=1e-3,
                            output=tmp_path / f"b{bias_lr}"))
        moved[bias_lr] = max(abs(b) for b in result.label_bias)
        # Adam moves a parameter by at most about its rate a step (warmup and decay only shrink the steps)
        steps = sum(1 for _ in result.history) * math.ceil(result.n_train / 8)
        assert moved[bias_lr] <= 1.1 * bias_lr * steps
    assert moved[0.1] > 10 * moved[1e-3] > 0  # the prompts' rate would not have moved it this far
    with pytest.raises(PtcliError, match="--bias-lr"):
        train(args(review_files, models["bert"], tmp_path, calibrate="bias", bias_lr=-1.0))


def test_dev_loss_keeps_the_lowest_dev_loss(models, review_files, tmp_path):
    result = train(args(review_files, models["bert"], tmp_path, select="dev-loss", epochs=4, patience=4, lr=0.05))
    losses = [result.dev_untrained["loss"]] + [h["dev_loss"] for h in result.history]
    assert result.best_epoch == int(np.argmin(losses))
    assert result.select == "dev-loss" and artifact.load(result.artifact).meta.training.select == "dev-loss"


def _spy_fit(monkeypatch, first_best=None):
    """Record each fit call's (rows, evaluates, config, kept prompts); `first_best` forces the first run's best
    epoch."""
    calls = []
    real_fit = train_module.fit

    def spy(n_rows, step, evaluate, keep, optimizer, config, **kw):
        result = real_fit(n_rows, step, evaluate, keep, optimizer, config, **kw)
        if first_best is not None and not calls:
            result.best_epoch = first_best
        calls.append((n_rows, evaluate is not None, config, result.best[0]))
        return result

    monkeypatch.setattr(train_module, "fit", spy)
    return calls


def test_kfold_cross_validates_then_trains_on_every_row(models, review_files, tmp_path, monkeypatch):
    calls = _spy_fit(monkeypatch)
    monkeypatch.setattr(selection, "best_epoch", lambda reports: 1)  # force a trained final run
    result = train(args(review_files, models["bert"], tmp_path, select="kfold", epochs=2, patience=1))
    *cv, final = calls
    assert len(cv) == 4 and all(n == 24 and dev and c.epochs == 2 and c.select == "last" for n, dev, c, _ in cv)
    n, dev, c, _ = final
    assert n == 32 and not dev and c.epochs == 1 and c.schedule_epochs == 2  # all rows, stopped on the CV schedule
    assert result.best_epoch == 1 and result.folds == 4 and result.n_train == 32 and result.n_dev == 0
    assert result.final_seconds > 0
    assert result.dev["n"] == 32 and result.dev_untrained["n"] == 32  # out-of-fold: every row scored once
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert result.dev["accuracy"] == result.history[0]["dev_accuracy"]
    training = artifact.load(result.artifact).meta.training
    assert (training.select, training.folds, training.best_epoch, training.n_dev) == ("kfold", 4, 1, 0)


def test_kfold_chooses_by_the_pooled_reports(models, review_files, tmp_path):
    result = train(args(review_files, models["bert"], tmp_path, select="kfold", epochs=2, lr=0.05))
    reports = [result.dev_untrained] + [{"accuracy": h["dev_accuracy"], "loss": h["dev_loss"]}
                                        for h in result.history]
    assert result.best_epoch == selection.best_epoch(reports)


def test_refit_trains_again_on_training_and_dev_rows(models, review_files, tmp_path, monkeypatch):
    calls = _spy_fit(monkeypatch, first_best=1)
    result = train(args(review_files, models["bert"], tmp_path, epochs=2, patience=5, lr=0.05, refit=True))
    (n_sel, dev_sel, c_sel, selected), (n, dev, c, final) = calls
    assert (n_sel, dev_sel, c_sel.epochs) == (24, True, 2)
    assert n == 32 and not dev and c.epochs == 1 and c.schedule_epochs == 2 and c.select == "last"
    # the artifact keeps the second run's prompts, which differ from the first run's
    assert torch.equal(prompts_of(result), final) and not torch.allclose(final, selected)
    assert result.refit and result.n_train == 32 and result.n_dev == 8 and result.best_epoch == 1
    assert result.final_seconds > 0 and len(result.history) == 2  # the second run's time, apart from the epochs
    meta = artifact.load(result.artifact).meta
    assert meta.training.refit and meta.training.n_train == 32 and sum(meta.training.train_counts.values()) == 32
    assert "--refit" in (result.artifact / "README.md").read_text(encoding="utf-8")


def test_refit_skips_when_the_untrained_prompts_are_kept(models, review_files, tmp_path, monkeypatch):
    calls = _spy_fit(monkeypatch, first_best=0)
    result = train(args(review_files, models["bert"], tmp_path, epochs=1, refit=True))
    assert len(calls) == 1 and not result.refit and result.n_train == 24 and result.final_seconds == 0
    assert not artifact.load(result.artifact).meta.training.refit


@pytest.mark.parametrize(("change", "option"), [
    ({"prompt_init": "glove"}, "--prompt-init 'glove'"), ({"calibrate": "platt"}, "--calibrate 'platt'"),
    ({"select": "dev-f1"}, "--select 'dev-f1'"), ({"select": "kfold", "dev": "dev.csv"}, "--select kfold"),
    ({"select": "kfold", "tune_backbone": True}, "--tune-backbone: --select kfold"),
    ({"refit": True, "tune_backbone": True}, "--refit with --tune-backbone"),
])
def test_bad_lever_values_are_usage_errors(models, review_files, tmp_path, change, option):
    with pytest.raises(UsageError, match=option):
        train(args(review_files, models["bert"], tmp_path, **change))
