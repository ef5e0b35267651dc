import pytest
import torch

from ptcli.classifier import Classifier
from ptcli.console import err
from ptcli.loading import load_backbone
from ptcli.template import Template
from ptcli.verbalizer import Verbalizer

WORDS = {"a": "great", "b": "bad", "c": "terrible movie"}  # 1, 1 and 2 tokens
TEXTS = ["the movie was great", "a boring film and bad plot really bad", "fun"]
TEMPLATES = {
    "end": "[P] <text> It was [MASK]",
    "end_literal": "<text>\n[P][P] It was [MASK].",
    "middle": "[P] It was [MASK]! [P]<text>",
}


def build(models, name, template):
    bb = load_backbone(str(models[name]), device="cpu", precision="fp32")
    verbalizer = Verbalizer(labels=list(WORDS), words=[[w] for w in WORDS.values()])
    return bb, Classifier.build(bb, Template.parse(template), verbalizer, max_length=64, warn_template=False)


def naive(bb, row, prompts, word):
    """Full-sequence scoring without a cache: log P(word, after | before), one row, one word."""
    head = bb.prefix_special or ([] if row.before.ids else [bb.start_id])
    ids = head + row.before.ids + word + row.after.ids
    pidx = [-1] * len(head) + row.before.prompt + [-1] * len(word) + row.after.prompt
    ids_t, pidx_t = torch.tensor([ids]), torch.tensor(pidx)
    embeds = bb.input_embeddings(ids_t.clamp(min=0))
    embeds[0, pidx_t >= 0] = prompts[pidx_t[pidx_t >= 0]]
    logp = bb.model(inputs_embeds=embeds).logits.log_softmax(-1)[0]
    start = len(head) + len(row.before.ids)
    total = 0.0
    for pos in range(start, len(ids)):
        if pidx[pos] < 0:
            total += logp[pos - 1, ids[pos]]
    return total


@pytest.mark.parametrize("name", ["gpt2", "qwen2", "llama"])
@pytest.mark.parametrize("where", list(TEMPLATES))
def test_cached_scoring_equals_naive(models, name, where):
    bb, clf = build(models, name, TEMPLATES[where])
    prompts = torch.randn(clf.template.n_prompts, bb.hidden_size)
    rows = clf.encode(TEXTS)
    got = bb.score(rows, prompts, clf.word_ids)
    for r, row in enumerate(rows):
        for w, word in enumerate(clf.word_ids):
            assert torch.allclose(got[r, w], torch.as_tensor(naive(bb, row, prompts, word)), atol=1e-4), (r, w)


@pytest.mark.parametrize("name", ["gpt2", "qwen2", "llama"])
def test_batch_equals_one_by_one(models, name):
    bb, clf = build(models, name, TEMPLATES["middle"])
    prompts = torch.randn(clf.template.n_prompts, bb.hidden_size)
    rows = clf.encode(TEXTS)  # different lengths: left padding in the prefix, right padding in continuations
    batch = bb.score(rows, prompts, clf.word_ids)
    single = torch.cat([bb.score([r], prompts, clf.word_ids) for r in rows])
    assert torch.allclose(batch, single, atol=1e-5)


def test_multi_token_words_are_summed_not_padded(models):
    bb, clf = build(models, "gpt2", TEMPLATES["end"])
    assert [len(w) for w in clf.word_ids] == [1, 1, 2]
    rows = clf.encode(TEXTS[:1])
    prompts = torch.zeros(1, bb.hidden_size)
    alone = bb.score(rows, prompts, [clf.word_ids[2]])
    together = bb.score(rows, prompts, clf.word_ids)
    assert torch.allclose(alone[0, 0], together[0, 2], atol=1e-5)


@pytest.mark.parametrize("where", ["end", "middle"])
def test_only_pairs_with_something_past_the_first_token_run(models, where, monkeypatch):
    bb, clf = build(models, "gpt2", TEMPLATES[where])
    rows = clf.encode(TEXTS)
    body, continued = bb._body, []

    def spy(**kw):
        if not kw.get("use_cache"):  # the continuation passes; the prefix keeps its cache
            continued.append(kw["inputs_embeds"].shape[0])
        return body(**kw)

    monkeypatch.setattr(bb, "_body", spy)
    bb.score(rows, torch.randn(clf.template.n_prompts, bb.hidden_size), clf.word_ids)
    # Slot at the end: only the two-token word has a second token to score. In the middle every word is followed by
    # the rest of the row, so every pair runs.
    assert sum(continued) == len(rows) * (1 if where == "end" else len(clf.word_ids))


def test_gradient_flows_through_the_cache(models):
    bb, clf = build(models, "qwen2", TEMPLATES["end"])
    prompts = torch.randn(1, bb.hidden_size, requires_grad=True)
    clf.logits(clf.encode(TEXTS), prompts).sum().backward()
    assert prompts.grad.abs().sum() > 0


def test_mlm_shaped_template_warns(models):
    bb = load_backbone(str(models["gpt2"]), device="cpu", precision="fp32")
    warnings = bb.template_warnings(Template.parse("[P][MASK][MASK]<text>"))
    assert any("before an input" in w for w in warnings) and any("2 [MASK]" in w for w in warnings)
    assert bb.template_warnings(Template.parse("<text> It was [MASK]")) == []
    with err.capture() as cap:
        Classifier.build(bb, Template.parse("[MASK]<text>"), Verbalizer.default(["great", "bad"]), 64)
    assert "before an input" in cap.get()
    with err.capture() as cap:  # read text first: nothing to warn about, the new order is said once
        Classifier.build(bb, Template.parse("[MASK]<text>"), Verbalizer.default(["great", "bad"]), 64,
                         text_first=True)
    assert "before an input" not in cap.get() and "go first" in cap.get()


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_text_first_scores_the_reordered_template(models, name):
    bb = load_backbone(str(models[name]), device="cpu", precision="fp32")
    verbalizer = Verbalizer(labels=list(WORDS), words=[[w] for w in WORDS.values()])
    written = Template.parse(TEMPLATES["middle"])
    first = Classifier.build(bb, written, verbalizer, 64, warn_template=False, text_first=True)
    moved = Classifier.build(bb, written.inputs_first(), verbalizer, 64, warn_template=False)
    as_written = Classifier.build(bb, written, verbalizer, 64, warn_template=False)
    prompts = torch.randn(written.n_prompts, bb.hidden_size)
    got = first.logits(first.encode(TEXTS), prompts)
    assert torch.allclose(got, moved.logits(moved.encode(TEXTS), prompts), atol=1e-5)
    assert not torch.allclose(got, as_written.logits(as_written.encode(TEXTS), prompts), atol=1e-3)
    assert first.template is written  # the artifact keeps the template as the user wrote it


def test_text_first_moves_the_input_with_its_name_unless_told_format_4s_rule(models):
    bb = load_backbone(str(models["gpt2"]), device="cpu", precision="fp32")
    verbalizer = Verbalizer(labels=list(WORDS), words=[[w] for w in WORDS.values()])
    written = Template.parse("[P] It was [MASK]. Review: <text>")
    prompts = torch.randn(written.n_prompts, bb.hidden_size)
    scores = {}
    for names in (True, False):
        clf = Classifier.build(bb, written, verbalizer, 64, warn_template=False, text_first=True,
                               text_first_names=names)
        same = Classifier.build(bb, written.inputs_first(names), verbalizer, 64, warn_template=False)
        scores[names] = clf.logits(clf.encode(TEXTS), prompts)
        assert torch.allclose(scores[names], same.logits(same.encode(TEXTS), prompts), atol=1e-5)
    assert not torch.allclose(scores[True], scores[False], atol=1e-3)  # the two rules read differently


@pytest.mark.parametrize("name", ["gpt2", "qwen2", "llama"])
@pytest.mark.parametrize("template", ["[P] <text> It was [MASK]", "<text>\n[P][P] It was [MASK]"])
def test_single_token_fast_path_equals_the_general_path(models, name, template, monkeypatch):
    bb, clf = build(models, name, template)
    words = clf.word_ids[:2]  # one token each, nothing after the slot: the fast path
    assert all(len(w) == 1 for w in words)
    prompts = torch.randn(clf.template.n_prompts, bb.hidden_size)
    rows = clf.encode(TEXTS)
    continuations = []
    original = bb._continuations
    monkeypatch.setattr(bb, "_continuations", lambda *a: continuations.append(1) or original(*a))
    fast = bb.score(rows, prompts, words)
    assert not continuations  # no second pass at all
    # the general path: a two-token word forces continuations; its single-token neighbours must score the same
    general = bb.score(rows, prompts, [*words, clf.word_ids[2]])
    assert continuations and torch.allclose(fast, general[:, :2], atol=1e-5)


@pytest.mark.parametrize("name", ["gpt2", "qwen2", "llama"])
@pytest.mark.parametrize("template", ["[P][P] It was [MASK] review: <text>", "[P] It was [MASK]! [P]<text> ok"])
def test_chunked_scorer_equals_full_logits_with_gradients(models, name, template):
    bb, clf = build(models, name, template)
    bb.chunk_tokens = bb.train_chunk_tokens = 10  # many small chunks, checkpointed while training
    bb.head_chunk = 3
    base = torch.randn(clf.template.n_prompts, bb.hidden_size)
    rows = clf.encode(TEXTS)
    p1 = base.clone().requires_grad_(True)
    got = bb.score(rows, p1, clf.word_ids)
    got.sum().backward()
    p2 = base.clone().requires_grad_(True)
    want = torch.stack([torch.stack([torch.as_tensor(naive(bb, row, p2, w)) for w in clf.word_ids]) for row in rows])
    want.sum().backward()
    assert torch.allclose(got, want, atol=1e-4)
    assert p1.grad.abs().sum() > 0 and torch.allclose(p1.grad, p2.grad, atol=1e-4, rtol=1e-3)


def test_chunked_scorer_never_builds_full_vocabulary_logits_per_position(models, monkeypatch):
    """The LM head sees at most `head_chunk` positions at once, and never the whole model's logits."""
    bb, clf = build(models, "qwen2", "[P] It was [MASK] review: <text>")
    bb.head_chunk = 4
    seen = []
    head = bb._head
    monkeypatch.setattr(bb, "_head", lambda h: seen.append(h.shape[0]) or head(h))
    monkeypatch.setattr(bb.model, "forward", lambda *a, **k: pytest.fail("full model forward: logits everywhere"))
    bb.score(clf.encode(TEXTS), torch.randn(1, bb.hidden_size), clf.word_ids)
    assert seen and max(seen) <= max(4, len(TEXTS))


@pytest.mark.parametrize("name", ["gpt2", "qwen2"])
def test_shared_template_run_follows_the_prompts_it_was_built_with(models, name):
    # Inference runs the rows' common leading tokens ([P] included) once and keeps that cache; new prompts must not
    # reuse a cache built from the old ones.
    bb, clf = build(models, name, "[P][P] Review: <text> It was [MASK]")
    rows = clf.encode(TEXTS)
    for seed in (0, 1):
        prompts = torch.randn(clf.template.n_prompts, bb.hidden_size, generator=torch.Generator().manual_seed(seed))
        with torch.inference_mode():
            got = bb.score(rows, prompts, clf.word_ids)
        for r, row in enumerate(rows):
            for w, word in enumerate(clf.word_ids):
                want = torch.as_tensor(naive(bb, row, prompts, word))
                assert torch.allclose(got[r, w], want, atol=1e-4), (seed, r, w)


def test_inference_runs_the_shared_leading_tokens_once(models):
    bb, clf = build(models, "qwen2", "[P][P] Review: <text> It was [MASK]")
    rows = clf.encode(TEXTS)
    prompts = torch.randn(clf.template.n_prompts, bb.hidden_size)
    shared = len(clf.encode(["x"])[0].before.ids) - 1  # "[P][P] Review:" and what else every row starts with
    assert shared >= 3
    ran = []
    body = bb._body
    bb._body = lambda **kw: ran.append(kw["inputs_embeds"].shape[:2]) or body(**kw)
    with torch.inference_mode():
        bb.score(rows, prompts, clf.word_ids)
        first = sum(b * n for b, n in ran)
        ran.clear()
        bb.score(rows, prompts, clf.word_ids)  # same prompts: the shared run is not repeated
        again = sum(b * n for b, n in ran)
    bb._body = body
    prompts.requires_grad_(True)
    ran.clear()
    bb._body = lambda **kw: ran.append(kw["inputs_embeds"].shape[:2]) or body(**kw)
    bb.score(rows, prompts, clf.word_ids)  # training: every row runs its whole prefix, for the gradients
    bb._body = body
    training = sum(b * n for b, n in ran)
    assert again < first < training


def test_shared_template_run_is_not_kept_while_the_backbone_trains(models):
    # --tune-backbone: the weights move between dev evaluations while the prompts (here none) stay the same.
    bb = load_backbone(str(models["qwen2"]), device="cpu", precision="fp32", trainable=True)
    verbalizer = Verbalizer(labels=list(WORDS), words=[[w] for w in WORDS.values()])
    clf = Classifier.build(bb, Template.parse("Review: <text> It was [MASK]"), verbalizer, max_length=64,
                           warn_template=False)
    rows = clf.encode(TEXTS)
    with torch.inference_mode():
        before = bb.score(rows, None, clf.word_ids)
    with torch.no_grad():
        for p in bb.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    with torch.inference_mode():
        after = bb.score(rows, None, clf.word_ids)
    for r, row in enumerate(rows):
        for w, word in enumerate(clf.word_ids):
            with torch.no_grad():
                want = torch.as_tensor(naive(bb, row, torch.zeros(1, bb.hidden_size), word))  # no [P] to fill
            assert torch.allclose(after[r, w], want, atol=1e-4), (r, w)
    assert not torch.allclose(before, after)


@pytest.mark.parametrize("text_first", [True, False])
def test_text_first_is_recorded_and_predict_reads_the_same_order(models, tmp_path, text_first):
    import pandas as pd
    from test_chat import predicted_loss

    from ptcli import artifact
    from ptcli.errors import PtcliError
    from ptcli.peft_export import check_exportable
    from ptcli.train import TrainArgs, train

    rows = [("the movie was great fun", "a"), ("a bad boring film", "b")] * 4
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(tmp_path / "train.csv", index=False)
    (tmp_path / "t.txt").write_text("[P][P] It was [MASK]: <text>\n")
    (tmp_path / "v.json").write_text('{"a": "great", "b": "bad"}')
    result = train(TrainArgs(data=tmp_path / "train.csv", template=tmp_path / "t.txt", verbalizer=tmp_path / "v.json",
                             model=str(models["gpt2"]), dev=tmp_path / "train.csv", output=tmp_path / "art",
                             device="cpu", precision="fp32", epochs=1, text_first=text_first, demos=0,
                             calibrate="none"))  # no bias fit after the dev scoring that predict must reproduce
    meta = artifact.load(result.artifact).meta
    assert meta.text_first is text_first and meta.template.text == "[P][P] It was [MASK]: <text>"
    assert (meta.read_template().source == "<text>\n[P][P] It was [MASK]:") is text_first
    if text_first:  # PEFT prepends its virtual tokens: with the text read first, the [P] no longer lead
        with pytest.raises(PtcliError, match="has text before a"):
            check_exportable(artifact.load(result.artifact))
    assert predicted_loss(result.artifact, tmp_path / "train.csv", tmp_path) == pytest.approx(meta.dev_metrics.loss,
                                                                                             abs=1e-4)
