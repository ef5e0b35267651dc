"""`export-prompts --format peft`: the learned prompts as a PEFT P-tuning adapter directory.

The directory holds what PEFT's own `save_pretrained` writes for P-tuning: `adapter_config.json` (`peft_type`
P_TUNING, task CAUSAL_LM) and `adapter_model.safetensors` with one tensor, `prompt_embeddings`
[num_virtual_tokens, token_dim], the prompt encoder's *output*. `PeftModel.from_pretrained(base, DIR)` loads it in
inference mode (the default, `is_trainable=False`), where PEFT builds no encoder and feeds those rows to the model
as they are, in front of the input embeddings.

PEFT prepends its virtual tokens to everything it is given, special tokens included, so the export is exact only
for templates whose [P] all come first. ptcli's input for such a template is

    ptcli:  [leading special tokens] P0 … Pm-1 | template tokens after the [P], row filled in
    PEFT:   virtual tokens V0 … Vk-1          | input_ids

The virtual tokens are therefore the tokenizer's leading special tokens as their embedding rows (Llama's BOS; none
for GPT-2 or Qwen, whose tokenizers add none), then the m prompt vectors; positions, attention and every input
embedding then match ptcli's, and the next-token logits at the end of the prefix are ptcli's slot logits. The
input_ids to give PEFT are the template's tokens after the [P] *without* special tokens (`add_special_tokens=False`),
tokenized as ptcli does: the input text (with the spaces before <text>) and each literal piece separately.

Masked LMs are refused: PEFT has no masked-LM task, and its P-tuning would put the prompts before [CLS].
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ptcli.artifact import Artifact
from ptcli.backbone import special_tokens
from ptcli.embeddings import Vocabulary, find_vocabulary
from ptcli.errors import PtcliError
from ptcli.outputs import atomic_directory, check_output_dir
from ptcli.template import Template, render

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
README = "README.md"
EXAMPLE = "[P][P][P][P]<text> 这条评论是[MASK]"


def export_peft(art: Artifact, target: Path, identity: dict[str, Any]) -> dict[str, Any]:
    """Write the adapter directory atomically; returns what export() reports."""
    check_target(art, target)
    check_exportable(art)
    vocab = find_vocabulary(art)
    if vocab is None:
        raise PtcliError(f"{art.path}: the PEFT export needs the backbone {art.meta.backbone.name} (its config, "
                         "tokenizer and special-token embeddings) and it is not there any more; restore it where it "
                         "was trained from, or export --format safetensors, which needs no backbone")
    lead = special_tokens(vocab.tokenizer)[0]
    virtual = torch.cat([vocab.embeddings[lead].float(), art.prompts.float()]).contiguous()
    config = adapter_config(art, vocab, int(virtual.shape[0]))
    _write(target, config, virtual, readme(art, lead, vocab))
    return {"written": [str(target)], "format": "peft", **identity, "num_virtual_tokens": int(virtual.shape[0]),
            "leading_special_tokens": lead}


def check_target(art: Artifact, target: Path) -> None:
    if target.resolve().is_relative_to(art.path.resolve()):
        raise PtcliError(f"{target}: is inside the artifact {art.path}; writing there would damage it, choose another "
                         "--output directory")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise PtcliError(f"{target}: exists and is not an empty directory; choose a new directory for --output")
    check_output_dir(target)


def check_exportable(art: Artifact) -> None:
    if art.meta.backbone.kind != "causal":
        raise PtcliError(f"{art.path}: PEFT cannot run these prompts on a masked LM ({art.meta.backbone.name}): it has "
                         "no masked-LM task, and its P-tuning would put the prompts before [CLS] instead of where the "
                         "template has them; export --format safetensors instead")
    if art.meta.demonstrations or art.meta.chat:
        raise PtcliError(f"{art.path}: trained with {'--demos' if art.meta.demonstrations else '--chat'}, whose "
                         "shared prefix goes before the [P]; PEFT can only prepend its virtual tokens, so export "
                         "--format safetensors instead")
    template = art.meta.read_template()
    if not leading_prompts_only(template):
        raise PtcliError(f"{art.path}: template {template.source!r} has text before a [P]; PEFT's P-tuning can only "
                         f"prepend its virtual tokens, so only templates whose [P] all come first (e.g. {EXAMPLE}) "
                         "export exactly; export --format safetensors instead, or train with such a template")


def leading_prompts_only(template: Template) -> bool:
    """Every [P] comes before any literal text, input or slot (at least one [P])."""
    kinds = [s.kind for s in template.segments]
    lead = next((i for i, k in enumerate(kinds) if k != "prompt"), len(kinds))
    return template.n_prompts > 0 and lead == template.n_prompts


def adapter_config(art: Artifact, vocab: Vocabulary, n_virtual: int) -> dict[str, Any]:
    """PEFT's PromptEncoderConfig, key for key as its save_pretrained writes it. The encoder fields describe
    ptcli's encoder in PEFT's terms; PEFT only builds an encoder when the adapter is loaded for training."""
    text = vocab.config.get_text_config() if hasattr(vocab.config, "get_text_config") else vocab.config
    meta, width = art.meta, int(art.prompts.shape[1])
    hub = meta.backbone.revision is not None and not meta.training.tune_backbone
    config: dict[str, Any] = {
        "auto_mapping": None,
        "base_model_name_or_path": meta.backbone.name if hub else vocab.location,
        "encoder_dropout": meta.encoder.dropout,
        "encoder_hidden_size": width // 2 if meta.encoder.kind == "lstm" else width,
        "encoder_num_layers": 2,
        "encoder_reparameterization_type": "LSTM" if meta.encoder.kind == "lstm" else "MLP",
        "inference_mode": True,
        "modules_to_save": None,
        "num_attention_heads": int(text.num_attention_heads),
        "num_layers": int(text.num_hidden_layers),
        "num_transformer_submodules": 1,
        "num_virtual_tokens": n_virtual,
        "peft_type": "P_TUNING",
        "revision": meta.backbone.revision if hub else None,
        "task_type": "CAUSAL_LM",
        "token_dim": width,
    }
    version = _peft_version()
    if version is not None:
        config["peft_version"] = version
    return dict(sorted(config.items()))


def _peft_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("peft")
    except PackageNotFoundError:
        return None


def readme(art: Artifact, lead: list[int], vocab: Vocabulary) -> str:
    template = art.meta.read_template()
    before_slot = render(template.segments[template.n_prompts : template.slot_index()])
    specials = vocab.tokenizer.convert_ids_to_tokens(lead)
    lead_text = (f"the embedding rows of {', '.join(specials)} (the tokenizer's leading special tokens), then "
                 if lead else "")
    return (f"# PEFT P-tuning adapter exported by ptcli\n\nFrom `{art.path}`: template `{template.source}` on "
            f"`{art.meta.backbone.name}` (fingerprint `{art.meta.backbone.fingerprint}`), labels "
            f"{', '.join(art.labels)}.\n\nThe {len(lead) + template.n_prompts} virtual tokens are {lead_text}the "
            f"{template.n_prompts} learned prompt vectors. Load with `PeftModel.from_pretrained(base, DIR)` "
            "(inference mode) and give it the ids of\n\n```\n" + before_slot + "\n```\n\nwith the row filled in, "
            "tokenized with `add_special_tokens=False` (the input and each literal piece separately, as ptcli does). "
            "The next-token logits at the last position are the slot's; "
            "label words: " + ", ".join(f"{label} = {' / '.join(art.meta.verbalizer[label])}" for label in art.labels)
            + ".\n")


def _write(target: Path, config: dict[str, Any], virtual: torch.Tensor, card: str) -> None:
    with atomic_directory(target, "the adapter") as tmp:  # replaces an empty directory too
        (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        save_file({"prompt_embeddings": virtual}, str(tmp / WEIGHTS), metadata={"format": "pt"})
        (tmp / README).write_text(card, encoding="utf-8")
