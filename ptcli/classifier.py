"""A template, a verbalizer and a backbone put together: rows of text in, label log-scores out.

Training, prediction and evaluation all go through `Classifier`, so the three can never disagree on how a row is
encoded or scored.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ptcli import batching
from ptcli import chat as chats
from ptcli import demos as demonstrations
from ptcli.artifact import Artifact, Demonstration
from ptcli.backbone import Backbone
from ptcli.console import log, warn
from ptcli.errors import PtcliError
from ptcli.head import LabelHead
from ptcli.loading import load_backbone
from ptcli.template import Context, Encoded, Template, TemplateEncoder
from ptcli.verbalizer import Verbalizer, label_scores


@dataclass
class Classifier:
    backbone: Backbone
    template: Template
    verbalizer: Verbalizer
    word_ids: list[list[int]]
    owner: list[int]
    encoder: TemplateEncoder
    label_bias: torch.Tensor | None = None  # [n_labels] added to every row's label log-scores (ptcli/label_bias.py)
    head: LabelHead | None = None  # --head linear: a read-out of the slot state added to the words' scores (head.py)
    demos: list[Demonstration] = field(default_factory=list)  # shown before every row (demos.py)
    chat: bool = False  # the template inside the backbone's chat template (chat.py)
    text_first: bool = False  # the template in the backbone's reading order (Backbone.reading_order)
    text_first_names: bool = True  # each input moves with the clause naming it (False: format 4's rule)
    demo_prompts: bool = True  # the demonstrations carry the template's [P] (False: format 3-7's rule; demos.py)

    @classmethod
    def build(cls, backbone: Backbone, template: Template, verbalizer: Verbalizer, max_length: int,
              where: str = "verbalizer", warn_template: bool = True, demos: list[Demonstration] | None = None,
              chat: bool = False, text_first: bool = False, text_first_names: bool = True,
              demo_prompts: bool = True) -> Classifier:
        words, owner = verbalizer.flat()
        read = backbone.reading_order(template, text_first_names) if text_first else template
        if warn_template and read is not template:
            log(f"{template.path}: the backbone reads left to right, so the inputs after the slot go first: "
                f"{read.source!r} (--no-text-first reads it as written)")
        head, query = chats.wrap(read, backbone) if chat else ([], read)
        word_ids = [backbone.tokenize_word(w, query.space_before_slot) for w in words]
        backbone.check_words(words, word_ids, template.mask_count, where)
        if warn_template:
            for message in backbone.template_warnings(read):
                warn(message)
        limit = position_limit(backbone.model)
        if limit is not None and max_length > limit:
            if warn_template:
                warn(f"--max-length {max_length} is more than {backbone.info.name} can take ({limit} positions); "
                     f"using {limit}")
            max_length = limit
        slot = backbone.slot_length(template.mask_count, word_ids)
        encoder = TemplateEncoder(query, backbone.tokenizer, max_length, slot, backbone.n_special())
        ids, prompt = demonstrations.prefix(demos or [], backbone, read, verbalizer, max_length, demo_prompts)
        if head or ids:
            context = Context(head + ids, [-1] * len(head) + prompt)
            encoder = _with_context(encoder, context, limit, backbone.info.name, warn_template)
        return cls(backbone, template, verbalizer, word_ids, owner, encoder, demos=list(demos or []), chat=chat,
                   text_first=text_first, text_first_names=text_first_names, demo_prompts=demo_prompts)

    @property
    def labels(self) -> list[str]:
        return self.verbalizer.labels

    def encode(self, texts: list[str], texts_b: list[str] | None = None) -> list[Encoded]:
        return self.encoder.encode(texts, texts_b)

    def logits(self, rows: list[Encoded], prompts: torch.Tensor | None) -> torch.Tensor:
        """[B, n_labels] label log-scores (unnormalised across labels), `head` and `label_bias` added; differentiable in
        `prompts` (and in the head and `label_bias` when they are trained)."""
        if self.head is None:
            out = label_scores(self.backbone.score(rows, prompts, self.word_ids), self.owner, len(self.labels))
        else:
            scores, states = self.backbone.score_and_state(rows, prompts, self.word_ids)
            out = label_scores(scores, self.owner, len(self.labels)) + self.head(states)
        return out if self.label_bias is None else out + self.label_bias.to(out.device, out.dtype)

    @contextlib.contextmanager
    def using(self, **parts: Any) -> Iterator[None]:
        """Score with these `label_bias` and/or `head` (None: without) inside the block, with its own after it."""
        unknown = set(parts) - {"label_bias", "head"}
        if unknown:
            raise TypeError(f"Classifier.using: unknown part(s) {sorted(unknown)}")
        kept = {name: getattr(self, name) for name in parts}
        for name, value in parts.items():
            setattr(self, name, value)
        try:
            yield
        finally:
            for name, value in kept.items():
                setattr(self, name, value)

    def words_and_states(self, rows: list[Encoded], prompts: torch.Tensor | None, batch_size: int
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """[N, labels] the label words' scores (no head, no bias) and [N, len(head.STATES), H] the states, without
        gradients, in float32 on the backbone's device: what --head-init fit and --head-refit fit the head on."""
        order, scores, states = [], [], []
        self.backbone.train(False)
        with torch.no_grad():
            for idx in _plan(rows, batch_size):
                s, h = self.backbone.score_and_state([rows[i] for i in idx], prompts, self.word_ids)
                scores.append(label_scores(s, self.owner, len(self.labels)).float())
                states.append(h.float())
                order += idx
        back = torch.empty(len(order), dtype=torch.long)
        back[torch.tensor(order, dtype=torch.long)] = torch.arange(len(order))  # rows in their own order again
        back = back.to(self.backbone.device)
        return torch.cat(scores)[back], torch.cat(states)[back]

    def predict_proba(self, rows: list[Encoded], prompts: torch.Tensor | None, batch_size: int,
                      on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """[N, n_labels] probabilities. Rows are batched longest-first, cut where padding would cost more than
        another pass (ptcli.batching), at most `batch_size` a batch; `on_batch(n)` is told after each batch of n
        rows (progress bars)."""
        out = np.zeros((len(rows), len(self.labels)), dtype=np.float64)
        self.backbone.train(False)
        with torch.inference_mode():
            for idx in _plan(rows, batch_size):
                logits = self.logits([rows[i] for i in idx], prompts)
                out[idx] = torch.softmax(logits.double(), dim=-1).cpu().numpy()
                if on_batch is not None:
                    on_batch(len(idx))
        return out

    def predict_slices(self, rows: list[Encoded], prompts: torch.Tensor | None, batch_size: int,
                       on_batch: Callable[[int], None] | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """`predict_proba` over consecutive slices of rows, yielding (first row, [slice, n_labels] probabilities):
        however many labels there are, no more than MAX_PROB_CELLS probabilities are held at once."""
        step = max(batch_size, rows_per_slice(len(self.labels)))
        for start in range(0, len(rows), step):
            yield start, self.predict_proba(rows[start : start + step], prompts, batch_size, on_batch)

    @classmethod
    def from_artifact(cls, art: Artifact, device: str = "auto", precision: str = "auto",
                      model: str | None = None) -> tuple[Classifier, torch.Tensor]:
        """Rebuild the classifier an artifact was trained with, refusing a different backbone."""
        name, gguf_file, revision = art.backbone_source(model)
        backbone = load_backbone(name, device=device, precision=precision, gguf_file=gguf_file, revision=revision)
        return cls.for_artifact(art, backbone)

    @classmethod
    def for_artifact(cls, art: Artifact, backbone: Backbone) -> tuple[Classifier, torch.Tensor]:
        """The artifact's classifier on a backbone already loaded, after checking it is the one it was trained on."""
        info = art.meta.backbone
        name = backbone.info.name
        expected = art.meta.training.tuned_fingerprint or info.fingerprint
        if info.gguf_sha256 and backbone.info.gguf_sha256 and backbone.info.gguf_sha256 != info.gguf_sha256:
            raise PtcliError(f"{art.path}: trained on the GGUF file with SHA-256 {info.gguf_sha256[:16]}…, but "
                             f"{name} is {backbone.info.gguf_sha256[:16]}…; pass the original file with --model")
        if backbone.info.fingerprint != expected:
            raise PtcliError(f"{art.path}: trained on backbone {info.name} (fingerprint {expected}), but {name} has "
                             f"fingerprint {backbone.info.fingerprint}; these prompts only work with the original "
                             "backbone, pass it with --model")
        if art.prompts.shape[1] != backbone.hidden_size:
            raise PtcliError(f"{art.path}: prompts are {art.prompts.shape[1]}-wide but {name} has hidden size "
                             f"{backbone.hidden_size}")
        verbalizer = Verbalizer(labels=art.labels, words=art.meta.words())
        clf = cls.build(backbone, art.meta.parsed_template(), verbalizer, art.meta.training.max_length,
                        where=str(art.path), warn_template=False, demos=art.meta.demonstrations, chat=art.meta.chat,
                        text_first=art.meta.text_first, text_first_names=art.meta.text_first_names,
                        demo_prompts=art.meta.demo_prompts)
        if clf.word_ids != art.meta.word_ids:
            raise PtcliError(f"{art.path}: the label words tokenize differently with {name}'s tokenizer than at "
                             "training time; use the tokenizer the artifact was trained with")
        if art.meta.label_bias is not None:
            clf.label_bias = torch.tensor(art.meta.label_bias, dtype=torch.float32, device=backbone.device)
        if art.head is not None:
            clf.head = LabelHead.from_tensors(art.head, tuple(art.meta.head_features)).to(backbone.device).eval()
        return clf, art.prompts.to(backbone.device)


def _plan(rows: list[Encoded], batch_size: int) -> list[list[int]]:
    """Row indices in batches, longest first (ptcli.batching): what every pass over many rows runs in."""
    return batching.plan([len(r.before) + len(r.after) for r in rows], batch_size)


def _with_context(encoder: TemplateEncoder, context: Context, limit: int | None, name: str, warn_about: bool
                  ) -> TemplateEncoder:
    """The encoder with the shared context in front of its rows, which are cut shorter where context + row would
    not fit the model's positions."""
    room = encoder.max_length if limit is None else min(encoder.max_length, limit - len(context.ids))
    need = encoder.max_length - encoder.budget + 1  # the template, its slot and one token of text
    if room < need:
        raise PtcliError(f"--demos/--chat: the shared prefix (demonstrations, chat template) takes "
                         f"{len(context.ids)} tokens and the template at least {need}, more than {name}'s {limit} "
                         "positions; use fewer --demos, or a lower --max-length (it cuts the demonstrations too)")
    if room < encoder.max_length and warn_about:
        warn(f"--max-length {encoder.max_length}: the shared prefix takes {len(context.ids)} of {name}'s {limit} "
             f"positions; rows are cut to {room} tokens")
    t = encoder
    return TemplateEncoder(t.template, t.tokenizer, room, t.slot_length, t.n_special, context)


# [rows × labels] float64 probabilities held at once: 32 MB. 10,000 intents × 20,000 rows would be 1.6 GB.
MAX_PROB_CELLS = 4_000_000


def rows_per_slice(n_labels: int) -> int:
    return max(1, MAX_PROB_CELLS // n_labels)


# RoBERTa-style models number positions from padding_idx + 1, so two of their position embeddings are never used.
_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text", "longformer",
                     "xmod", "roberta-prelayernorm", "mpnet", "ernie_m")


def position_limit(model: object) -> int | None:
    """How many token positions the model can embed, or None when it does not say (rotary models say too)."""
    config = getattr(model, "config", None)
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if not isinstance(limit, int) or limit < 1:
        return None
    if getattr(config, "model_type", "") in _OFFSET_POSITIONS:
        limit -= (getattr(config, "pad_token_id", None) or 0) + 1
    return limit
