"""Loading a backbone: hub id, local directory or GGUF file in; a frozen `Backbone` on its device and precision out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ptcli import precision as prec
from ptcli.backbone import Backbone, BackboneInfo, fingerprint
from ptcli.errors import PtcliError


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
    training: bool = False,
) -> Backbone:
    """Load a backbone by hub id, local directory or GGUF file; frozen unless `trainable`. `training` says prompts
    will be trained through it (int8 is refused then)."""
    from ptcli import causal, gguf, mlm

    torch_device = prec.resolve_device(device)
    prec.check(precision, torch_device, training)  # before the slow part
    info_extra: dict[str, Any] = {}
    source = name
    gguf_sha = None
    if gguf_file is not None or name.lower().endswith(".gguf"):
        path = Path(name) / gguf_file if gguf_file else Path(name)
        source, gguf_sha = gguf.converted(path)
        info_extra["gguf_file"] = path.name
    model, tokenizer, config = _from_pretrained(source, revision)
    kind = backbone_kind(config.model_type)
    fp = fingerprint(model.get_input_embeddings().weight)
    chosen = prec.resolve(precision, torch_device, model, key=fp, trainable=trainable, training=training)
    prec.apply(model, chosen, torch_device)
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
        fingerprint=fp,
        tokenizer=type(tokenizer).__name__,
        extra=info_extra,
    )
    cls = mlm.MaskedLM if kind == "mlm" else causal.CausalLM
    return cls(model, tokenizer, info, torch_device, chosen)


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
