"""--head linear: the slot state each backbone exposes, the head's arithmetic, and training with it end to end."""

import json

import pytest
import torch
from safetensors.torch import load_file

from ptcli import artifact
from ptcli.artifact import Demonstration
from ptcli.classifier import Classifier
from ptcli.errors import UsageError
from ptcli.export import ExportArgs, export
from ptcli.head import FIT_L2, LabelHead
from ptcli.loading import load_backbone
from ptcli.predict import PredictArgs, predict
from ptcli.template import Template
from ptcli.train import TrainArgs, train
from ptcli.verbalizer import Verbalizer

CASES = {  # backbone: template, one-token words, texts of different lengths (so rows are padded)
    "gpt2": ("[P] <text> It was [MASK]", {"a": "great", "b": "bad"}),
    "qwen2": ("[P] It was [P][MASK]<text>", {"a": "great", "b": "bad"}),  # read text first: the slot ends it
    "roberta": ("[P] <text> It was [MASK].", {"a": "great", "b": "bad"}),
}
TEXTS = ["the movie was great", "a boring film and bad plot really bad", "fun"]


def build(models, name):
    source, words = CASES[name]
    bb = load_backbone(str(models[name]), device="cpu", precision="fp32")
    verbalizer = Verbalizer(labels=list(words), words=[[w] for w in words.values()])
    clf = Classifier.build(bb, Template.parse(source), verbalizer, max_length=64, warn_template=False,
                           text_first=True)
    return bb, clf


@pytest.mark.parametrize("name", list(CASES))
def test_the_state_is_what_the_lm_head_reads_the_slot_from(models, name):
    bb, clf = build(models, name)
    assert all(len(w) == 1 for w in clf.word_ids)  # one-token words: the score is one vocabulary row's log-prob
    prompts = torch.randn(clf.template.n_prompts, bb.hidden_size)
    with torch.no_grad():
        scores, states = bb.score_and_state(clf.encode(TEXTS), prompts, clf.word_ids)
        assert states.shape == (len(TEXTS), 2, bb.hidden_size) and states.dtype == torch.float32  # slot, mean
        logp = torch.log_softmax(bb._head(states[:, 0]).float(), dim=-1)
    words = [w[0] for w in clf.word_ids]
    assert torch.allclose(logp[:, words], scores, atol=1e-4)
    # score alone may run the template's shared leading run once for the batch (causal LMs): the same up to rounding
    assert torch.allclose(bb.score(clf.encode(TEXTS), prompts, clf.word_ids), scores, atol=1e-5)


@pytest.mark.parametrize("name", ["gpt2", "qwen2"])
def test_the_mean_state_averages_the_rows_own_positions(models, name):
    bb, clf = build(models, name)
    rows = clf.encode(TEXTS)
    prompts = torch.randn(clf.template.n_prompts, bb.hidden_size)
    by_hand = []
    with torch.no_grad():
        for row in rows:  # each row alone, unpadded, in one pass: every position up to the slot
            ids, pidx = bb._sequence(row)
            t = torch.tensor([ids])
            embeds = bb.embed(t, torch.tensor([pidx]), prompts)
            hidden = bb._body(inputs_embeds=embeds, attention_mask=torch.ones_like(t),
                              position_ids=torch.arange(len(ids)).unsqueeze(0)).last_hidden_state[0]
            by_hand.append(hidden.mean(0))
        evaluated = bb.score_and_state(rows, prompts, clf.word_ids)[1][:, 1]  # padded batch, one pass
    assert torch.allclose(evaluated, torch.stack(by_hand), atol=1e-4)
    trained = prompts.clone().requires_grad_()  # training's path: the part before the first [P] runs apart
    assert torch.allclose(bb.score_and_state(rows, trained, clf.word_ids)[1][:, 1].detach(), evaluated, atol=1e-4)


@pytest.mark.parametrize("name", ["gpt2", "qwen2"])
def test_the_mean_state_leaves_out_the_shared_context_but_not_the_shared_template_run(models, name):
    # Demonstrations are one cached context before every row; "[P][P] Review:" is a leading run every row shares,
    # which prediction runs once for the batch: its states count in each row's mean, the context's do not.
    bb = load_backbone(str(models[name]), device="cpu", precision="fp32")
    verbalizer = Verbalizer(labels=["a", "b"], words=[["great"], ["bad"]])
    clf = Classifier.build(bb, Template.parse("[P][P] Review: <text> It was [MASK]"), verbalizer, max_length=64,
                           warn_template=False, demos=[Demonstration("loved it", "a"), Demonstration("awful", "b")])
    rows = clf.encode(TEXTS)
    prompts = torch.randn(clf.template.n_prompts, bb.hidden_size)
    context = len(bb.prefix_special + rows[0].context.ids) - 1  # the row runs the context's last token itself
    by_hand = []
    with torch.no_grad():
        for row in rows:
            ids, pidx = bb._sequence(row)
            t = torch.tensor([ids])
            hidden = bb._body(inputs_embeds=bb.embed(t, torch.tensor([pidx]), prompts),
                              attention_mask=torch.ones_like(t),
                              position_ids=torch.arange(len(ids)).unsqueeze(0)).last_hidden_state[0]
            by_hand.append(hidden[context:].mean(0))
        seqs = [bb._sequence(r) for r in rows]
        run = bb._shared_past(rows, seqs, prompts)
        assert run.count > 2  # the template's leading run is shared, [P][P] and the anchor
        evaluated = bb.score_and_state(rows, prompts, clf.word_ids)[1][:, 1]
    assert torch.allclose(evaluated, torch.stack(by_hand), atol=1e-4)


def test_the_mlm_mean_state_does_not_depend_on_padding(models):
    bb, clf = build(models, "roberta")
    rows = clf.encode(TEXTS)
    prompts = torch.randn(clf.template.n_prompts, bb.hidden_size)
    with torch.no_grad():
        batch = bb.score_and_state(rows, prompts, clf.word_ids)[1]
        alone = torch.cat([bb.score_and_state([r], prompts, clf.word_ids)[1] for r in rows])
    assert torch.allclose(batch, alone, atol=1e-4)
    assert not torch.allclose(batch[:, 0], batch[:, 1], atol=1e-3)  # the mean is not the slot's state


def test_a_head_on_slot_and_mean_normalises_each_part():
    head = LabelHead(2, 3, ("slot", "mean"))
    assert head.weight.shape == (2, 6)
    w = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0, 1.0], [0.0, 2.0, -1.0, 1.0, 0.0, 0.0]])
    with torch.no_grad():
        head.weight.copy_(w)
        head.bias.copy_(torch.tensor([0.5, 0.0]))
    slot, mean = torch.tensor([3.0, 0.0, 4.0]), torch.tensor([1.0, 1.0, 1.0])
    x = torch.cat([slot / (25 / 3) ** 0.5, mean])  # each part at unit RMS
    expected = (w @ x) / 2**0.5 + torch.tensor([0.5, 0.0])
    assert torch.allclose(head(torch.stack([slot, 7 * mean]).unsqueeze(0)), expected.unsqueeze(0), atol=1e-5)
    only_slot = LabelHead(2, 3)
    with torch.no_grad():
        only_slot.weight.copy_(w[:, :3])
        only_slot.bias.copy_(head.bias)
    # a slot-only head (every artifact before format 7) ignores the mean
    a, b = torch.stack([slot, mean]).unsqueeze(0), torch.stack([slot, -mean]).unsqueeze(0)
    assert torch.equal(only_slot(a), only_slot(b))
    with pytest.raises(ValueError, match="features"):
        LabelHead(2, 3, ("cls",))


def test_the_head_reads_the_rms_normalised_state():
    head = LabelHead(2, 3)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, -1.0]]))
        head.bias.copy_(torch.tensor([0.5, 0.0]))
    state = torch.tensor([[[3.0, 0.0, 4.0], [1.0, 1.0, 1.0]]])  # slot (RMS = sqrt(25 / 3)), mean (not read)
    x = state[:, 0] / (25 / 3) ** 0.5
    expected = torch.tensor([[x[0, 0] + 0.5, 2 * x[0, 1] - x[0, 2]]])
    assert torch.allclose(head(state), expected, atol=1e-5)
    assert torch.allclose(head(100 * state), expected, atol=1e-5)  # the state's scale does not matter


def test_an_untrained_head_scores_as_the_words_do(models):
    bb, clf = build(models, "gpt2")
    rows, prompts = clf.encode(TEXTS), torch.randn(clf.template.n_prompts, bb.hidden_size)
    with torch.no_grad():
        words_only = clf.logits(rows, prompts)
        with clf.using(head=LabelHead(len(clf.labels), bb.hidden_size)):
            # equal up to rounding: with a head, the template's shared leading run is not batched (causal.py)
            assert torch.allclose(clf.logits(rows, prompts), words_only, atol=1e-5)
        trained = LabelHead(len(clf.labels), bb.hidden_size)
        trained.bias.fill_(1.0)
        trained.bias[0] = 3.0
        with clf.using(head=trained):
            assert torch.allclose(clf.logits(rows, prompts) - words_only, torch.tensor([3.0, 1.0]).expand(3, 2))
    assert clf.head is None  # using restores the classifier's own
    clf.label_bias = torch.tensor([0.5, 0.0])
    with clf.using(label_bias=None):
        assert clf.label_bias is None
    assert torch.equal(clf.label_bias, torch.tensor([0.5, 0.0]))
    with pytest.raises(TypeError, match="bais"), clf.using(bais=None):
        pass


def test_train_with_a_linear_head_end_to_end(models, review_files, tmp_path):
    base = dict(data=review_files["train"], template=review_files["template"], model=str(models["bert"]),
                verbalizer=review_files["verbalizer"], device="cpu", precision="fp32", epochs=3, seed=0, lr=0.01,
                dev=review_files["train"],  # the training rows as dev: what the head fits, the loss must show
                calibrate="none")  # by hand below: words + head, no label bias
    words = train(TrainArgs(**base, output=tmp_path / "words", head="words"))
    result = train(TrainArgs(**base, output=tmp_path / "linear", head="linear", head_init="zero"))
    assert result.dev_untrained == words.dev_untrained  # the head starts at zero: untrained, the words decide
    assert result.best_epoch > 0 and result.dev["loss"] < result.dev_untrained["loss"]
    art = artifact.load(result.artifact)
    assert art.meta.head == "linear" and art.head["head_weight"].shape == (2, 64)  # slot + mean, 32 wide each
    assert float(art.head["head_weight"].abs().sum()) > 0  # trained, not the zero start
    assert artifact.load(words.artifact).head is None

    # predict reads the head: its probabilities are the words' scores plus the head's, by hand
    out = predict(PredictArgs(artifact=result.artifact, input=review_files["test"], output=tmp_path / "p.csv",
                              device="cpu", precision="fp32"))
    assert out.rows == 200
    bb = load_backbone(str(models["bert"]), device="cpu", precision="fp32")
    clf, prompts = Classifier.for_artifact(art, bb)
    assert clf.head is not None
    import pandas as pd

    texts = pd.read_csv(review_files["test"])["text"].tolist()
    rows = clf.encode(texts)
    with torch.no_grad():
        scores, states = bb.score_and_state(rows, prompts, clf.word_ids)
        head = LabelHead.from_tensors(art.head, ("slot", "mean"))
        by_hand = torch.softmax(scores + head(states), dim=-1).numpy()
    written = pd.read_csv(tmp_path / "p.csv")
    assert abs(written[[f"prob_{label}" for label in clf.labels]].to_numpy() - by_hand).max() < 1e-4

    # --resume continues the artifact's head even when asked for the words alone
    again = train(TrainArgs(**{**base, "lr": 1e-12, "epochs": 1}, output=tmp_path / "resumed", resume=result.artifact,
                            head="words", head_refit=False))
    kept = artifact.load(again.artifact)
    assert kept.meta.head == "linear"
    assert torch.allclose(kept.head["head_weight"], art.head["head_weight"], atol=1e-6)

    # export keeps it: safetensors beside the prompts, json as lists
    export(ExportArgs(artifact=result.artifact, output=tmp_path / "x.safetensors"))
    tensors = load_file(str(tmp_path / "x.safetensors"))
    assert torch.equal(tensors["head_weight"], art.head["head_weight"])
    export(ExportArgs(artifact=result.artifact, output=tmp_path / "x.json"))
    data = json.loads((tmp_path / "x.json").read_text())
    assert data["head"] == "linear" and len(data["head_bias"]) == 2


def test_head_lr_sets_the_heads_rate_alone(models, review_files, tmp_path, monkeypatch):
    groups = []
    real = torch.optim.AdamW

    def spy(params, *a, **kw):
        groups.append([(len(g["params"]), g["lr"]) for g in params])
        return real(params, *a, **kw)

    monkeypatch.setattr(torch.optim, "AdamW", spy)
    base = dict(data=review_files["train"], template=review_files["template"], model=str(models["bert"]),
                verbalizer=review_files["verbalizer"], device="cpu", precision="fp32", epochs=3, seed=0, lr=0.01,
                head="linear", head_init="zero", head_refit=False,
                dev=review_files["train"])  # as the end-to-end test: an epoch is kept
    heads = {hl: artifact.load(train(TrainArgs(**base, output=tmp_path / str(hl), head_lr=hl)).artifact)
             for hl in (None, 1e-12)}
    n_head = len(list(LabelHead(2, 32).parameters()))
    assert groups[0][-1] == (n_head, 0.01) and groups[1][-1] == (n_head, 1e-12)  # default: the prompts' rate
    assert groups[0][0][1] == groups[1][0][1] == 0.01  # the prompts' rate is --lr either way
    assert heads[None].meta.training.best_epoch > 0 and float(heads[None].head["head_weight"].abs().max()) > 1e-6
    assert float(heads[1e-12].head["head_weight"].abs().max()) < 1e-9  # the head stayed at zero
    assert heads[1e-12].meta.training.args["head_lr"] == 1e-12
    with pytest.raises(UsageError, match="--head-lr"):
        train(TrainArgs(**base, output=tmp_path / "bad", head_lr=float("nan")))


def test_fit_is_the_regularised_logistic_regression_with_the_words_as_offset():
    g = torch.Generator().manual_seed(0)
    states = torch.randn(40, 2, 8, generator=g) * 5  # slot, mean; any scale: the head normalises it
    offset = torch.randn(40, 3, generator=g)
    y = (states[:, 0, 0] > 0).long() + (states[:, 0, 1] > 1).long()
    head = LabelHead(3, 8)

    def objective(h: LabelHead, l2: float) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(offset + h(states), y) + 0.5 * l2 * h.weight.pow(2).sum()

    at_zero = objective(LabelHead(3, 8), 0.01).item()
    final = head.fit(offset, states, y, l2=0.01)
    assert abs(final - objective(head, 0.01).item()) < 1e-5 and final < at_zero
    loss = objective(head, 0.01)
    grads = torch.autograd.grad(loss, [head.weight, head.bias])
    assert max(float(gr.abs().max()) for gr in grads) < 1e-3  # a stationary point of the convex objective: its minimum
    weaker = LabelHead(3, 8)
    weaker.fit(offset, states, y, l2=1.0)
    assert weaker.weight.detach().norm() < head.weight.detach().norm()  # the L2 weight shrinks it
    plain = LabelHead(3, 8)
    plain.fit(torch.zeros_like(offset), states, y, l2=0.01)
    assert not torch.allclose(plain.bias, head.bias, atol=1e-3)  # the offset is part of the fit


def test_head_init_fit_starts_training_at_the_probe(models, review_files, tmp_path):
    base = dict(data=review_files["train"], template=review_files["template"], model=str(models["bert"]),
                verbalizer=review_files["verbalizer"], device="cpu", precision="fp32", epochs=1, seed=0, lr=1e-12,
                head="linear", dev=review_files["train"])  # the training rows as dev: the fit must show in the loss
    zero = train(TrainArgs(**base, output=tmp_path / "zero", head_init="zero"))
    fitted = train(TrainArgs(**base, output=tmp_path / "fit"))  # the default
    assert fitted.dev_untrained["loss"] < zero.dev_untrained["loss"] - 1e-3  # untrained: words + the probe
    head = artifact.load(fitted.artifact).head
    assert float(head["head_weight"].abs().max()) > 1e-3  # kept the fitted head (lr 1e-12: nothing else moved)
    assert artifact.load(fitted.artifact).meta.training.args["head_init"] == "fit"
    with pytest.raises(UsageError, match="--head-init 'probe'"):
        train(TrainArgs(**base, output=tmp_path / "bad", head_init="probe"))


def test_an_unknown_head_is_a_usage_error(models, review_files, tmp_path):
    with pytest.raises(UsageError, match="--head 'mlp'"):
        train(TrainArgs(data=review_files["train"], template=review_files["template"], model=str(models["bert"]),
                        output=tmp_path / "a", head="mlp"))


def test_auto_is_linear_from_three_labels_on():
    from ptcli.head import AUTO_LINEAR_LABELS, resolve

    assert AUTO_LINEAR_LABELS == 3
    assert [resolve("auto", n) for n in (2, 3, 10)] == ["words", "linear", "linear"]
    assert resolve("words", 10) == "words" and resolve("linear", 2) == "linear"


def test_train_resolves_auto_by_the_number_of_labels(models, review_files, tmp_path):
    import pandas as pd

    base = dict(template=review_files["template"], model=str(models["bert"]), device="cpu", precision="fp32",
                epochs=1, seed=0)
    binary = train(TrainArgs(data=review_files["train"], verbalizer=review_files["verbalizer"],
                             output=tmp_path / "two", **base))
    assert binary.head == "words" and artifact.load(binary.artifact).head is None
    rows = pd.read_csv(review_files["train"])
    rows["label"] = ["好", "差", "中"] * (len(rows) // 3) + ["好"] * (len(rows) % 3)  # the labels are their own words
    rows.to_csv(tmp_path / "three.csv", index=False)
    three = train(TrainArgs(data=tmp_path / "three.csv", output=tmp_path / "three", **base))
    art = artifact.load(three.artifact)
    assert three.head == "linear" and art.meta.head == "linear" and art.head["head_weight"].shape == (3, 64)
    assert art.meta.training.args["head"] == "linear"  # the recorded args say what ran, not "auto"


def test_head_features_and_head_refit(models, review_files, tmp_path):
    import pandas as pd

    base = dict(data=review_files["train"], template=review_files["template"], model=str(models["bert"]),
                verbalizer=review_files["verbalizer"], device="cpu", precision="fp32", epochs=1, seed=0, lr=1e-12,
                head="linear", calibrate="none")  # lr 1e-12: the kept head is the fit alone
    once = train(TrainArgs(**base, output=tmp_path / "once", head_refit=False))
    refit = train(TrainArgs(**base, output=tmp_path / "refit"))  # the defaults: slot+mean, --head-refit
    assert not once.head_refit and refit.head_refit and refit.n_dev > 0
    art = artifact.load(refit.artifact)
    assert art.meta.head_features == ["slot", "mean"] and art.head["head_weight"].shape == (2, 64)
    assert art.meta.training.head_refit and not artifact.load(once.artifact).meta.training.head_refit

    # --head-refit's head is the fit on every row of DATA (training and dev) at the kept prompts
    bb = load_backbone(str(models["bert"]), device="cpu", precision="fp32")
    clf, prompts = Classifier.for_artifact(art, bb)
    df = pd.read_csv(review_files["train"])
    rows, y = clf.encode(df["text"].tolist()), torch.tensor([clf.labels.index(v) for v in df["label"]])
    offset, states = clf.words_and_states(rows, prompts, 8)

    def gradient(tensors):  # of the fit's objective on every row, at this head: ~0 only at its minimum
        h = LabelHead.from_tensors(tensors, ("slot", "mean"))
        loss = torch.nn.functional.cross_entropy(offset + h(states), y) + 0.5 * FIT_L2 * h.weight.pow(2).sum()
        return max(float(g.abs().max()) for g in torch.autograd.grad(loss, [h.weight, h.bias]))

    assert gradient(art.head) < 1e-3
    assert gradient(artifact.load(once.artifact).head) > 1e-2  # without it: the training rows' fit, not this one

    # predict reads both states: the words' scores plus the head's, by hand
    out = predict(PredictArgs(artifact=refit.artifact, input=review_files["test"], output=tmp_path / "p.csv",
                              device="cpu", precision="fp32"))
    texts = pd.read_csv(review_files["test"])["text"].tolist()
    with torch.no_grad():
        scores, states = bb.score_and_state(clf.encode(texts), prompts, clf.word_ids)
        probs = torch.softmax(scores + LabelHead.from_tensors(art.head, ("slot", "mean"))(states), -1).numpy()
    written = pd.read_csv(tmp_path / "p.csv")
    assert out.rows == len(texts)
    assert abs(written[[f"prob_{label}" for label in clf.labels]].to_numpy() - probs).max() < 1e-4

    # --calibrate fit (the default) fits a label bias first; the head refit's own bias then fits around it, so the
    # two predict as the head refit alone
    both = train(TrainArgs(**{**base, "calibrate": "fit"}, output=tmp_path / "both"))
    assert artifact.load(both.artifact).meta.label_bias is not None
    predict(PredictArgs(artifact=both.artifact, input=review_files["test"], output=tmp_path / "b.csv", device="cpu",
                        precision="fp32"))
    both_probs = pd.read_csv(tmp_path / "b.csv")[[f"prob_{label}" for label in clf.labels]].to_numpy()
    assert abs(both_probs - probs).max() < 5e-3  # one optimum, reached within L-BFGS's tolerance from two starts
    assert (both_probs.argmax(1) == probs.argmax(1)).all()

    # --resume keeps the artifact's features
    again = train(TrainArgs(**{**base, "head_features": "slot"}, output=tmp_path / "resumed", resume=refit.artifact))
    assert artifact.load(again.artifact).meta.head_features == ["slot", "mean"]
    with pytest.raises(UsageError, match="--head-features 'cls'"):
        train(TrainArgs(**{**base, "head_features": "cls"}, output=tmp_path / "bad"))
