"""The artifact directory: what training leaves behind and predict/eval/export read.

    ptcli.json            metadata: template, labels, label words + token ids, backbone identity and fingerprint,
                          encoder config, training args, dev metrics, versions
    prompts.safetensors   `prompt_embeddings` [m, H]: the frozen prompt, all that prediction needs
    encoder.safetensors   the prompt encoder's weights, so `train --resume` can continue
    README.md             model card
    backbone/             only with --tune-backbone: the trained backbone (safetensors)

It is written into a temporary sibling directory and renamed into place, so an interrupted run leaves nothing
half-written. Only safetensors and JSON: nothing is unpickled when an artifact is opened.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ptcli.errors import PtcliError

FORMAT = "ptcli-artifact"
FORMAT_VERSION = 1
META = "ptcli.json"
PROMPTS = "prompts.safetensors"
ENCODER = "encoder.safetensors"
CARD = "README.md"
BACKBONE_DIR = "backbone"


@dataclass
class Artifact:
    path: Path
    meta: dict[str, Any]
    prompts: torch.Tensor

    @property
    def labels(self) -> list[str]:
        return list(self.meta["labels"])

    def encoder_state(self) -> dict[str, torch.Tensor]:
        return _load_tensors(self.path / ENCODER)

    @property
    def tuned_backbone(self) -> Path | None:
        p = self.path / BACKBONE_DIR
        return p if self.meta["training"].get("tune_backbone") else None


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise PtcliError(f"{path}: cannot read the tensors ({str(e).splitlines()[0]}); the artifact is damaged, "
                         "train it again") from None


def load(path: str | Path) -> Artifact:
    p = Path(path)
    if not p.is_dir():
        raise PtcliError(f"{p}: not an artifact directory (expected the directory `ptcli train` wrote)")
    for name in (META, PROMPTS):
        if not (p / name).is_file():
            raise PtcliError(f"{p}: the artifact is incomplete, {name} is missing; train it again")
    try:
        meta = json.loads((p / META).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PtcliError(f"{p / META}: unreadable ({e}); the artifact is damaged, train it again") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise PtcliError(f"{p / META}: not a ptcli artifact (no \"format\": \"{FORMAT}\")")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise PtcliError(f"{p}: artifact format version {version} is newer than this ptcli reads "
                         f"({FORMAT_VERSION}); upgrade ptcli (pip install -U ptcli)")
    for key in ("template", "labels", "verbalizer", "word_ids", "backbone", "encoder", "training"):
        if key not in meta:
            raise PtcliError(f"{p / META}: the key {key!r} is missing; the artifact is damaged, train it again")
    prompts = _load_tensors(p / PROMPTS).get("prompt_embeddings")
    if prompts is None or prompts.ndim != 2 or prompts.shape[0] != meta["encoder"]["n_prompts"]:
        raise PtcliError(f"{p / PROMPTS}: no prompt_embeddings of shape [{meta['encoder']['n_prompts']}, H]; "
                         "the artifact is damaged, train it again")
    if meta["training"].get("tune_backbone") and not (p / BACKBONE_DIR / "config.json").is_file():
        raise PtcliError(f"{p}: trained with --tune-backbone but {BACKBONE_DIR}/ is missing; train it again")
    return Artifact(path=p, meta=meta, prompts=prompts)


def check_target(target: Path) -> None:
    """Refuse, before any work is done, an output that `save` could not write."""
    if target.exists() and not (target / META).is_file() and (not target.is_dir() or any(target.iterdir())):
        raise PtcliError(f"{target}: exists and is not a ptcli artifact; choose another --output directory")
    if not target.parent.exists():
        raise PtcliError(f"{target}: the directory {target.parent} does not exist; create it first")


def save(
    target: Path,
    meta: dict[str, Any],
    prompts: torch.Tensor,
    encoder_state: dict[str, torch.Tensor],
    card: str,
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write the artifact next to `target` and rename it into place; replaces an older artifact at `target`."""
    target = Path(target)
    check_target(target)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta}
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        (tmp / META).write_text(json.dumps(meta, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        save_file({"prompt_embeddings": prompts.detach().float().cpu().contiguous()}, str(tmp / PROMPTS),
                  metadata={"format": FORMAT, "template": meta["template"]["text"],
                            "backbone": meta["backbone"]["name"], "fingerprint": meta["backbone"]["fingerprint"]})
        save_file({k: v.detach().cpu().contiguous() for k, v in encoder_state.items()}, str(tmp / ENCODER))
        (tmp / CARD).write_text(card, encoding="utf-8")
        if extra is not None:
            extra(tmp)
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
