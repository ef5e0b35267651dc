"""--demos: the demonstrations' choice and order, the shared prefix (cached once on causal backbones, prepended on
masked LMs), its length limit, and its round trip through the artifact to predict."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from ptcli import artifact
from ptcli.artifact import Demonstration
from ptcli.classifier import Classifier
from ptcli.demos import ALL, AUTO, AUTO_PER_LABEL, choose, parse_count, resolve, separator
from ptcli.errors import PtcliError, UsageError
from ptcli.loading import load_backbone
from ptcli.predict import PredictArgs, predict
from ptcli.template import Encoded, Part, Template
from ptcli.train import TrainArgs, train
from ptcli.verbalizer import Verbalizer

WORDS = {"a": "great", "b": "bad", "c": "terrible movie"}  # 1, 1 and 2 tokens
TEXTS = ["the movie was great", "a boring film and bad plot really bad", "fun"]
DEMOS = [Demonstration("the acting was wonderful", "a"), Demonstration("a very boring plot", "b"),
         Demonstration("awful film", "c"), Demonstration("loved it", "a")]
TEMPLATES = {
    "end": "[P] <text> It was [MASK]",
    "end_literal": "<text>\n[P][P] It was [MASK].",
    "middle": "[P] It was [MASK]! [P]<text>",
    "no_prompt": "<text> It was [MASK]",
}


def build(models, name, template, demos=DEMOS, **kw):
    bb = load_backbone(str(models[name]), device="cpu", precision="fp32")
    verbalizer = Verbalizer(labels=list(WORDS), words=[[w] for w in WORDS.values()])
    return bb, Classifier.build(bb, Template.parse(template), verbalizer, max_length=64, warn_template=False,
                                demos=demos, **kw)


def naive(bb, row, prompts, word, context_prompts=None):
    """log P(word, after | special tokens, context, before) from one uncached forward pass of the whole sequence;
    the context's [P] take `context_prompts` (default: `prompts`)."""
    head = bb.prefix_special + row.context.ids
    ids = head + row.before.ids + word + row.after.ids
    pidx = torch.tensor([-1] * len(bb.prefix_special) + row.context.prompt + row.before.prompt + [-1] * len(word)
                        + row.after.prompt)
    embeds = bb.input_embeddings(torch.tensor([ids]).clamp(min=0))
    if prompts is not None and bool((pidx >= 0).any()):
        shown = prompts if context_prompts is None else context_prompts
        in_context = torch.arange(len(ids)) < len(head)
        vectors = torch.where(in_context.unsqueeze(-1), shown[pidx.clamp(min=0)], prompts[pidx.clamp(min=0)])
        embeds = torch.where((pidx >= 0).unsqueeze(-1), vectors, embeds[0]).unsqueeze(0)
    logp = bb.model(inputs_embeds=embeds).logits.log_softmax(-1)[0]
    start = len(head) + len(row.before.ids)
    return sum(logp[pos - 1, ids[pos]] for pos in range(start, len(ids)) if pidx[pos] < 0)


def test_choice_is_seeded_per_label_and_interleaved():
    df = pd.DataFrame({"text": [f"t{i}" for i in range(9)], "label": list("aaaaabbbc")})
    two = choose(df, 2, seed=3, text_col="text", label_col="label")
    assert two == choose(df, 2, seed=3, text_col="text", label_col="label")  # same seed, same rows, same order
    assert [d.label for d in two].count("a") == 2 and [d.label for d in two].count("b") == 2
    assert [d.label for d in two].count("c") == 1  # a label with fewer rows gives all it has
    assert {d.label for d in two[:3]} == {"a", "b", "c"} and {d.label for d in two[3:]} == {"a", "b"}  # rounds
    every = choose(df, ALL, seed=3, text_col="text", label_col="label")
    assert sorted(d.text for d in every) == sorted(df["text"])
    assert {d.text for d in choose(df, 5, seed=3, text_col="text", label_col="label")} == set(df["text"])
    for d in two:  # each demonstration is a real row with its own label
        assert df.loc[df["text"] == d.text, "label"].item() == d.label


def test_parse_count():
    assert parse_count("3") == 3 and parse_count("all") == ALL and parse_count("0") == 0
    for bad in ("x", "-2", "1.5"):
        with pytest.raises(UsageError, match="--demos"):
            parse_count(bad)


@pytest.mark.parametrize("name", ["gpt2", "qwen2", "llama"])
@pytest.mark.parametrize("where", list(TEMPLATES))
def test_cached_prefix_scores_equal_the_full_sequence(models, name, where):
    bb, clf = build(models, name, TEMPLATES[where])
    context = clf.encoder.context
    assert context is not None and len(context.ids) > 20
    prompts = torch.randn(clf.template.n_prompts, bb.hidden_size) if clf.template.n_prompts else None
    rows = clf.encode(TEXTS)
    assert all(row.context is context for row in rows)
    assert context.has_prompts == bool(clf.template.n_prompts)  # the demonstrations carry the template's [P]
    got = bb.score(rows, prompts, clf.word_ids)
    cached = context.cache[bb]
    assert bb.score(rows, prompts, clf.word_ids).shape == got.shape and context.cache[bb] is cached  # computed once
    for r, row in enumerate(rows):
        for w, word in enumerate(clf.word_ids):
            assert torch.allclose(got[r, w], torch.as_tensor(naive(bb, row, prompts, word)), atol=1e-4), (r, w)
    if prompts is None:
        return
    # Other prompts: the context's cache is computed again with them, and the first prompts' scores come back.
    other = torch.randn_like(prompts)
    moved = bb.score(rows, other, clf.word_ids)
    assert torch.allclose(moved[0, 0], torch.as_tensor(naive(bb, rows[0], other, clf.word_ids[0])), atol=1e-4)
    assert not torch.allclose(moved, got, atol=1e-3)
    assert torch.allclose(bb.score(rows, prompts, clf.word_ids), got, atol=1e-6)


@pytest.mark.parametrize("name", ["qwen2", "llama"])
def test_gradient_reaches_the_prompts_through_the_rows_own_prompts_only(models, name):
    """The demonstrations' [P] are the current prompts held constant (causal.py `_context_cache`): the gradient is
    the one of a sequence whose context shows the prompts detached."""
    bb, clf = build(models, name, TEMPLATES["end_literal"])
    rows = clf.encode(TEXTS[:2])
    prompts = torch.randn(clf.template.n_prompts, bb.hidden_size, requires_grad=True)
    bb.score(rows, prompts, clf.word_ids)[:, 0].sum().backward()
    reference = torch.randn_like(prompts).copy_(prompts.detach()).requires_grad_(True)
    sum(naive(bb, row, reference, clf.word_ids[0], context_prompts=reference.detach()) for row in rows).backward()
    assert prompts.grad.abs().sum() > 0
    assert torch.allclose(prompts.grad, reference.grad, atol=1e-4)
    # …which is not the gradient through the context as well
    full = prompts.detach().clone().requires_grad_(True)
    sum(naive(bb, row, full, clf.word_ids[0]) for row in rows).backward()
    assert not torch.allclose(full.grad, reference.grad, atol=1e-4)


def test_demonstrations_carry_the_templates_prompts(models):
    _, clf = build(models, "qwen2", TEMPLATES["end_literal"])
    context = clf.encoder.context
    index = [p for p in context.prompt if p >= 0]
    assert index == [0, 1] * len(DEMOS)  # each demonstration has the template's two [P], in order
    _, old = build(models, "qwen2", TEMPLATES["end_literal"], demo_prompts=False)  # format 3-7's rule
    assert not old.encoder.context.has_prompts
    plain = [i for i, p in zip(context.ids, context.prompt, strict=True) if p < 0]
    assert plain == old.encoder.context.ids  # otherwise the same tokens


def test_rows_per_pass_bound_changes_no_score(models):
    bb, clf = build(models, "qwen2", TEMPLATES["middle"])
    prompts = torch.randn(clf.template.n_prompts, bb.hidden_size)
    rows = clf.encode(TEXTS)
    whole = bb.score(rows, prompts, clf.word_ids)
    bb.cache_bytes = 1  # one row per pass, one (row, word) pair per continuation chunk
    assert torch.allclose(bb.score(rows, prompts, clf.word_ids), whole, atol=1e-5)


def test_gradient_flows_after_the_cache_was_built_under_inference_mode(models):
    bb, clf = build(models, "llama", TEMPLATES["end"])
    prompts = torch.randn(1, bb.hidden_size, requires_grad=True)
    rows = clf.encode(TEXTS)
    clf.predict_proba(rows, prompts.detach(), batch_size=2)  # dev evaluation first, as train() does
    clf.logits(rows, prompts).sum().backward()
    assert prompts.grad.abs().sum() > 0


def test_masked_lm_prepends_the_demonstrations(models):
    bb = load_backbone(str(models["roberta"]), device="cpu", precision="fp32")
    verbalizer = Verbalizer(labels=["a", "b"], words=[["great"], ["bad"]])
    template = Template.parse("[P]<text> It was [MASK].")
    clf = Classifier.build(bb, template, verbalizer, 64, warn_template=False, demos=DEMOS[:2])
    context = clf.encoder.context
    # Each demonstration: the template with its [P], its label word in the slot, then the separator.
    text = bb.tokenizer.decode([i for i, p in zip(context.ids, context.prompt, strict=True) if p < 0])
    assert text == "the acting was wonderful It was great.\n\na very boring plot It was bad.\n\n"
    sep = separator(bb.tokenizer)
    second = next(i for i in range(len(context.ids)) if context.ids[i : i + len(sep)] == sep) + len(sep)
    assert [i for i, p in enumerate(context.prompt) if p >= 0] == [0, second]  # before each demonstration's text
    prompts = torch.randn(1, bb.hidden_size)
    rows = clf.encode(TEXTS)
    by_hand = [Encoded(Part(context.ids + r.before.ids, context.prompt + r.before.prompt), r.after) for r in rows]
    assert torch.allclose(bb.score(rows, prompts, clf.word_ids), bb.score(by_hand, prompts, clf.word_ids), atol=1e-6)


def test_demonstrations_beyond_the_position_limit_are_one_line_error(models):
    many = [Demonstration(" ".join(["the movie was great"] * 10), "a")] * 20  # ~800 tokens; tiny models take 256
    with pytest.raises(PtcliError, match=r"--demos/--chat: the shared prefix .* takes \d+ tokens .* fewer --demos"):
        build(models, "gpt2", TEMPLATES["end"], demos=many)


def _write(path, rows):
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(path, index=False)
    return path


def test_train_records_demonstrations_and_predict_rebuilds_the_prefix(models, tmp_path):
    import random

    rng = random.Random(0)
    words = {"pos": ["great", "wonderful", "fun", "loved"], "neg": ["bad", "terrible", "awful", "boring"]}

    def rows(n):
        return [(f"the film was {rng.choice(words[lab])} and {rng.choice(words[lab])}", lab)
                for lab in ["pos", "neg"] * (n // 2)]

    data, dev = _write(tmp_path / "train.csv", rows(8)), _write(tmp_path / "dev.csv", rows(10))
    (tmp_path / "t.txt").write_text("[P] Review: <text>\nSentiment: [MASK]\n")
    (tmp_path / "v.json").write_text('{"pos": "good", "neg": "bad"}')

    def run(out, **kw):
        return train(TrainArgs(data=data, template=tmp_path / "t.txt", verbalizer=tmp_path / "v.json",
                               model=str(models["gpt2"]), dev=dev, output=tmp_path / out, device="cpu",
                               precision="fp32", epochs=2, batch_size=4, encoder="mlp", seed=7, calibrate="none",
                               **kw))  # no bias fit after the dev scoring that predict must reproduce

    result = run("art", demos=2)
    assert all(math.isfinite(h["train_loss"]) for h in result.history) and len(result.history) == 2
    meta = artifact.load(result.artifact).meta
    assert [d.label for d in meta.demonstrations].count("pos") == 2 and len(meta.demonstrations) == 4
    assert set(d.text for d in meta.demonstrations) <= set(pd.read_csv(data)["text"])
    assert meta.training.args["demos"] == 2 and not meta.chat and meta.demo_prompts
    assert artifact.load(run("again", demos=2).artifact).meta.demonstrations == meta.demonstrations  # seeded
    assert len(artifact.load(run("all", demos=ALL).artifact).meta.demonstrations) == 8

    # predict scores the dev rows exactly as training's own dev evaluation did, demonstrations included
    predict(PredictArgs(artifact=result.artifact, input=dev, output=tmp_path / "pred.csv", device="cpu",
                        precision="fp32"))
    pred = pd.read_csv(tmp_path / "pred.csv")
    gold = np.array([row[f"prob_{row['label']}"] for _, row in pred.iterrows()])
    assert -np.mean(np.log(gold)) == pytest.approx(meta.dev_metrics.loss, abs=1e-4)

    # as a format-7 artifact (no demo_prompts: demonstrations without [P]) the same files predict otherwise
    raw = json.loads((result.artifact / artifact.META).read_text())
    raw.pop("demo_prompts")
    raw["format_version"] = 7
    (result.artifact / artifact.META).write_text(json.dumps(raw, ensure_ascii=False))
    assert artifact.load(result.artifact).meta.demo_prompts is False
    predict(PredictArgs(artifact=result.artifact, input=dev, output=tmp_path / "old.csv", device="cpu",
                        precision="fp32"))
    old = pd.read_csv(tmp_path / "old.csv")
    assert not np.allclose(old["prob_pos"], pred["prob_pos"], atol=1e-4)


def test_artifact_fields_are_optional_and_checked(tiny_artifact):
    raw = json.loads((tiny_artifact / artifact.META).read_text())
    assert raw["demonstrations"] == [] and raw["chat"] is False
    for key in ("demonstrations", "chat"):  # artifacts from before these options load unchanged
        raw.pop(key)
    meta = artifact.parse_meta(json.dumps(raw), "old.json")
    assert meta.demonstrations == [] and meta.chat is False
    label = raw["labels"][0]
    cases = {"unknown label": ({"demonstrations": [{"text": "x", "label": "nope"}]}, "demonstrations: label"),
             "text_b": ({"demonstrations": [{"text": "x", "label": label, "text_b": "y"}]}, "demonstrations: each"),
             "chat on mlm": ({"chat": True}, "chat: only a causal")}
    for name, (extra, message) in cases.items():
        with pytest.raises(PtcliError, match=message):
            artifact.parse_meta(json.dumps({**raw, **extra}), "x.json")
        assert name


def test_auto_shows_two_rows_per_label_only_where_the_text_moved_before_the_slot():
    assert parse_count("auto") == AUTO and parse_count(" Auto ") == AUTO
    assert resolve(AUTO, moved=True) == AUTO_PER_LABEL > 0 and resolve(AUTO, moved=False) == 0
    assert resolve(3, moved=False) == 3 and resolve(0, moved=True) == 0 and resolve(ALL, moved=False) == ALL


@pytest.mark.parametrize(("model", "template", "text_first", "shown"), [
    ("gpt2", "[P] It was [MASK]! <text>", True, AUTO_PER_LABEL),  # slot before the text, read text first
    ("gpt2", "[P] It was [MASK]! <text>", False, 0),  # read as written
    ("gpt2", "[P] <text> It was [MASK]", True, 0),  # slot already after the text
    ("bert", "[P] It was [MASK]! <text>", True, 0),  # a masked LM reads both sides as written
])
def test_train_default_demos_is_auto(models, tmp_path, model, template, text_first, shown):
    rows = [(f"the film was {w} {i}", lab) for i, (w, lab) in enumerate([("great", "pos"), ("bad", "neg")] * 8)]
    data = _write(tmp_path / "train.csv", rows)
    (tmp_path / "t.txt").write_text(template + "\n")
    (tmp_path / "v.json").write_text('{"pos": "good", "neg": "bad"}')
    result = train(TrainArgs(data=data, template=tmp_path / "t.txt", verbalizer=tmp_path / "v.json",
                             model=str(models[model]), output=tmp_path / "a", device="cpu", precision="fp32",
                             epochs=1, batch_size=4, encoder="mlp", seed=1, text_first=text_first))
    meta = artifact.load(result.artifact).meta
    assert TrainArgs.__dataclass_fields__["demos"].default == AUTO
    assert len(meta.demonstrations) == 2 * shown and meta.training.args["demos"] == shown  # the count used
    assert all(d.text in {r[0] for r in rows} for d in meta.demonstrations)
    card = (result.artifact / artifact.CARD).read_text(encoding="utf-8")
    assert ("shown as demonstrations (with the template's [P]" in card) == bool(shown)
    assert ("reads it text first" in card) == (model == "gpt2" and text_first and "!" in template)


def test_auto_trains_without_demonstrations_that_do_not_fit(models, tmp_path, capsys):
    long = " ".join(["the movie was great fun"] * 40)  # ~200 tokens a row; four demonstrations pass 256 positions
    data = _write(tmp_path / "train.csv", [(long, "pos"), (long.replace("great", "bad"), "neg")] * 4)
    (tmp_path / "t.txt").write_text("[P] It was [MASK]! <text>\n")
    (tmp_path / "v.json").write_text('{"pos": "good", "neg": "bad"}')
    base = dict(data=data, template=tmp_path / "t.txt", verbalizer=tmp_path / "v.json", model=str(models["gpt2"]),
                device="cpu", precision="fp32", epochs=1, batch_size=4, encoder="mlp", seed=1, max_length=220)
    result = train(TrainArgs(output=tmp_path / "a", **base))
    assert artifact.load(result.artifact).meta.demonstrations == []
    assert "--demos auto" in capsys.readouterr().err
    with pytest.raises(PtcliError, match="fewer --demos"):  # asked for by count, the error stands
        train(TrainArgs(output=tmp_path / "b", demos=2, **base))


def test_auto_resume_keeps_the_artifacts_demonstrations(models, tmp_path):
    rows = [(f"the film was {w} {i}", lab) for i, (w, lab) in enumerate([("great", "pos"), ("bad", "neg")] * 8)]
    data = _write(tmp_path / "train.csv", rows)
    (tmp_path / "t.txt").write_text("[P] It was [MASK]! <text>\n")
    (tmp_path / "v.json").write_text('{"pos": "good", "neg": "bad"}')
    base = dict(data=data, template=tmp_path / "t.txt", verbalizer=tmp_path / "v.json", model=str(models["gpt2"]),
                device="cpu", precision="fp32", epochs=1, batch_size=4, encoder="mlp", seed=1)
    none = train(TrainArgs(output=tmp_path / "none", demos=0, **base)).artifact
    auto = train(TrainArgs(output=tmp_path / "auto", **base)).artifact
    for start, per_label in ((none, 0), (auto, AUTO_PER_LABEL)):
        resumed = train(TrainArgs(output=tmp_path / f"again-{per_label}", resume=start, **base)).artifact
        meta = artifact.load(resumed).meta
        assert len(meta.demonstrations) == 2 * per_label and meta.training.args["demos"] == per_label
