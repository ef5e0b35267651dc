import math

import pytest
import torch
from conftest import CHANCE
from safetensors.torch import load_file

from ptcli import artifact
from ptcli.errors import PtcliError
from ptcli.evaluate import EvalArgs, evaluate
from ptcli.train import TrainArgs, stratified_split, train


def args(files, model, tmp_path, **kw):
    base = dict(data=files["train"], template=files["template"], model=str(model), verbalizer=files["verbalizer"],
                output=tmp_path / "art", device="cpu", precision="fp32", epochs=15, seed=0)
    base.update(kw)
    return TrainArgs(**base)


def test_training_lifts_accuracy_from_chance(learning_task, tmp_path):
    result = train(args(learning_task, learning_task["model"], tmp_path, dev=learning_task["test"], epochs=30,
                        patience=10, seed=learning_task["seed"]))
    untrained, trained = result.dev_untrained, result.dev
    assert untrained["accuracy"] <= CHANCE, untrained  # the fixture's precondition, re-checked on this very run
    assert trained["accuracy"] >= 0.9, result.history
    assert trained["accuracy"] - untrained["accuracy"] >= 0.4, (untrained["accuracy"], trained["accuracy"])
    # the gold label's log-probability rises, not only the argmax: dev loss falls below chance and to under half
    assert trained["loss"] < math.log(2) / 2 and trained["loss"] < untrained["loss"] / 2, result.history
    # the artifact, reloaded, scores the held-out rows exactly as training's own dev evaluation did
    report = evaluate(EvalArgs(artifact=result.artifact, data=learning_task["test"], device="cpu", precision="fp32"))
    assert report["accuracy"] == pytest.approx(trained["accuracy"])


def test_same_seed_gives_bit_identical_prompts(models, review_files, tmp_path):
    a = train(args(review_files, models["bert"], tmp_path, output=tmp_path / "a", epochs=2))
    b = train(args(review_files, models["bert"], tmp_path, output=tmp_path / "b", epochs=2))
    c = train(args(review_files, models["bert"], tmp_path, output=tmp_path / "c", epochs=2, seed=1))
    pa, pb, pc = (load_file(str(r.artifact / "prompts.safetensors"))["prompt_embeddings"] for r in (a, b, c))
    assert torch.equal(pa, pb)
    assert not torch.equal(pa, pc)


@pytest.mark.parametrize("encoder", ["mlp", "none"])
def test_other_encoders_train(models, review_files, tmp_path, encoder):
    result = train(args(review_files, models["bert"], tmp_path, epochs=1, encoder=encoder))
    assert artifact.load(result.artifact).meta.encoder.kind == encoder


def test_stratified_split_keeps_every_class():
    labels = ["a"] * 8 + ["b"] * 4 + ["c"]
    train_idx, dev_idx = stratified_split(labels, 0.25, seed=0)
    assert sorted(train_idx + dev_idx) == list(range(13))
    assert [labels[i] for i in dev_idx].count("a") == 2 and [labels[i] for i in dev_idx].count("b") == 1
    assert "c" not in [labels[i] for i in dev_idx]  # a class of one stays in training


def test_single_class_and_unseen_dev_label(models, review_files, tmp_path):
    one = tmp_path / "one.csv"
    one.write_text("text,label\n好,pos\n棒,pos\n", encoding="utf-8")
    with pytest.raises(PtcliError, match="only one class"):
        train(args(review_files, models["bert"], tmp_path, data=one))
    dev = tmp_path / "dev.csv"
    dev.write_text("text,label\n好,pos\n一般,meh\n", encoding="utf-8")
    with pytest.raises(PtcliError, match="'meh'"):
        train(args(review_files, models["bert"], tmp_path, dev=dev))


def test_resume_continues_from_the_saved_encoder(models, review_files, tmp_path):
    first = train(args(review_files, models["bert"], tmp_path, output=tmp_path / "a", epochs=1))
    resumed = train(args(review_files, models["bert"], tmp_path, output=tmp_path / "b", epochs=1,
                         resume=first.artifact, lr=1e-12))
    # with a negligible lr the resumed encoder starts, and so stays, where the first run left it
    a = load_file(str(first.artifact / "prompts.safetensors"))["prompt_embeddings"]
    b = load_file(str(resumed.artifact / "prompts.safetensors"))["prompt_embeddings"]
    assert torch.allclose(a, b, atol=1e-5)
    other = tmp_path / "other.txt"
    other.write_text("<text>[P]很[MASK]", encoding="utf-8")
    with pytest.raises(PtcliError, match="another template"):
        train(args(review_files, models["bert"], tmp_path, output=tmp_path / "c", template=other,
                   resume=first.artifact))


def test_ctrl_c_leaves_no_artifact(models, review_files, tmp_path, monkeypatch):
    import ptcli.train as train_module

    calls = {"n": 0}
    real = torch.nn.utils.clip_grad_norm_

    def interrupt(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(train_module.torch.nn.utils, "clip_grad_norm_", interrupt)
    with pytest.raises(PtcliError) as e:
        train(args(review_files, models["bert"], tmp_path, epochs=3))
    assert e.value.exit_code == 130
    assert list(tmp_path.iterdir()) == []


def test_tune_backbone_saves_the_backbone(models, review_files, tmp_path):
    result = train(args(review_files, models["bert"], tmp_path, epochs=1, tune_backbone=True, backbone_lr=1e-3))
    art = artifact.load(result.artifact)
    assert (result.artifact / "backbone" / "config.json").is_file()
    assert art.meta.training.tuned_fingerprint != art.meta.backbone.fingerprint
    report = evaluate(EvalArgs(artifact=result.artifact, data=review_files["test"], device="cpu", precision="fp32"))
    assert report["n"] == 200


def test_a_loaded_backbone_can_be_reused(models, review_files, tmp_path):
    from ptcli.backbone import load_backbone

    backbone = load_backbone(str(models["bert"]), device="cpu", precision="fp32")
    a = train(args(review_files, models["bert"], tmp_path, output=tmp_path / "a", epochs=1))
    b = train(args(review_files, models["bert"], tmp_path, output=tmp_path / "b", epochs=1), backbone=backbone)
    pa, pb = (load_file(str(r.artifact / "prompts.safetensors"))["prompt_embeddings"] for r in (a, b))
    assert torch.equal(pa, pb)
