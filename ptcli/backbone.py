"""The frozen language model behind a template, behind one small interface.

A `Backbone` turns encoded rows (template + text, split at the label slot) and the prompt vectors into one
log-score per candidate label word. Masked LMs (`mlm.py`) fill the slot with k [MASK] tokens and read one forward
pass; causal LMs (`causal.py`) score each word left to right. Nothing else in ptcli needs to know which it is.
Loading lives in `loading.py`, device and precision policy in `precision.py`.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from ptcli.errors import PtcliError
from ptcli.precision import FP32, Precision
from ptcli.template import Encoded, Template


@dataclass
class BackboneInfo:
    """Everything an artifact records to find, and recognise, the same backbone again."""

    name: str  # what the user passed: hub id, directory or .gguf file
    kind: str  # "mlm" | "causal"
    model_type: str
    revision: str | None = None  # hub commit hash, when loaded from the hub
    local_path: str | None = None
    gguf_sha256: str | None = None
    fingerprint: str = ""  # hash of the input-embedding matrix (see `fingerprint`)
    tokenizer: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def fingerprint(embeddings: torch.Tensor) -> str:
    """A hash of the input-embedding matrix: shape plus ~1k evenly spaced rows, rounded to bf16.

    Rounding to bf16 makes the same checkpoint hash the same whether it runs in fp32 or bf16; sampling rows keeps it
    fast for 150k-token vocabularies while any other checkpoint still differs almost surely.
    """
    w = embeddings.detach()
    step = max(1, w.shape[0] // 1024)
    rows = w[::step].to("cpu", torch.bfloat16).contiguous().view(torch.int16).numpy().tobytes()
    h = hashlib.sha256(f"{tuple(w.shape)}".encode())
    h.update(rows)
    return h.hexdigest()[:32]


class Backbone:
    kind: ClassVar[str]

    def __init__(self, model: Any, tokenizer: Any, info: BackboneInfo, device: torch.device,
                 precision: Precision = FP32):
        self.model = model
        self.tokenizer = tokenizer
        self.info = info
        self.device = device
        self.precision = precision
        self.dtype = precision.compute  # compute precision (autocast dtype), what artifacts record
        self.prefix_special, self.suffix_special = special_tokens(tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    # --- what the rest of ptcli calls -------------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return int(self.input_embeddings.weight.shape[1])

    @property
    def input_embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    def tokenize_word(self, word: str, space_before: bool) -> list[int]:
        return list(self.tokenizer(((" " if space_before else "") + word), add_special_tokens=False)["input_ids"])

    def n_special(self) -> int:
        return len(self.prefix_special) + len(self.suffix_special)

    def slot_length(self, mask_count: int, word_ids: list[list[int]]) -> int:
        """Tokens the slot occupies in the longest sequence (the encoder's truncation budget depends on it)."""
        raise NotImplementedError

    def check_words(self, words: list[str], word_ids: list[list[int]], mask_count: int, where: str) -> None:
        """Refuse label words this backbone cannot score, naming the word, its tokens and what was expected."""
        unk = self.tokenizer.unk_token_id
        seen: dict[tuple[int, ...], str] = {}
        for word, ids in zip(words, word_ids, strict=True):
            tokens = self.tokenizer.convert_ids_to_tokens(ids)
            if not ids:
                raise PtcliError(f"{where}: label word {word!r} tokenizes to nothing; choose a real word")
            if unk is not None and unk in ids:
                raise PtcliError(
                    f"{where}: label word {word!r} has tokens unknown to the {self.info.name} tokenizer "
                    f"({tokens}); choose a word in its vocabulary"
                )
            if tuple(ids) in seen and seen[tuple(ids)] != word:
                raise PtcliError(f"{where}: label words {seen[tuple(ids)]!r} and {word!r} tokenize identically")
            seen[tuple(ids)] = word

    def template_warnings(self, template: Template) -> list[str]:
        return []

    def reading_order(self, template: Template, names: bool = True) -> Template:
        """The template as `--text-first` has this backbone read it (`names`: as in Template.inputs_first). A masked
        LM sees both sides of the slot at once, so the order as written is already right."""
        return template

    def score(self, rows: list[Encoded], prompts: torch.Tensor | None, word_ids: list[list[int]]) -> torch.Tensor:
        """[B, W] float32: for each row and candidate word, the sum of its tokens' log-probabilities in the slot."""
        return self.score_and_state(rows, prompts, word_ids)[0]

    def score_and_state(self, rows: list[Encoded], prompts: torch.Tensor | None, word_ids: list[list[int]]
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """`score`, and [B, len(head.STATES), H] float32 (--head linear): the last hidden state each row's slot is
        read from, and the mean of the row's last hidden states (`--head-features slot+mean`)."""
        raise NotImplementedError

    def train(self, mode: bool) -> None:
        self.model.train(mode)

    # --- shared mechanics -------------------------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision.compute == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.precision.compute)

    def embed(self, ids: torch.Tensor, prompt_idx: torch.Tensor, prompts: torch.Tensor | None) -> torch.Tensor:
        """Input embeddings with the prompt vectors spliced in where `prompt_idx >= 0`."""
        emb = self.input_embeddings(ids.clamp(min=0))
        if prompts is None or not bool((prompt_idx >= 0).any()):
            return emb
        vectors = prompts.to(emb.dtype)[prompt_idx.clamp(min=0)]
        return torch.where((prompt_idx >= 0).unsqueeze(-1), vectors, emb)

    def to_tensor(self, rows: list[list[int]], pad: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Pad a ragged list to [B, L] (left or right) and return it with its 0/1 mask."""
        length = max((len(r) for r in rows), default=0)
        out = torch.full((len(rows), length), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, r in enumerate(rows):
            if not r:
                continue
            sl = slice(length - len(r), length) if left else slice(0, len(r))
            out[i, sl] = torch.tensor(r, dtype=torch.long)
            mask[i, sl] = 1
        return out.to(self.device), mask.to(self.device)


def special_tokens(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a text ([CLS] … [SEP], <s> … </s>, BOS …)."""
    probe = "hello"
    bare = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
    full = list(tokenizer(probe, add_special_tokens=True)["input_ids"])
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return full[:start], full[start + len(bare) :]
    return [], []


@contextlib.contextmanager
def inference(backbone: Backbone) -> Iterator[None]:
    with torch.inference_mode(), backbone.autocast():
        yield


def __getattr__(name: str) -> Any:
    # `from ptcli.backbone import load_backbone` predates loading.py; resolved lazily so that this module, which the
    # implementations import, never imports them back.
    if name in ("load_backbone", "backbone_kind"):
        from ptcli import loading

        return getattr(loading, name)
    if name == "resolve_device":
        from ptcli.precision import resolve_device

        return resolve_device
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
