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


def test_label_scores_is_log_mean_exp():
    words = torch.tensor([[math.log(0.2), math.log(0.4), math.log(0.1)]])
    scores = label_scores(words, [0, 0, 1], 2)
    assert torch.allclose(scores, torch.tensor([[math.log(0.3), math.log(0.1)]]))
