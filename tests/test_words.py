"""Label-word search (`ptcli words`): on models whose right words are known by construction, on random tiny models
(whatever the words, they must load, be distinct and train), and every bad input as a one-line error."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import synthetic
import tiny
import torch
from typer.testing import CliRunner

from ptcli.classifier import Classifier
from ptcli.cli import app
from ptcli.errors import PtcliError, UsageError
from ptcli.loading import load_backbone
from ptcli.template import Template
from ptcli.verbalizer import Verbalizer
from ptcli.words import SearchConfig, _Stats, _vocab, search_words

runner = CliRunner()
TWO_TOKEN_WORDS = {"pos": "不错", "neg": "不好"}  # same first token: only the second one tells the labels apart


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def assert_clean_error(result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr.replace("\n", " "), result.stderr


def _rows(path: Path) -> tuple[list[str], list[str]]:
    import pandas as pd

    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    return df["text"].tolist(), df["label"].tolist()


@pytest.fixture(scope="module")
def two_token_gpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 on the Chinese BERT vocabulary (one token per character), pre-trained on
    `<review>。总之很<word>。` where the word is 不错 after positive cues and 不好 after negative ones: the label is
    in the second token only. Trained until held-out reviews show both halves, not for a fixed step count."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    directory = tmp_path_factory.mktemp("two-token") / "gpt"
    directory.mkdir()
    (directory / "vocab.txt").write_bytes(tiny.chinese_vocab().read_bytes())
    (directory / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer",
                                                                 "do_lower_case": True}))
    tok = AutoTokenizer.from_pretrained(directory)
    tok.save_pretrained(directory)
    config = GPT2Config(vocab_size=len(tok), n_embd=64, n_layer=2, n_head=2, n_positions=128,
                        bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = random.Random(0)
    held_out = synthetic.reviews(100, seed=99)
    first, good, bad = tok.convert_tokens_to_ids(["不", *TWO_TOKEN_WORDS["pos"][1], *TWO_TOKEN_WORDS["neg"][1]])

    def batch(rows: list[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Ids ([CLS] text, as ptcli's causal scorer feeds them), mask, and the last 3 positions (不, 错/好, 。)."""
        ids = [tok(f"{text}。{synthetic.AGREE}很{TWO_TOKEN_WORDS[label]}。")["input_ids"][:-1] for text, label in rows]
        x = torch.full((len(ids), max(map(len, ids))), tok.pad_token_id)
        mask = torch.zeros_like(x)
        for i, r in enumerate(ids):
            x[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        ends = mask.sum(1, keepdim=True)
        return x, mask, ends - 4 + torch.arange(3)  # positions predicting the word's 2 tokens and the 。

    def learnt() -> bool:
        model.eval()
        x, mask, pos = batch(held_out)
        with torch.no_grad():
            hidden = model.transformer(input_ids=x, attention_mask=mask).last_hidden_state
            logits = model.lm_head(hidden[torch.arange(len(x)).unsqueeze(1), pos])
        probs = logits.softmax(-1)
        right = torch.tensor([good if label == "pos" else bad for _, label in held_out])
        says_first = (probs[:, 0, first] >= 0.9).float().mean()  # 不 whatever the review
        says_second = (probs[:, 1].gather(1, right.unsqueeze(1)) >= 0.95).float().mean()  # then the label's token
        return bool(says_first >= 0.97 and says_second >= 0.97)

    for step in range(1, 1501):
        model.train()
        x, mask, pos = batch([(synthetic.review(rng, label), label)
                              for label in (rng.choice(["pos", "neg"]) for _ in range(32))])
        hidden = model.transformer(input_ids=x, attention_mask=mask).last_hidden_state
        rows = torch.arange(len(x)).unsqueeze(1)
        logits = model.lm_head(hidden[rows, pos])  # the vocabulary head at the 3 target positions only
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), x[rows, pos + 1].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step % 25 == 0 and learnt():
            model.save_pretrained(directory)
            return directory
    raise AssertionError("fixture: the tiny GPT-2 did not learn 不错/不好 after 总之很 in 1500 steps")


def assert_classifier_scores(backbone, template: Template, result, texts: list[str], labels: list[str]) -> None:
    """A word's reported log-probability is the classifier's own: the mean Backbone.score over its label's rows."""
    clf = Classifier.build(backbone, template, result.verbalizer, 256)
    with torch.inference_mode():
        scores = backbone.score(clf.encode(texts), None, clf.word_ids)
    for j, (word, owner) in enumerate(zip(*result.verbalizer.flat(), strict=True)):
        label = result.labels[owner]
        mine = [i for i, y in enumerate(labels) if y == label]
        entry = next(w for w in result.words[label] if w.word == word)
        assert entry.logprob == pytest.approx(float(scores[mine, j].mean()), abs=1e-4)


def test_masked_lm_finds_the_words_it_was_taught(pretrained_bert: Path, review_files: dict[str, Path]) -> None:
    """The pre-trained BERT says 好 after 总之很 for positive cues and 差 for negative ones: those must be found,
    and nothing else, since no other token comes within the plausibility margin."""
    backbone = load_backbone(str(pretrained_bert), device="cpu", precision="fp32")
    texts, labels = _rows(review_files["train"])
    template = Template.parse("<text>。总之很[MASK]")
    result = search_words(backbone, template, texts, labels)
    assert result.verbalizer.to_dict() == {"neg": ["差"], "pos": ["好"]}
    assert_classifier_scores(backbone, template, result, texts, labels)
    assert all(w.contrast > 0 for ws in result.words.values() for w in ws)
    assert result.accuracy >= 0.9


def test_causal_finds_two_token_words_that_only_differ_in_the_second(two_token_gpt: Path,
                                                                     review_files: dict[str, Path]) -> None:
    backbone = load_backbone(str(two_token_gpt), device="cpu", precision="fp32")
    texts, labels = _rows(review_files["train"])
    # Words up to 2 tokens: what a toy model says after its 2-token words (it never saw a third) is noise.
    config = SearchConfig(max_tokens=2)
    for source in ("<text>。总之很[MASK]", "<text>。总之很[MASK]。"):  # nothing after the slot, and text after it
        template = Template.parse(source)
        result = search_words(backbone, template, texts, labels, config=config)
        for label, word in TWO_TOKEN_WORDS.items():
            best = result.words[label][0]
            assert best.word == word and len(best.token_ids) == 2, (source, result.words)
        # 不 alone is the model's likeliest slot token for both labels but tells them apart by nothing
        assert "不" not in {w.word for ws in result.words.values() for w in ws}
        assert result.accuracy >= 0.9
        assert_classifier_scores(backbone, template, result, texts, labels)


@pytest.mark.parametrize(("model", "template"), [
    ("bert", "<text>。[P][P]很[MASK][MASK]"),  # a masked LM: every word exactly two tokens
    ("gpt2", "[P][P]Review: <text> It was [MASK]"),  # byte-level BPE with a space before the slot
])
def test_proposed_words_load_are_distinct_and_train(models: dict[str, Path], review_files: dict[str, Path],
                                                    tmp_path: Path, model: str, template: str) -> None:
    tpl = tmp_path / "template.txt"
    tpl.write_text(template + "\n", encoding="utf-8")
    out = tmp_path / "verbalizer.json"
    result = invoke("words", review_files["train"], "--template", tpl, "--model", models[model], "-o", out,
                    "--top", 2, "--device", "cpu", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    written = json.loads(out.read_text(encoding="utf-8"))
    assert report["verbalizer"] == written and set(written) == {"pos", "neg"}
    words = [w for ws in written.values() for w in ws]
    assert len(words) == len(set(words)) and all(1 <= len(ws) <= 2 for ws in written.values())
    verbalizer = Verbalizer.load(out, ["neg", "pos"])
    backbone = load_backbone(str(models[model]), device="cpu", precision="fp32")
    space = Template.parse(template).space_before_slot
    for label, entries in report["words"].items():
        for entry in entries:  # each word tokenizes, as train will tokenize it, to the ids that were scored
            assert backbone.tokenize_word(entry["word"], space) == entry["token_ids"], entry
            assert entry["word"] in verbalizer.words[verbalizer.labels.index(label)]
            if model == "bert":
                assert len(entry["token_ids"]) == 2
    art = tmp_path / "art"
    trained = invoke("train", review_files["train"], "--template", tpl, "--model", models[model], "--verbalizer", out,
                     "-o", art, "--epochs", 1, "--device", "cpu")
    assert trained.exit_code == 0, trained.stderr
    assert json.loads((art / "ptcli.json").read_text(encoding="utf-8"))["verbalizer"] == written


def test_table_on_stdout_and_nothing_written_without_output(models: dict[str, Path], review_files: dict[str, Path],
                                                            tmp_path: Path) -> None:
    result = invoke("words", review_files["train"], "--template", review_files["template"], "--model",
                    models["bert"], "--device", "cpu", "--top", 1)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["label", "word", "tokens", "contrast", "t", "logprob"]
    assert sorted(line.split()[0] for line in lines[1:]) == ["neg", "pos"]  # --top 1: one word per label
    assert list(tmp_path.iterdir()) == []


def test_words_are_checked_for_being_words(models: dict[str, Path]) -> None:
    """Specials, punctuation, ## pieces and [unusedN] are no words; a BPE word needs the slot's leading space."""
    bert = load_backbone(str(models["bert"]), device="cpu", precision="fp32")
    vocab = _vocab(bert, space_before=False)
    ids = bert.tokenizer.convert_tokens_to_ids
    assert vocab.check([ids("好")]) == (True, "好")
    assert vocab.check(ids(["不", "错"])) == (True, "不错")
    for token in ("[CLS]", "[MASK]", "，", "##s", "[unused1]", "!"):
        assert vocab.check([ids(token)])[1] is None, token
    gpt = load_backbone(str(models["gpt2"]), device="cpu", precision="fp32")
    spaced, bare = gpt.tokenize_word("good", True), gpt.tokenize_word("good", False)
    assert _vocab(gpt, space_before=True).check(spaced) == (True, "good")
    assert _vocab(gpt, space_before=False).check(spaced)[1] is None  # " good" cannot fill a slot with no space
    assert _vocab(gpt, space_before=True).check(gpt.tokenize_word("good movie", True))[1] is None  # two words
    assert _vocab(gpt, space_before=False).check(bare) == (True, "good")


def test_contrast_is_against_the_closest_other_label_and_counted_in_standard_errors() -> None:
    stats = _Stats(n_labels=3, n_words=2)
    stats.add(np.array([0, 0, 1, 1, 2, 2]),
              torch.tensor([[-0.5, -5.0], [-1.5, -5.0], [-2.0, -4.0], [-2.0, -4.0], [-3.0, -6.0], [-3.0, -6.0]]))
    means, contrast, t = stats.finish()
    assert means.tolist() == [[-1.0, -5.0], [-2.0, -4.0], [-3.0, -6.0]]
    assert contrast.tolist() == [[1.0, -1.0], [-1.0, 1.0], [-2.0, -2.0]]
    # label 0's word 0 varies (variance 0.5 over 2 rows), its rival label 1 does not: standard error 0.5
    assert t[0, 0].item() == pytest.approx(2.0) and t[1, 0].item() == pytest.approx(-2.0)
    assert t[1, 1].item() == math.inf  # no spread at all: any difference is certain


def test_bad_inputs_are_one_line_errors(models: dict[str, Path], review_files: dict[str, Path],
                                        tmp_path: Path) -> None:
    one = synthetic.write_csv(tmp_path / "one.csv", [("很棒", "pos"), ("很赞", "pos")])
    base = ("--template", review_files["template"], "--model", models["bert"], "--device", "cpu")
    assert_clean_error(invoke("words", one, *base), 1, "only one label", "at least two")
    no_mask = tmp_path / "nomask.txt"
    no_mask.write_text("<text>。很好\n", encoding="utf-8")
    assert_clean_error(invoke("words", review_files["train"], "--template", no_mask, "--model", models["bert"]),
                       1, "no [MASK]")
    assert_clean_error(invoke("words", review_files["train"], *base, "--top", 0), 2, "--top 0")
    assert_clean_error(invoke("words", review_files["train"], *base, "-o", review_files["train"]), 1,
                       "is the input")
    assert_clean_error(invoke("words", review_files["train"], *base, "-o", tmp_path / "missing" / "v.json"), 1,
                       "does not exist")
    assert_clean_error(invoke("words", review_files["train"], *base, "--text-b-col", "label"), 2, "no <text_b>")


def test_search_words_refuses_labels_without_rows(models: dict[str, Path]) -> None:
    backbone = load_backbone(str(models["bert"]), device="cpu", precision="fp32")
    template = Template.parse("<text>很[MASK]")
    with pytest.raises(PtcliError, match="'meh' have no rows"):
        search_words(backbone, template, ["好", "差"], ["pos", "neg"], label_order=["pos", "neg", "meh"])
    with pytest.raises(PtcliError, match="at least two labels"):
        search_words(backbone, template, ["好", "棒"], ["pos", "pos"])
    with pytest.raises(UsageError, match="--top 0"):
        search_words(backbone, template, ["好", "差"], ["pos", "neg"], config=SearchConfig(top=0))


def test_train_auto_words_trains_with_the_words_found_on_its_training_rows(
        pretrained_bert: Path, review_files: dict[str, Path], tmp_path: Path) -> None:
    tpl = tmp_path / "template.txt"
    tpl.write_text("<text>。[P]总之很[MASK]\n", encoding="utf-8")
    art = tmp_path / "art"
    # --dev: DATA is all training rows, so the search saw exactly the rows searched below
    trained = invoke("train", review_files["train"], "--template", tpl, "--model", pretrained_bert, "--auto-words",
                     "--dev", review_files["test"], "-o", art, "--epochs", 1, "--device", "cpu")
    assert trained.exit_code == 0, trained.stderr
    assert "--auto-words" in trained.stderr
    backbone = load_backbone(str(pretrained_bert), device="cpu", precision="fp32")
    texts, labels = _rows(review_files["train"])
    found = search_words(backbone, Template.parse("<text>。[P]总之很[MASK]"), texts, labels)
    meta = json.loads((art / "ptcli.json").read_text(encoding="utf-8"))
    assert meta["verbalizer"] == found.verbalizer.to_dict() == {"neg": ["差"], "pos": ["好"]}
    assert meta["training"]["args"]["auto_words"] is True
    predicted = invoke("predict", art, review_files["test"], "--device", "cpu")
    assert predicted.exit_code == 0, predicted.stderr


def test_train_auto_words_refuses_a_verbalizer_or_a_resume(models: dict[str, Path], review_files: dict[str, Path],
                                                           tmp_path: Path) -> None:
    common = [review_files["train"], "--template", review_files["template"], "--model", models["bert"],
              "--auto-words", "-o", tmp_path / "art", "--device", "cpu"]
    assert_clean_error(invoke("train", *common, "--verbalizer", review_files["verbalizer"]), 2, "--auto-words",
                       "not both")
    assert_clean_error(invoke("train", *common, "--resume", tmp_path), 2, "--resume", "drop --auto-words")
    assert not (tmp_path / "art").exists()
