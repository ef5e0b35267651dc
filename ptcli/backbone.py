"""The frozen language model behind a template, behind one small interface.

A `Backbone` turns encoded rows (template + text, split at the label slot) and the prompt vectors into one
log-score per candidate label word. Masked LMs (`mlm.py`) fill the slot with k [MASK] tokens and read one forward
pass; causal LMs (`causal.py`) score each word left to right. Nothing else in ptcli needs to know which it is.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ptcli.errors import PtcliError, UsageError
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

    def __init__(self, model: Any, tokenizer: Any, info: BackboneInfo, device: torch.device, dtype: torch.dtype):
        self.model = model
        self.tokenizer = tokenizer
        self.info = info
        self.device = device
        self.dtype = dtype  # compute precision: bf16 autocast or fp32
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

    def score(self, rows: list[Encoded], prompts: torch.Tensor | None, word_ids: list[list[int]]) -> torch.Tensor:
        """[B, W] float32: for each row and candidate word, the sum of its tokens' log-probabilities in the slot."""
        raise NotImplementedError

    def train(self, mode: bool) -> None:
        self.model.train(mode)

    # --- shared mechanics -------------------------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

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


# --- loading --------------------------------------------------------------------------------------------------

def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise PtcliError(f"--device {device}: CUDA is not available on this machine (torch "
                             f"{torch.__version__}); use --device cpu or --device auto")
        return torch.device(device)
    if device == "cpu":
        return torch.device("cpu")
    raise UsageError(f"--device {device!r}: choose auto, cpu or cuda")


_BF16_PROBE: dict[int, bool] = {}


def bf16_is_faster_on_cpu(hidden: int) -> bool:
    """Time a matmul of the model's width in fp32 and under bf16 autocast; CPUs differ too much to guess."""
    if hidden not in _BF16_PROBE:
        a, b = torch.randn(256, hidden), torch.randn(hidden, 4 * hidden)

        def best(ctx: Any) -> float:
            times = []
            for _ in range(3):
                t = time.perf_counter()
                with ctx():
                    a @ b
                times.append(time.perf_counter() - t)
            return min(times)

        fp32 = best(contextlib.nullcontext)
        bf16 = best(lambda: torch.autocast("cpu", dtype=torch.bfloat16))
        _BF16_PROBE[hidden] = bf16 * 1.2 < fp32
    return _BF16_PROBE[hidden]


def resolve_dtype(precision: str, device: torch.device, hidden: int) -> torch.dtype:
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if precision != "auto":
        raise UsageError(f"--precision {precision!r}: choose auto, fp32 or bf16")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    # Small models gain nothing from bf16 on CPU and lose determinism against fp32 references.
    return torch.bfloat16 if hidden >= 512 and bf16_is_faster_on_cpu(hidden) else torch.float32


def backbone_kind(model_type: str) -> str:
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    # Checked in this order because BERT-family configs appear in both tables (BertLMHeadModel).
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "mlm"
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "causal"
    raise PtcliError(f"model type {model_type!r} is neither a masked nor a causal language model; ptcli needs one")


def load_backbone(
    name: str,
    device: str = "auto",
    precision: str = "auto",
    gguf_file: str | None = None,
    trainable: bool = False,
    revision: str | None = None,
) -> Backbone:
    """Load a backbone by hub id, local directory or GGUF file; frozen unless `trainable`."""
    from ptcli import causal, gguf, mlm

    torch_device = resolve_device(device)
    info_extra: dict[str, Any] = {}
    source = name
    gguf_sha = None
    if gguf_file is not None or name.lower().endswith(".gguf"):
        path = Path(name) / gguf_file if gguf_file else Path(name)
        source, gguf_sha = gguf.converted(path)
        info_extra["gguf_file"] = path.name
    model, tokenizer, config = _from_pretrained(source, revision)
    kind = backbone_kind(config.model_type)
    hidden = int(model.get_input_embeddings().weight.shape[1])
    dtype = resolve_dtype(precision, torch_device, hidden)
    # A frozen backbone can live in bf16; a trained one keeps fp32 master weights and uses bf16 only in autocast.
    weights_dtype = torch.float32 if trainable else dtype
    model.to(device=torch_device, dtype=weights_dtype)
    model.eval()
    model.requires_grad_(trainable)
    local = Path(source)
    info = BackboneInfo(
        name=name,
        kind=kind,
        model_type=config.model_type,
        revision=getattr(config, "_commit_hash", None) if not local.exists() else None,
        local_path=str(local.resolve()) if local.exists() else None,
        gguf_sha256=gguf_sha,
        fingerprint=fingerprint(model.get_input_embeddings().weight),
        tokenizer=type(tokenizer).__name__,
        extra=info_extra,
    )
    cls = mlm.MaskedLM if kind == "mlm" else causal.CausalLM
    return cls(model, tokenizer, info, torch_device, dtype)


def _from_pretrained(source: str, revision: str | None = None) -> tuple[Any, Any, Any]:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    kw: dict[str, Any] = {"trust_remote_code": False, "revision": revision}
    try:
        config = AutoConfig.from_pretrained(source, **kw)
        auto = AutoModelForMaskedLM if backbone_kind(config.model_type) == "mlm" else AutoModelForCausalLM
        tokenizer = AutoTokenizer.from_pretrained(source, **kw)
        model = auto.from_pretrained(source, dtype=torch.float32, **kw)
    except PtcliError:
        raise
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PtcliError(
            f"--model {source}: could not load it ({first}); pass a local model directory, a .gguf file, or a "
            "hub id reachable from this machine"
        ) from None
    return model, tokenizer, config


@contextlib.contextmanager
def inference(backbone: Backbone) -> Iterator[None]:
    with torch.inference_mode(), backbone.autocast():
        yield
