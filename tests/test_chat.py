"""--chat: the template inside the tokenizer's chat template, [P] kept, the slot opening the assistant's turn."""

import math
import shutil

import pandas as pd
import pytest
import torch
from test_demos import DEMOS, naive

from ptcli import artifact
from ptcli.classifier import Classifier
from ptcli.errors import PtcliError, UsageError
from ptcli.loading import load_backbone
from ptcli.peft_export import check_exportable
from ptcli.predict import PredictArgs, predict
from ptcli.template import Template
from ptcli.train import TrainArgs, train
from ptcli.verbalizer import Verbalizer

# A system turn, then the user's; the generation prompt opens the assistant's. <s> is the tiny tokenizer's special.
CHAT = ("<s>system\nBe brief.<|endoftext|>\n{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}"
        "<|endoftext|>\n{% endfor %}{% if add_generation_prompt %}<s>assistant\n{% endif %}")
VERBALIZER = Verbalizer(labels=["a", "b"], words=[["great"], ["bad"]])


@pytest.fixture(scope="module")
def chat_model(models, tmp_path_factory):
    from transformers import AutoTokenizer

    path = tmp_path_factory.mktemp("chat") / "gpt2-chat"
    shutil.copytree(models["gpt2"], path)
    tok = AutoTokenizer.from_pretrained(path)
    tok.chat_template = CHAT
    tok.save_pretrained(path)
    return path


def build(path, template, **kw):
    bb = load_backbone(str(path), device="cpu", precision="fp32")
    return bb, Classifier.build(bb, Template.parse(template), VERBALIZER, 64, warn_template=False, chat=True, **kw)


def full_text(bb, clf, row, label=0):
    return bb.tokenizer.decode(clf.encoder.context.ids + row.before.ids + clf.word_ids[label] + row.after.ids)


def test_the_row_is_the_user_turn_and_the_slot_opens_the_answer(chat_model):
    bb, clf = build(chat_model, "Review: <text>\nSentiment: [MASK]")
    row = clf.encode(["the movie was fun"])[0]
    turn = bb.tokenizer.apply_chat_template([{"role": "user", "content": "Review: the movie was fun\nSentiment:"}],
                                            tokenize=False, add_generation_prompt=True)
    assert full_text(bb, clf, row) == turn + "great"  # no space before the word at the start of the answer
    assert clf.word_ids[0] == bb.tokenize_word("great", space_before=False)


def test_prompts_keep_their_places_and_text_after_the_slot_stays_after(chat_model):
    bb, clf = build(chat_model, "[P]Review: <text>[P] It was [MASK], [P]really")
    row = clf.encode(["boring"])[0]
    before = bb.tokenizer.decode([i for i in row.before.ids if i >= 0])
    assert before == "Review: boring It was<|endoftext|>\n<s>assistant\n"
    assert [p for p in row.before.prompt if p >= 0] == [0, 1] and row.before.prompt[0] == 0
    assert [p for p in row.after.prompt if p >= 0] == [2]
    assert bb.tokenizer.decode([i for i in row.after.ids if i >= 0]) == ", really"


def test_demonstrations_go_in_the_user_turn(chat_model):
    bb, clf = build(chat_model, "[P]<text> It was [MASK]", demos=DEMOS[:2])
    row = clf.encode(["fun"])[0]
    context = clf.encoder.context
    shown = [i for i, p in zip(context.ids, context.prompt, strict=True) if p < 0]  # the demonstrations' [P] aside
    assert [p for p in context.prompt if p >= 0] == [0, 0]  # each demonstration carries the template's [P]
    text = bb.tokenizer.decode(shown + [i for i in row.before.ids if i >= 0])
    assert text == ("<s>system\nBe brief.<|endoftext|>\n<s>user\nthe acting was wonderful It was great\n\n"
                    "a very boring plot It was bad\n\nfun It was<|endoftext|>\n<s>assistant\n")


def test_chat_scores_equal_the_full_sequence(chat_model):
    bb, clf = build(chat_model, "[P]Review: <text> [P] It was [MASK], really", demos=[DEMOS[0], DEMOS[1], DEMOS[3]])
    prompts = torch.randn(2, bb.hidden_size)
    rows = clf.encode(["the movie was great", "a boring film and bad plot"])
    got = bb.score(rows, prompts, clf.word_ids)
    for r, row in enumerate(rows):
        for w, word in enumerate(clf.word_ids):
            assert torch.allclose(got[r, w], torch.as_tensor(naive(bb, row, prompts, word)), atol=1e-4), (r, w)


def test_masked_lm_or_no_chat_template_is_refused(models):
    for name, message in (("bert", "--chat: .* is a masked LM"), ("gpt2", "--chat: the .* tokenizer has no chat")):
        bb = load_backbone(str(models[name]), device="cpu", precision="fp32")
        with pytest.raises(UsageError, match=message):
            Classifier.build(bb, Template.parse("<text>很[MASK]"), Verbalizer(["a", "b"], [["好"], ["差"]]), 64,
                             chat=True)


def predicted_loss(art, data, tmp_path):
    """Mean −log p(gold) of `ptcli predict`'s output on `data`: equal to train's dev loss when predict reads the
    artifact exactly as training did (the data being the dev rows)."""
    predict(PredictArgs(artifact=art, input=data, output=tmp_path / "p.csv", device="cpu", precision="fp32"))
    pred = pd.read_csv(tmp_path / "p.csv")
    gold = [row[f"prob_{row['label']}"] for _, row in pred.iterrows()]
    return -sum(map(math.log, gold)) / len(gold)


def test_chat_is_recorded_and_predict_uses_it(chat_model, tmp_path):
    rows = [("the movie was great fun", "a"), ("a bad boring film", "b")] * 4
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(tmp_path / "train.csv", index=False)
    (tmp_path / "t.txt").write_text("[P] Review: <text>\nSentiment: [MASK]\n")
    (tmp_path / "v.json").write_text('{"a": "great", "b": "bad"}')
    result = train(TrainArgs(data=tmp_path / "train.csv", template=tmp_path / "t.txt", verbalizer=tmp_path / "v.json",
                             model=str(chat_model), dev=tmp_path / "train.csv", output=tmp_path / "art", device="cpu",
                             precision="fp32", epochs=1, encoder="mlp", chat=True,
                             calibrate="none"))  # no bias fit after the dev scoring that predict must reproduce
    meta = artifact.load(result.artifact).meta
    assert meta.chat and meta.training.args["chat"] is True
    assert meta.word_ids[0] == load_backbone(str(chat_model), device="cpu").tokenize_word("great", False)
    with pytest.raises(PtcliError, match="--chat, whose shared prefix goes before the"):
        check_exportable(artifact.load(result.artifact))
    assert predicted_loss(result.artifact, tmp_path / "train.csv", tmp_path) == pytest.approx(meta.dev_metrics.loss,
                                                                                             abs=1e-4)
