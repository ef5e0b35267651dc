"""`ptcli inspect`: what an artifact holds, and what its learned prompts look like from the backbone's vocabulary.

Everything but the prompt reading comes from ptcli.json. The reading puts each [P] vector next to the backbone's
input embeddings: its nearest tokens by cosine similarity and its length relative to a typical token's (the
median token-embedding norm). Prompts far from every token (low similarity) or much longer than tokens are
common and not a fault: P-tuning optimises them freely, the reading only shows how word-like they ended up.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ptcli import artifact
from ptcli.checks import check_at_least
from ptcli.embeddings import Vocabulary, find_vocabulary

CHUNK_ROWS = 32768  # vocabulary rows normalised at a time: bounds the extra memory for 150k-token vocabularies


@dataclass
class InspectArgs:
    artifact: Path
    model: str | None = None  # where the backbone is now, if it moved
    top: int = 5  # nearest tokens per [P]


@dataclass
class Neighbour:
    token_id: int
    token: str  # the vocabulary entry (Ġgreat, ##好)
    text: str  # what it decodes to (" great", "好")
    similarity: float  # cosine similarity to the prompt vector


@dataclass
class PromptReading:
    index: int
    norm: float
    relative_norm: float  # norm / median token-embedding norm
    nearest: list[Neighbour]


def inspect_artifact(args: InspectArgs) -> dict[str, Any]:
    """The artifact's summary as plain JSON-able data, with the prompt reading when the backbone is found."""
    check_at_least("top", args.top)
    art = artifact.load(args.artifact)
    report = describe(art)
    vocab = find_vocabulary(art, args.model)
    if vocab is None:
        report["prompts"] = None
        report["prompt_note"] = (f"backbone {art.meta.backbone.name} not found; reading the prompts as vocabulary "
                                 "needs it: pass --model PATH")
        return report
    median, readings = read_prompts(art.prompts, vocab, args.top)
    report["backbone"].update(read_from=vocab.location, embeddings_from=vocab.source)
    for label in report["labels"]:
        for word in label["words"]:
            word["tokens"] = vocab.tokenizer.convert_ids_to_tokens(word["token_ids"])
    report["median_token_norm"] = median
    report["prompts"] = [asdict(r) for r in readings]
    report["prompt_note"] = None
    return report


def describe(art: artifact.Artifact) -> dict[str, Any]:
    meta = art.meta
    template = meta.parsed_template()
    ids = iter(meta.word_ids)
    labels = [{"label": label, "train_rows": meta.training.train_counts.get(label, 0),
               "words": [{"word": w, "token_ids": next(ids)} for w in meta.verbalizer[label]]}
              for label in meta.labels]
    backbone = asdict(meta.backbone)
    backbone["tuned_fingerprint"] = meta.training.tuned_fingerprint
    training = asdict(meta.training)
    training.pop("tuned_fingerprint")
    return {
        "artifact": str(art.path),
        "ptcli_version": meta.ptcli_version,
        "created": meta.created,
        "template": {"text": meta.template.text, "n_prompts": template.n_prompts, "mask_count": template.mask_count},
        "labels": labels,
        "backbone": backbone,
        "encoder": asdict(meta.encoder),
        "training": training,
        "dev": {"untrained": asdict(meta.dev_metrics_untrained), "trained": asdict(meta.dev_metrics)},
        "history": [asdict(e) for e in meta.history],
        "label_bias": meta.label_bias,  # per-label log-space bias (--calibrate); None: none
        "head": meta.head,  # words: the verbalizer alone; linear: plus the slot-state read-out (--head)
        "head_features": meta.head_features,  # what a linear head reads (head.STATES)
    }


def read_prompts(prompts: torch.Tensor, vocab: Vocabulary, top: int) -> tuple[float, list[PromptReading]]:
    """(median token-embedding norm, one reading per prompt). Rows past the tokenizer's length (padding rows some
    checkpoints carry) are left out: no text decodes to them."""
    tokenizer = vocab.tokenizer
    n = min(vocab.embeddings.shape[0], len(tokenizer))
    p = prompts.float()
    p_norm = p.norm(dim=1)
    unit_p = p / p_norm.clamp_min(1e-12).unsqueeze(1)
    norms, sims = [], []
    for start in range(0, n, CHUNK_ROWS):
        rows = vocab.embeddings[start : min(start + CHUNK_ROWS, n)].float()
        row_norm = rows.norm(dim=1)
        norms.append(row_norm)
        sims.append(unit_p @ (rows / row_norm.clamp_min(1e-12).unsqueeze(1)).T)
    median = float(torch.cat(norms).median())
    values, ids = torch.cat(sims, dim=1).topk(min(top, n), dim=1)
    readings = []
    for i in range(p.shape[0]):
        nearest = [Neighbour(int(t), str(tokenizer.convert_ids_to_tokens(int(t))), tokenizer.decode([int(t)]),
                             float(v)) for v, t in zip(values[i], ids[i], strict=True)]
        readings.append(PromptReading(i, float(p_norm[i]), float(p_norm[i]) / median if median else 0.0, nearest))
    return median, readings
