import math

import pytest
import torch

from ptcli.errors import PtcliError
from ptcli.verbalizer import Verbalizer, label_scores


def test_default_uses_label_strings():
    v = Verbalizer.default(["neg", "pos"])
    assert v.words == [["neg"], ["pos"]]


def test_load_single_and_multiple_words(tmp_path):
    p = tmp_path / "v.json"
    p.write_text('{"pos": ["好", "棒"], "neg": "差", "other": "中"}', encoding="utf-8")
    v = Verbalizer.load(p, ["neg", "pos"])
    assert v.labels == ["pos", "neg"]  # the file's order, restricted to the data's labels
    assert v.words == [["好", "棒"], ["差"]]
    assert v.flat() == (["好", "棒", "差"], [0, 0, 1])


def test_load_errors(tmp_path):
    p = tmp_path / "v.json"
    p.write_text('{"pos": "好"}', encoding="utf-8")
    with pytest.raises(PtcliError, match="'neg'"):
        Verbalizer.load(p, ["neg", "pos"])
    p.write_text('{"pos": "好",\n "neg": }', encoding="utf-8")
    with pytest.raises(PtcliError, match="line 2"):
        Verbalizer.load(p, ["neg", "pos"])
    p.write_text('{"pos": [], "neg": "差"}', encoding="utf-8")
    with pytest.raises(PtcliError, match="'pos'"):
        Verbalizer.load(p, ["neg", "pos"])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"pos": "好", "neg": "好"}', "the word '好' is listed under both 'pos' and 'neg'"),
        ('{"pos": ["好", "棒"], "neg": ["差", " 棒 "]}', "the word '棒' is listed under both 'pos' and 'neg'"),
        ('{"pos": ["好", "好"], "neg": "差"}', "the word '好' is listed twice under label 'pos'"),
        ('{"pos": "好", "neg": "差", "pos": "棒"}', "key 'pos' appears twice"),
        ('["好", "差"]', "expected a JSON object"),
        ('"好"', "expected a JSON object"),
        ("42", "expected a JSON object"),
        ("null", "expected a JSON object"),
        ("{}", "expected a JSON object"),
        ('{"pos": "  ", "neg": "差"}', "label 'pos' needs a non-empty word"),
        ('{"pos": ["好", ""], "neg": "差"}', "label 'pos' needs a non-empty word"),
        ('{"pos": ["好", 1], "neg": "差"}', "label 'pos' needs a non-empty word"),
        ('{"pos": [["好"]], "neg": "差"}', "label 'pos' needs a non-empty word"),
        ('{"pos": {"w": "好"}, "neg": "差"}', "label 'pos' needs a non-empty word"),
        ('{"pos": "好", "neg": "差", " ": "中"}', "a label with no name"),
        ('{"pos": "\\ud800", "neg": "差"}', "unpaired surrogate"),
        ('{"pos": ' + "[" * 100_000 + "]" * 100_000 + "}", "cannot read this JSON"),
        ("", "invalid JSON at line 1, column 1"),
    ],
)
def test_bad_verbalizers_are_one_line_errors(tmp_path, content, message):
    p = tmp_path / "v.json"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(PtcliError, match=message) as e:
        Verbalizer.load(p, ["neg", "pos"])
    assert e.value.message.startswith(str(p)) and "\n" not in e.value.message


def test_load_paths(tmp_path):
    with pytest.raises(PtcliError, match=r"v\.json: no such file; expected a JSON file"):
        Verbalizer.load(tmp_path / "v.json", ["pos"])
    with pytest.raises(PtcliError, match="is a directory"):
        Verbalizer.load(tmp_path, ["pos"])
    (tmp_path / "v.json").write_bytes(b'{"pos": "\xff"}')
    with pytest.raises(PtcliError, match="byte offset 9 is not UTF-8"):
        Verbalizer.load(tmp_path / "v.json", ["pos"])


def test_a_word_in_an_unused_label_still_counts(tmp_path):
    """The check covers the whole file: whether it is consistent does not depend on the data's labels."""
    p = tmp_path / "v.json"
    p.write_text('{"pos": "好", "neg": "差", "other": "好"}', encoding="utf-8")
    with pytest.raises(PtcliError, match="'pos' and 'other'"):
        Verbalizer.load(p, ["neg", "pos"])


def test_label_scores_is_log_mean_exp():
    words = torch.tensor([[math.log(0.2), math.log(0.4), math.log(0.1)]])
    scores = label_scores(words, [0, 0, 1], 2)
    assert torch.allclose(scores, torch.tensor([[math.log(0.3), math.log(0.1)]]))
