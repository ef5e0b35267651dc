"""Session fixtures: tiny backbones built once per test run, and small data files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# PTCLI_TEST_THREADS lets the suite be proven at other thread counts (kernels, hence float sums, differ with them).
torch.set_num_threads(int(os.environ.get("PTCLI_TEST_THREADS", 0)) or max(1, min(2, os.cpu_count() or 1)))

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
    """A tiny BERT (real Chinese vocab) pre-trained until it knows the synthetic corpus's two anchors."""
    path = tmp_path_factory.mktemp("pretrained") / "bert"
    tiny.build_bert(path, hidden=64)
    return synthetic.pretrain_bert(path)


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


@pytest.fixture(scope="session")
def tiny_artifact(models: dict[str, Path], review_files: dict[str, Path],
                  tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One epoch on the tiny BERT through the CLI: an artifact for tests that only read it (copy it to change it)."""
    from typer.testing import CliRunner

    from ptcli.cli import app

    out = tmp_path_factory.mktemp("tiny-artifact") / "art"
    result = CliRunner().invoke(app, [str(a) for a in (
        "train", review_files["train"], "--template", review_files["template"], "--model", models["bert"],
        "--verbalizer", review_files["verbalizer"], "-o", out, "--epochs", 1, "--device", "cpu")])
    assert result.exit_code == 0, result.stderr
    return out


@pytest.fixture(scope="session")
def learning_task(pretrained_bert: Path, review_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
                  ) -> dict[str, object]:
    """The review task on the pre-trained BERT, with a training seed whose untrained prompts score at chance.

    The model says 好 after any anchor but 总之, so prompts it does not recognise land at chance by construction;
    the fixture checks that on the very evaluation `train` runs before its first epoch (a one-epoch probe per
    seed), rather than assuming it, and the learning test re-checks it on its own run.
    """
    from ptcli.train import TrainArgs, train

    d = tmp_path_factory.mktemp("learning")
    seen = []
    for seed in range(5):
        probe = train(TrainArgs(data=review_files["train"], template=review_files["template"],
                                model=str(pretrained_bert), verbalizer=review_files["verbalizer"],
                                dev=review_files["test"], output=d / f"probe{seed}", device="cpu", precision="fp32",
                                epochs=1, seed=seed))
        seen.append(probe.dev_untrained["accuracy"])
        if seen[-1] <= CHANCE:
            return {**review_files, "model": pretrained_bert, "seed": seed}
    raise AssertionError(f"fixture: untrained prompts score {seen} for seeds 0-4; the learning test needs a start "
                         f"at chance (<= {CHANCE})")


CHANCE = 0.55  # two balanced classes: 0.5, plus the odd row a near-constant prediction gets right
