import pytest
import torch

from ptcli.classifier import Classifier
from ptcli.errors import PtcliError
from ptcli.loading import load_backbone
from ptcli.template import Template
from ptcli.verbalizer import Verbalizer

CASES = {
    "bert": ("这是[P][P][MASK][MASK]评论:<text>", {"a": "电脑", "b": "水果"}, ["这破笔记本速度太慢了", "一点都不甜"]),
    "roberta": ("[P] <text> It was [MASK].", {"a": "great", "b": "bad"}, ["the movie was fun", "boring plot"]),
    "albert": ("<text> [P] It was [MASK][MASK][MASK][MASK] .", {"a": "great", "b": "bad"}, ["a film", "so bad"]),
}


def build(models, name):
    source, words, texts = CASES[name]
    bb = load_backbone(str(models[name]), device="cpu", precision="fp32")
    verbalizer = Verbalizer(labels=list(words), words=[[w] for w in words.values()])
    clf = Classifier.build(bb, Template.parse(source), verbalizer, max_length=64)
    return bb, clf, texts


@pytest.mark.parametrize("name", list(CASES))
def test_score_equals_full_model_logits(models, name):
    bb, clf, texts = build(models, name)
    rows = clf.encode(texts)
    prompts = torch.randn(clf.template.n_prompts, bb.hidden_size)
    got = bb.score(rows, prompts, clf.word_ids)
    for r, row in enumerate(rows):  # reference: the whole model, one row, full vocabulary logits
        k = clf.template.mask_count
        ids = bb.prefix_special + row.before.ids + [bb.mask_id] * k + row.after.ids + bb.suffix_special
        pidx = [-1] * len(bb.prefix_special) + row.before.prompt + [-1] * k + row.after.prompt + [-1] * len(
            bb.suffix_special)
        ids_t, pidx_t = torch.tensor([ids]), torch.tensor([pidx])
        embeds = bb.input_embeddings(ids_t.clamp(min=0))
        embeds[0, pidx_t[0] >= 0] = prompts[pidx_t[0][pidx_t[0] >= 0]]
        logp = bb.model(inputs_embeds=embeds).logits.log_softmax(-1)[0]
        start = len(bb.prefix_special) + len(row.before.ids)
        for w, word in enumerate(clf.word_ids):
            expected = sum(logp[start + j, t] for j, t in enumerate(word))
            assert torch.allclose(got[r, w], expected, atol=1e-4)


@pytest.mark.parametrize("name", list(CASES))
def test_batch_equals_one_by_one(models, name):
    bb, clf, texts = build(models, name)
    rows = clf.encode([*texts, "x"])
    prompts = torch.randn(clf.template.n_prompts, bb.hidden_size)
    batch = bb.score(rows, prompts, clf.word_ids)
    single = torch.cat([bb.score([r], prompts, clf.word_ids) for r in rows])
    assert torch.allclose(batch, single, atol=1e-5)


def test_gradient_reaches_prompts(models):
    bb, clf, texts = build(models, "bert")
    prompts = torch.randn(2, bb.hidden_size, requires_grad=True)
    clf.logits(clf.encode(texts), prompts).sum().backward()
    assert prompts.grad is not None and prompts.grad.abs().sum() > 0


def test_word_of_wrong_length_is_refused(models):
    bb = load_backbone(str(models["bert"]), device="cpu", precision="fp32")
    v = Verbalizer(labels=["a", "b"], words=[["电脑"], ["水"]])
    with pytest.raises(PtcliError) as e:
        Classifier.build(bb, Template.parse("[MASK][MASK]<text>"), v, 64, where="v.json")
    assert "'水'" in e.value.message and "['水']" in e.value.message and "2 [MASK]" in e.value.message


def test_word_with_unknown_tokens_is_refused(models):
    bb = load_backbone(str(models["bert"]), device="cpu", precision="fp32")
    v = Verbalizer(labels=["a", "b"], words=[["好"], ["😀"]])
    with pytest.raises(PtcliError, match="unknown to the"):
        Classifier.build(bb, Template.parse("[MASK]<text>"), v, 64)
