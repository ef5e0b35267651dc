"""The artifact directory: what training leaves behind and predict/eval/export read.

    ptcli.json            the record below (`Meta`): template, labels, label words + token ids, backbone identity
                          and fingerprint, encoder config, training record, dev metrics, versions
    prompts.safetensors   `prompt_embeddings` [m, H]: the frozen prompt, all that prediction needs; with
                          --head linear also `head_weight` [labels, H × head features] and `head_bias` [labels]
                          (ptcli/head.py)
    encoder.safetensors   the prompt encoder's weights, so `train --resume` can continue
    README.md             model card (+ training.png when plotting is available)
    backbone/             only with --tune-backbone: the trained backbone (safetensors)

What an artifact holds is defined once, here, as typed dataclasses; `load` validates ptcli.json against them and
against itself (labels vs label words vs token ids vs template vs prompt shape), so a tampered, truncated or
hand-edited artifact fails in one place with one line naming the file and the field. Only safetensors and JSON:
nothing is unpickled when an artifact is opened. It is written into a temporary sibling directory and renamed into
place, so an interrupted run leaves nothing half-written.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import ConfigDict, TypeAdapter, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ptcli.encoder import ENCODERS, PROMPT_INITS, EncoderConfig
from ptcli.errors import PtcliError
from ptcli.head import BIAS, FEATURES, HEADS, WEIGHT
from ptcli.outputs import atomic_directory, check_output_dir
from ptcli.template import Template

FORMAT = "ptcli-artifact"
# 8: demo_prompts (the demonstrations carry the template's [P]); 7: head_features (what the linear head reads; its
# weight is [labels, H × features]); 6: head (--head linear, its tensors in prompts.safetensors); 5: text_first_names
# (--text-first moves each input with the clause naming it); 4: text_first; 3: label_bias, demonstrations, chat,
# encoder.init (a ptcli that predates them must refuse such an artifact rather than predict without them); 2: typed
# record (training.args, backbone.gguf_file, no confusion matrices); 1 is upgraded. A version-2 to -7 record is a
# version-8 record without the newer fields, which all have defaults that mean what those versions did.
FORMAT_VERSION = 8
META = "ptcli.json"
PROMPTS = "prompts.safetensors"
ENCODER = "encoder.safetensors"
CARD = "README.md"
CURVE = "training.png"  # written when matplotlib is installed (the plots extra)
BACKBONE_DIR = "backbone"
KINDS = ("mlm", "causal")
# Per-class dev metrics are kept up to this many labels; past it ptcli.json would grow with the square of nothing
# anybody reads (10,000 intents made it gigabytes), so only the summary is stored.
MAX_DETAILED_LABELS = 200

# Strict: a number written as a string, or a list where a dict belongs, is damage, not something to coerce.
_STRICT = ConfigDict(strict=True, extra="ignore")


@dataclass
class TemplateRecord:
    text: str
    path: str = "<template>"


@dataclass
class BackboneRecord:
    """Everything needed to find, and recognise, the same backbone again."""

    name: str  # what the user passed: hub id, directory or .gguf file
    kind: str  # "mlm" | "causal"
    model_type: str
    fingerprint: str  # hash of the input-embedding matrix
    revision: str | None = None  # hub commit, when loaded from the hub
    local_path: str | None = None
    gguf_sha256: str | None = None
    gguf_file: str | None = None  # file name inside `name` when that is a directory
    tokenizer: str = ""


@dataclass
class Columns:
    text: str = "text"
    text_b: str | None = None
    label: str = "label"


@dataclass
class TrainingRecord:
    max_length: int
    seed: int
    n_train: int
    n_dev: int
    best_epoch: int
    precision: str
    device: str
    tune_backbone: bool = False
    tuned_fingerprint: str | None = None  # the tuned backbone's fingerprint, with --tune-backbone
    train_counts: dict[str, int] = field(default_factory=dict)
    args: dict[str, Any] = field(default_factory=dict)  # the training options as given, for the record
    select: str = "dev-acc"  # how best_epoch was chosen: dev-acc | dev-loss | kfold (then it is the epoch count)
    folds: int = 0  # with kfold: the number of cross-validation folds (= rows for leave-one-out); else 0
    calibrate: str = "none"  # none | contextual | bias | fit: where Meta.label_bias came from
    refit: bool = False  # --refit: after the dev rows chose best_epoch, trained again on n_train (training + dev) rows
    head_refit: bool = False  # --head-refit: the linear head fit again on the training and dev rows (format 7)


@dataclass
class Metrics:
    accuracy: float
    macro_f1: float
    n: int
    loss: float | None = None
    per_class: dict[str, dict[str, float]] | None = None  # None above MAX_DETAILED_LABELS labels

    @classmethod
    def from_report(cls, report: dict[str, Any]) -> Metrics:
        detailed = len(report.get("per_class", {})) <= MAX_DETAILED_LABELS
        return cls(accuracy=float(report["accuracy"]), macro_f1=float(report["macro_f1"]), n=int(report["n"]),
                   loss=report.get("loss"), per_class=report.get("per_class") if detailed else None)


@dataclass
class Epoch:
    epoch: int
    train_loss: float
    dev_loss: float
    dev_accuracy: float
    seconds: float


@dataclass
class Demonstration:
    """A training row shown, with its label word, before every row (`train --demos`; see demos.py)."""

    text: str
    label: str
    text_b: str | None = None


@dataclass
class Meta:
    __pydantic_config__ = _STRICT

    ptcli_version: str
    created: str
    template: TemplateRecord
    labels: list[str]
    verbalizer: dict[str, list[str]]  # label → its words, in label order
    word_ids: list[list[int]]  # token ids of every word, labels in order, words in order
    backbone: BackboneRecord
    encoder: EncoderConfig
    columns: Columns
    training: TrainingRecord
    dev_metrics: Metrics
    dev_metrics_untrained: Metrics
    history: list[Epoch] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    label_bias: list[float] | None = None  # per-label log-space bias added to the label scores; None: no bias
    demonstrations: list[Demonstration] = field(default_factory=list)  # in prefix order; predict rebuilds it
    chat: bool = False  # the template sits in the backbone's chat template (`train --chat`; see chat.py)
    text_first: bool = False  # read in the backbone's order (`train --text-first`, Backbone.reading_order); absent
    # from artifacts before format 4, which were trained as written
    # With text_first: each input moved with the clause naming it (format 5); absent (format 4): the inputs alone.
    text_first_names: bool = False
    head: str = "words"  # words: the verbalizer alone; linear: plus a read-out of the slot state (head.py, format 6)
    head_features: list[str] = field(default_factory=lambda: ["slot"])  # what that head reads (format 7)
    # The demonstrations carry the template's [P] (format 8; demos.py); absent: rendered without them.
    demo_prompts: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, indent=2) + "\n"

    def parsed_template(self) -> Template:
        return Template.parse(self.template.text, self.template.path)

    def read_template(self) -> Template:
        """The template in the order the causal backbone read it (`text_first`); a masked LM reads it as written."""
        parsed = self.parsed_template()
        if self.text_first and self.backbone.kind == "causal":
            return parsed.inputs_first(self.text_first_names)
        return parsed

    def words(self) -> list[list[str]]:
        return [self.verbalizer[label] for label in self.labels]

    def check(self, where: str) -> None:
        """What the types alone cannot say: the parts agree with each other."""

        def bad(name: str, problem: str) -> PtcliError:
            return PtcliError(f"{where}: {name}: {problem}; {_DAMAGED}")

        if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels) or not all(self.labels):
            raise bad("labels", f"expected two or more distinct, non-empty labels, got {self.labels[:5]!r}")
        if set(self.verbalizer) != set(self.labels):
            extra = sorted(set(self.verbalizer) ^ set(self.labels))
            raise bad("verbalizer", f"its labels differ from `labels` ({', '.join(map(repr, extra[:5]))})")
        n_words = sum(len(ws) for ws in self.words())
        if not all(ws and all(w.strip() for w in ws) for ws in self.words()):
            raise bad("verbalizer", "every label needs at least one non-empty word")
        if len(self.word_ids) != n_words or not all(ids and min(ids) >= 0 for ids in self.word_ids):
            raise bad("word_ids", f"expected {n_words} non-empty lists of token ids, one per label word")
        if self.backbone.kind not in KINDS:
            raise bad("backbone.kind", f"{self.backbone.kind!r} is not one of {', '.join(KINDS)}")
        if (self.encoder.kind not in ENCODERS or self.encoder.init not in PROMPT_INITS or self.encoder.hidden_size < 1
                or self.encoder.n_prompts < 0):
            raise bad("encoder", f"{asdict(self.encoder)} is not a valid prompt encoder")
        if self.label_bias is not None and (len(self.label_bias) != len(self.labels)
                                            or not all(math.isfinite(b) for b in self.label_bias)):
            raise bad("label_bias", f"expected {len(self.labels)} finite numbers, one per label")
        if self.head not in HEADS:
            raise bad("head", f"{self.head!r} is not one of {', '.join(HEADS)}")
        if tuple(self.head_features) not in FEATURES.values():
            raise bad("head_features", f"{self.head_features!r} is not one of "
                      f"{', '.join(map(repr, map(list, FEATURES.values())))}")
        if self.training.max_length < 1:
            raise bad("training.max_length", f"{self.training.max_length} is not a token count")
        try:
            template = self.parsed_template()
        except PtcliError as e:
            raise bad("template.text", e.message) from None
        if template.n_prompts != self.encoder.n_prompts:
            raise bad("encoder.n_prompts", f"{self.encoder.n_prompts}, but the template has {template.n_prompts} [P]")
        if template.has_text_b != (self.columns.text_b is not None):
            raise bad("columns.text_b", "it must name a column exactly when the template has <text_b>")
        unknown = sorted({d.label for d in self.demonstrations} - set(self.labels))
        if unknown:
            raise bad("demonstrations", f"label(s) {', '.join(map(repr, unknown[:5]))} are not among `labels`")
        if any((d.text_b is not None) != template.has_text_b for d in self.demonstrations):
            raise bad("demonstrations", "each needs a text_b exactly when the template has <text_b>")
        if self.chat and self.backbone.kind != "causal":
            raise bad("chat", "only a causal backbone is trained with --chat")


_DAMAGED = "the artifact is damaged or was edited by hand: restore it or train it again"
_META_ADAPTER = TypeAdapter(Meta)


def _upgrade_v1(raw: dict[str, Any]) -> dict[str, Any]:
    """Format 1 kept the training options flat beside the training record and the GGUF file name under `extra`."""
    raw = dict(raw)
    flat = raw.get("training")
    if isinstance(flat, dict):
        record = ("max_length", "n_train", "n_dev", "best_epoch", "precision", "device", "tune_backbone",
                  "tuned_fingerprint", "train_counts")
        training = {k: flat[k] for k in record if k in flat}
        training["seed"] = raw.get("seed", flat.get("seed"))
        training["args"] = {k: v for k, v in flat.items() if k not in record}
        raw["training"] = training
    backbone = raw.get("backbone")
    if isinstance(backbone, dict):
        extra = backbone.get("extra")
        raw["backbone"] = {**backbone, "gguf_file": extra.get("gguf_file") if isinstance(extra, dict) else None}
    return raw


def parse_meta(text: str, where: str) -> Meta:
    """Validate ptcli.json's text into a `Meta`, or raise one line naming the file, the field and the fix."""
    try:
        raw = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise PtcliError(f"{where}: unreadable JSON ({str(e)[:120]}); {_DAMAGED}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise PtcliError(f"{where}: not a ptcli artifact (no \"format\": \"{FORMAT}\")")
    version = raw.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise PtcliError(f"{where}: format_version {version!r} is not a version number; {_DAMAGED}")
    if version > FORMAT_VERSION:
        raise PtcliError(f"{where}: artifact format version {version} is newer than this ptcli reads "
                         f"({FORMAT_VERSION}); upgrade ptcli (pip install -U ptcli)")
    if version == 1:
        raw = {**_upgrade_v1(raw), "format_version": FORMAT_VERSION}
    try:
        meta = _META_ADAPTER.validate_json(json.dumps(raw))
    except ValidationError as e:
        first = e.errors()[0]
        name = ".".join(str(p) for p in first["loc"]) or "(top level)"
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise PtcliError(f"{where}: field {name}: {first['msg'].lower()}{more}; {_DAMAGED}") from None
    meta.check(where)
    return meta


@dataclass
class Artifact:
    path: Path
    meta: Meta
    prompts: torch.Tensor
    head: dict[str, torch.Tensor] | None = None  # head_weight, head_bias with --head linear

    @property
    def labels(self) -> list[str]:
        return list(self.meta.labels)

    def encoder_state(self) -> dict[str, torch.Tensor]:
        return _load_tensors(self.path / ENCODER)

    @property
    def tuned_backbone(self) -> Path | None:
        return self.path / BACKBONE_DIR if self.meta.training.tune_backbone else None

    def backbone_source(self, model: str | None = None) -> tuple[str, str | None, str | None]:
        """Where its backbone is now: (hub id or path, GGUF file inside that directory, hub revision to pin).

        `model` is where the user says it moved. A tuned backbone lives in the artifact; a local directory that is no
        longer at the name it was trained under is looked for at its recorded absolute path. A hub model is pinned to
        the commit it was trained on; a moved or tuned one is recognised by its fingerprint instead.
        """
        info = self.meta.backbone
        name = model or info.name
        gguf_file = info.gguf_file if model is None else None
        if self.tuned_backbone is not None:
            name, gguf_file = str(self.tuned_backbone), None
        elif model is None and info.local_path and not Path(name).exists() and not info.gguf_sha256:
            name = info.local_path
        if gguf_file and Path(name).name == gguf_file:
            gguf_file = None
        revision = info.revision if name == info.name and self.tuned_backbone is None else None
        return name, gguf_file, revision


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise PtcliError(f"{path}: cannot read the tensors ({str(e).splitlines()[0]}); {_DAMAGED}") from None


def load(path: str | Path) -> Artifact:
    p = Path(path)
    if not p.is_dir():
        raise PtcliError(f"{p}: not an artifact directory (expected the directory `ptcli train` wrote)")
    for name in (META, PROMPTS):
        if not (p / name).is_file():
            raise PtcliError(f"{p}: the artifact is incomplete, {name} is missing; train it again")
    try:
        text = (p / META).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise PtcliError(f"{p / META}: not UTF-8 (byte offset {e.start}); {_DAMAGED}") from None
    except OSError as e:
        raise PtcliError(f"{p / META}: cannot read it ({e.strerror})") from None
    meta = parse_meta(text, str(p / META))
    tensors = _load_tensors(p / PROMPTS)
    prompts = tensors.get("prompt_embeddings")
    shape = [meta.encoder.n_prompts, meta.encoder.hidden_size]
    if prompts is None or list(prompts.shape) != shape or not prompts.is_floating_point():
        got = "none" if prompts is None else f"{list(prompts.shape)} {prompts.dtype}"
        raise PtcliError(f"{p / PROMPTS}: expected prompt_embeddings of shape {shape}, found {got}; {_DAMAGED}")
    if not bool(torch.isfinite(prompts).all()):
        raise PtcliError(f"{p / PROMPTS}: the prompt vectors contain NaN or infinity; {_DAMAGED}")
    if meta.training.tune_backbone and not (p / BACKBONE_DIR / "config.json").is_file():
        raise PtcliError(f"{p}: trained with --tune-backbone but {BACKBONE_DIR}/ is missing; train it again")
    head = _head_tensors(tensors, meta, p / PROMPTS) if meta.head == "linear" else None
    return Artifact(path=p, meta=meta, prompts=prompts.float(), head=head)


def _head_tensors(tensors: dict[str, torch.Tensor], meta: Meta, where: Path) -> dict[str, torch.Tensor]:
    width = meta.encoder.hidden_size * len(meta.head_features)
    shapes = {WEIGHT: [len(meta.labels), width], BIAS: [len(meta.labels)]}
    for name, shape in shapes.items():
        t = tensors.get(name)
        if t is None or list(t.shape) != shape or not t.is_floating_point() or not bool(torch.isfinite(t).all()):
            got = "none" if t is None else f"{list(t.shape)} {t.dtype}"
            raise PtcliError(f"{where}: the artifact has a linear head (\"head\": \"linear\") but {name} is not "
                             f"{shape} finite floats (found {got}); {_DAMAGED}")
    return {name: tensors[name].float() for name in shapes}


def check_target(target: Path) -> None:
    """Refuse, before any work is done, an output directory that `save` could not write."""
    if target.exists() and not (target / META).is_file() and (not target.is_dir() or any(target.iterdir())):
        raise PtcliError(f"{target}: exists and is not a ptcli artifact; choose another --output directory")
    check_output_dir(target)


def save(
    target: Path,
    meta: Meta,
    prompts: torch.Tensor,
    encoder_state: dict[str, torch.Tensor],
    card: str,
    extra: Callable[[Path], None] | None = None,
    head: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write the artifact next to `target` and rename it into place; replaces an older artifact at `target`."""
    target = Path(target)
    check_target(target)
    meta.check(str(target / META))
    if (meta.head == "linear") != (head is not None):
        raise ValueError(f"meta.head is {meta.head!r} but the head tensors are {'given' if head else 'missing'}")
    with atomic_directory(target, "the artifact") as tmp:
        (tmp / META).write_text(meta.to_json(), encoding="utf-8")
        tensors = {"prompt_embeddings": prompts.detach().float().cpu().contiguous()}
        tensors.update({k: v.detach().float().cpu().contiguous() for k, v in (head or {}).items()})
        save_file(tensors, str(tmp / PROMPTS),
                  metadata={"format": FORMAT, "template": meta.template.text, "backbone": meta.backbone.name,
                            "fingerprint": meta.backbone.fingerprint})
        save_file({k: v.detach().cpu().contiguous() for k, v in encoder_state.items()}, str(tmp / ENCODER))
        (tmp / CARD).write_text(card, encoding="utf-8")
        if extra is not None:
            extra(tmp)
    return target
