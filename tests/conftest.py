"""Session fixtures: tiny backbones built once per test run, and small data files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

import synthetic  # noqa: E402
import tiny  # noqa: E402  (also puts scripts/ on sys.path)


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Lazily built tiny models, by name: bert, roberta, albert, gpt2, qwen2, llama."""
    return _Lazy(tmp_path_factory.mktemp("models"))


class _Lazy(dict):
    builders: ClassVar[dict] = {
        "bert": tiny.build_bert,
        "bert_other": lambda p: tiny.build_bert(p, seed=1),
        "roberta": tiny.build_roberta,
        "albert": tiny.build_albert,
        "gpt2": lambda p: tiny.build_causal(p, "gpt2"),
        "qwen2": lambda p: tiny.build_causal(p, "qwen2"),
        "llama": lambda p: tiny.build_causal(p, "llama"),
    }

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def __missing__(self, name: str) -> Path:
        path = self.builders[name](self.root / name)
        self[name] = path
        return path


@pytest.fixture(scope="session")
def pretrained_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT (real Chinese vocab) given seconds of MLM pre-training on the anchored synthetic corpus."""
    path = tmp_path_factory.mktemp("pretrained") / "bert"
    tiny.build_bert(path, hidden=64)
    return synthetic.pretrain_bert(path, steps=300)


@pytest.fixture(scope="session")
def review_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("reviews")
    (d / "template.txt").write_text("<text>。[P][P]很[MASK]\n", encoding="utf-8")
    (d / "verbalizer.json").write_text('{"pos": "好", "neg": "差"}', encoding="utf-8")
    return {
        "train": synthetic.write_csv(d / "train.csv", synthetic.reviews(32, seed=1)),
        "test": synthetic.write_csv(d / "test.csv", synthetic.reviews(200, seed=2)),
        "template": d / "template.txt",
        "verbalizer": d / "verbalizer.json",
    }
