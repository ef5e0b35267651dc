"""An artifact's backbone vocabulary without its model: the input-embedding matrix, tokenizer and config.

`inspect` reads the learned prompts against the token embeddings and the PEFT export copies special-token rows;
neither needs the transformer. The backbone is found the way `Classifier.from_artifact` finds it (the tuned copy in
the artifact, the recorded directory, the cached conversion of the recorded GGUF, the hub cache, or `--model`), and
from a `model.safetensors` (or a sharded index) only the one embedding tensor is read. Without safetensors the
whole model is loaded as predict would. Either way the matrix must carry the artifact's fingerprint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ptcli.artifact import Artifact
from ptcli.backbone import fingerprint
from ptcli.console import log
from ptcli.errors import PtcliError

# Where architectures keep their input (token) embeddings; position and type embeddings end otherwise.
EMBEDDING_SUFFIXES = ("embed_tokens.weight", "word_embeddings.weight", "wte.weight", "tok_embeddings.weight",
                      "embed_in.weight")


@dataclass
class Vocabulary:
    embeddings: torch.Tensor  # [V, H] float32, the input-embedding matrix
    tokenizer: Any
    config: Any  # the transformers config
    location: str  # the directory (or name) it was read from
    source: str  # "safetensors": the one tensor was read; "model": the full model was loaded


@dataclass
class _Where:
    name: str  # what load_backbone would be given
    gguf_file: str | None
    revision: str | None
    directory: Path | None  # a model directory readable without loading the model, when there is one
    missing: bool  # a local directory or file that is not there (never looked up on the hub)


def find_vocabulary(art: Artifact, model: str | None = None) -> Vocabulary | None:
    """The artifact's backbone vocabulary, or None when the backbone is nowhere to be found and no `model` was
    given. Refuses a backbone whose embedding fingerprint differs from the artifact's."""
    where = _locate(art, model)
    vocab = _read_directory(where.directory) if where.directory is not None else None
    if vocab is None:
        vocab = _load_model(where, explicit=model is not None)
    if vocab is not None:
        _check(art, vocab)
    return vocab


def _locate(art: Artifact, model: str | None) -> _Where:
    # The same place Classifier.from_artifact looks, so inspect reads the very backbone predict would use.
    info = art.meta.backbone
    name, gguf_file, revision = art.backbone_source(model)
    is_gguf = gguf_file is not None or name.lower().endswith(".gguf")
    path = Path(name) / gguf_file if gguf_file else Path(name)
    recorded_local = model is None and (info.local_path is not None or art.tuned_backbone is not None)
    local = is_gguf or recorded_local or Path(name).is_absolute()
    if is_gguf:
        directory = _converted_gguf(art, path, model is not None)
    elif path.is_dir():
        directory = path
    else:
        directory = None if local else _hub_cache(name, revision)
    return _Where(name, gguf_file, revision, directory, missing=directory is None and local and not path.exists())


def _converted_gguf(art: Artifact, path: Path, explicit: bool) -> Path | None:
    """The cached safetensors conversion of a GGUF: by the recorded hash, or by the hash of the file given."""
    from ptcli import gguf
    from ptcli.paths import cache_dir

    recorded = art.meta.backbone.gguf_sha256
    digest = recorded if not explicit else None
    if digest is None and path.is_file():
        digest = gguf.sha256_indexed(path)
        if recorded and digest != recorded:
            raise PtcliError(f"{art.path}: trained on the GGUF file with SHA-256 {recorded[:16]}…, but {path} is "
                             f"{digest[:16]}…; pass the original file with --model")
    if digest is None:
        return None
    cached = cache_dir("gguf") / digest
    return cached if (cached / "config.json").is_file() else None


def _hub_cache(name: str, revision: str | None) -> Path | None:
    """The snapshot directory of a hub model already in the local cache (nothing is downloaded)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, "config.json", revision=revision)
    except (ImportError, ValueError, OSError):
        return None
    return Path(found).parent if isinstance(found, str) else None


def _read_directory(directory: Path) -> Vocabulary | None:
    embeddings = read_input_embeddings(directory)
    if embeddings is None:
        log(f"{directory}: no model.safetensors with a recognisable input-embedding tensor; loading the full model")
        return None
    from transformers import AutoConfig, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(str(directory), trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(str(directory), trust_remote_code=False)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PtcliError(f"{directory}: cannot read its config or tokenizer ({first}); pass the backbone with "
                         "--model") from None
    return Vocabulary(embeddings, tokenizer, config, str(directory), "safetensors")


def read_input_embeddings(directory: Path) -> torch.Tensor | None:
    """The input-embedding tensor [V, H] (float32) of a safetensors checkpoint, read alone; None when there is no
    safetensors checkpoint or no tensor named like an input embedding."""
    from safetensors import SafetensorError, safe_open

    single, index = directory / "model.safetensors", directory / "model.safetensors.index.json"
    try:
        if single.is_file():
            with safe_open(str(single), "pt") as f:
                files = dict.fromkeys(f.keys(), single)
        elif index.is_file():
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            files = {key: directory / file for key, file in weight_map.items()}
        else:
            return None
        candidates = sorted((k for k in files if k.endswith(EMBEDDING_SUFFIXES)), key=len)
        if not candidates:
            return None
        with safe_open(str(files[candidates[0]]), "pt") as f:
            return f.get_tensor(candidates[0]).float()
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as e:
        raise PtcliError(f"{directory}: cannot read its safetensors checkpoint ({str(e).splitlines()[0]}); pass "
                         "a readable copy of the backbone with --model") from None


def _load_model(where: _Where, explicit: bool) -> Vocabulary | None:
    from ptcli.loading import load_backbone

    if where.missing and not explicit:
        return None
    try:
        log(f"loading backbone {where.name} in full (no safetensors to read the embeddings from)…")
        backbone = load_backbone(where.name, device="cpu", precision="fp32", gguf_file=where.gguf_file,
                                 revision=where.revision)
    except PtcliError:
        if explicit:
            raise
        return None
    config = backbone.model.config
    location = getattr(config, "_name_or_path", None) or where.name  # a GGUF's converted copy, a directory or hub id
    return Vocabulary(backbone.input_embeddings.weight.detach().float(), backbone.tokenizer, config, location, "model")


def _check(art: Artifact, vocab: Vocabulary) -> None:
    expected = art.meta.training.tuned_fingerprint or art.meta.backbone.fingerprint
    found = fingerprint(vocab.embeddings)
    if found != expected:
        raise PtcliError(f"{art.path}: trained on backbone {art.meta.backbone.name} (fingerprint {expected}), but "
                         f"{vocab.location} has fingerprint {found}; these prompts only mean something with the "
                         "original backbone, pass it with --model")
    if vocab.embeddings.shape[1] != art.prompts.shape[1]:
        raise PtcliError(f"{art.path}: prompts are {art.prompts.shape[1]}-wide but {vocab.location} embeds tokens "
                         f"in {vocab.embeddings.shape[1]} dimensions; pass the original backbone with --model")
