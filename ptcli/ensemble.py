"""Ensembles: several artifacts trained on the same labels and the same backbone, scored as one model.

predict and eval always go through here: one artifact is an ensemble of one and gives exactly its own
probabilities. The backbone is loaded once, where the first artifact says it is; each member keeps its own template,
prompts and label words (a different template or seed is the point), encodes the rows itself, and the ensemble's
probability of a label is the arithmetic mean of the members' softmax probabilities. Labels are in the first
artifact's order; the others' columns are reordered to it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ptcli import artifact
from ptcli.artifact import Artifact
from ptcli.classifier import Classifier, rows_per_slice
from ptcli.console import warn
from ptcli.errors import PtcliError, UsageError
from ptcli.loading import load_backbone

Paths = Path | str | Sequence[Path | str]  # one artifact, or several to average


def as_paths(paths: Paths) -> list[Path]:
    """One artifact path or several, as a list."""
    if isinstance(paths, str | os.PathLike):
        return [Path(paths)]
    return [Path(p) for p in paths]


def load_artifacts(paths: Paths) -> list[Artifact]:
    """Read every artifact (no backbone yet) and check they can share one: distinct, same labels, same backbone,
    same use of a second text column. Cheap, so commands call it before reading input or loading a model."""
    paths = as_paths(paths)
    if not paths:
        raise UsageError("no artifact given; pass one or more artifact directories from ptcli train")
    _refuse_duplicates(paths)
    arts = [_load(p, several=len(paths) > 1) for p in paths]
    for art in arts[1:]:
        check_compatible(arts[0], art)
    return arts


def _load(path: Path, several: bool) -> Artifact:
    if several and path.is_file():  # `predict A1 rows.csv out.csv`: the input comes last, the output with -o
        raise PtcliError(f"{path}: a file, not an artifact directory; the artifact directories come first and the "
                         "rows last (ARTIFACT... INPUT), predict's output goes with -o")
    return artifact.load(path)


def _refuse_duplicates(paths: list[Path]) -> None:
    """The same artifact twice would silently count double; weighting is not what a repeated path should mean."""
    for i, p in enumerate(paths):
        for q in paths[:i]:
            if p.resolve() == q.resolve() or _same_dir(p, q):
                same = f"{q} and {p}" if str(p) != str(q) else str(p)
                raise UsageError(f"{same}: the same artifact is given twice; an ensemble averages distinct "
                                 "artifacts, give each once")


def _same_dir(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _labels(labels: Sequence[str]) -> str:
    shown = ", ".join(map(repr, sorted(labels)[:8]))
    return shown + (f" … ({len(labels)} in all)" if len(labels) > 8 else "")


def backbone_identity(art: Artifact) -> str:
    """The fingerprint of the backbone the artifact's prompts work with (the tuned one for --tune-backbone)."""
    return art.meta.training.tuned_fingerprint or art.meta.backbone.fingerprint


def check_compatible(first: Artifact, other: Artifact) -> None:
    """One line naming both artifacts and what differs, or nothing."""
    both = f"{other.path} cannot join an ensemble with {first.path}"
    if set(other.labels) != set(first.labels):
        only_first = set(first.labels) - set(other.labels)
        only_other = set(other.labels) - set(first.labels)
        parts = [f"only {first.path} has {_labels(only_first)}" if only_first else "",
                 f"only {other.path} has {_labels(only_other)}" if only_other else ""]
        raise PtcliError(f"{both}: their labels differ ({'; '.join(p for p in parts if p)}); ensemble artifacts "
                         "trained on the same labels")
    a, b = first.meta.backbone, other.meta.backbone
    if a.gguf_sha256 and b.gguf_sha256 and a.gguf_sha256 != b.gguf_sha256:
        raise PtcliError(f"{both}: trained on different GGUF files ({first.path}: SHA-256 {a.gguf_sha256[:16]}…, "
                         f"{other.path}: {b.gguf_sha256[:16]}…); an ensemble shares one backbone")
    if backbone_identity(first) != backbone_identity(other):
        raise PtcliError(f"{both}: trained on different backbones ({first.path}: {a.name}, fingerprint "
                         f"{backbone_identity(first)}; {other.path}: {b.name}, fingerprint {backbone_identity(other)})"
                         "; an ensemble shares one backbone")
    if (first.meta.columns.text_b is None) != (other.meta.columns.text_b is None):
        pair, single = (first, other) if first.meta.columns.text_b is not None else (other, first)
        raise PtcliError(f"{both}: {pair.path} reads a second text column (<text_b>) and {single.path} does not; "
                         "ensemble artifacts whose templates take the same inputs")


def input_columns(arts: list[Artifact], text_col: str | None, text_b_col: str | None) -> tuple[str, str | None]:
    """The columns every member reads: those given, else the ones the first artifact was trained on, with a
    warning when another member was trained on other names."""
    first = arts[0].meta.columns
    for art in arts[1:]:
        cols = art.meta.columns
        if (text_col is None and cols.text != first.text) or (text_b_col is None and cols.text_b != first.text_b):
            warn(f"{art.path} was trained on column(s) {_names(cols.text, cols.text_b)} but {arts[0].path} on "
                 f"{_names(first.text, first.text_b)}; every member reads the first artifact's (choose with "
                 "--text-col / --text-b-col)")
    return text_col or first.text, text_b_col or first.text_b


def _names(text: str, text_b: str | None) -> str:
    return repr(text) + (f", {text_b!r}" if text_b else "")


@dataclass
class Member:
    artifact: Artifact
    clf: Classifier
    prompts: torch.Tensor
    columns: list[int]  # this member's probability column of each of the ensemble's labels


@dataclass
class Ensemble:
    members: list[Member]

    @property
    def labels(self) -> list[str]:
        return self.members[0].clf.labels

    def predict_proba(self, texts: list[str], texts_b: list[str] | None, batch_size: int,
                      on_batch: Callable[[float], None] | None = None) -> np.ndarray:
        """[N, n_labels] mean probabilities, rows in input order. Each member encodes the rows with its own
        template; `on_batch` is told rows scored, a member's batch counting 1/len(members) per row."""
        if not texts:  # a header-only chunk: nothing to encode
            return np.zeros((0, len(self.labels)))
        n = len(self.members)
        share = on_batch if on_batch is None or n == 1 else lambda k: on_batch(k / n)
        total = np.zeros((len(texts), len(self.labels)), dtype=np.float64)
        for m in self.members:
            total += m.clf.predict_proba(m.clf.encode(texts, texts_b), m.prompts, batch_size, share)[:, m.columns]
        return total if n == 1 else total / n

    def predict_slices(self, texts: list[str], texts_b: list[str] | None, batch_size: int,
                       on_batch: Callable[[float], None] | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """`predict_proba` over consecutive slices of rows, yielding (first row, [slice, n_labels] probabilities):
        bounded like Classifier.predict_slices, and encoded a slice at a time."""
        step = max(batch_size, rows_per_slice(len(self.labels)))
        for start in range(0, len(texts), step):
            yield start, self.predict_proba(texts[start : start + step],
                                            texts_b[start : start + step] if texts_b is not None else None,
                                            batch_size, on_batch)


def build(arts: list[Artifact], device: str = "auto", precision: str = "auto", model: str | None = None) -> Ensemble:
    """Load the backbone once, where the first artifact says it is (or `model`), and put every member on it; each
    member still checks the backbone is the one it was trained on (Classifier.for_artifact)."""
    name, gguf_file, revision = arts[0].backbone_source(model)
    backbone = load_backbone(name, device=device, precision=precision, gguf_file=gguf_file, revision=revision)
    labels = arts[0].labels
    members = []
    for art in arts:
        clf, prompts = Classifier.for_artifact(art, backbone)
        members.append(Member(art, clf, prompts, [clf.labels.index(label) for label in labels]))
    return Ensemble(members)


def load(paths: Paths, device: str = "auto", precision: str = "auto", model: str | None = None) -> Ensemble:
    return build(load_artifacts(paths), device, precision, model)
