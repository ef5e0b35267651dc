"""Export the frozen prompt vectors, with the template and the backbone's identity alongside."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.torch import save

from ptcli import artifact
from ptcli.console import warn
from ptcli.errors import UsageError
from ptcli.outputs import atomic_file, check_output_file

EXPORT_FORMATS = ("safetensors", "npy", "json", "peft")


@dataclass
class ExportArgs:
    artifact: Path
    output: Path
    format: str | None = None  # default: from the output suffix, else safetensors


def _identity(art: artifact.Artifact) -> dict[str, Any]:
    b = art.meta.backbone
    return {"template": art.meta.template.text, "labels": art.labels, "verbalizer": art.meta.verbalizer,
            "backbone": b.name, "backbone_kind": b.kind, "model_type": b.model_type, "revision": b.revision,
            "gguf_sha256": b.gguf_sha256, "fingerprint": b.fingerprint, "shape": list(art.prompts.shape),
            "ptcli_version": art.meta.ptcli_version,
            "label_bias": art.meta.label_bias,  # add to the label log-scores (--calibrate); None: no bias
            # linear: head_weight·concat(rms_norm(state) for head_features)/√len(head_features) + head_bias is added
            "head": art.meta.head, "head_features": art.meta.head_features}


def _head_lists(art: artifact.Artifact) -> dict[str, Any]:
    """--head linear: its tensors as JSON lists (the .npy holds the prompts alone)."""
    return {k: v.tolist() for k, v in (art.head or {}).items()}


def export(args: ExportArgs) -> dict[str, Any]:
    fmt = args.format or {".npy": "npy", ".json": "json"}.get(args.output.suffix.lower(), "safetensors")
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"--format {fmt!r}: choose one of {', '.join(EXPORT_FORMATS)}")
    art = artifact.load(args.artifact)
    if fmt == "peft":  # a directory, not a file
        from ptcli.peft_export import export_peft

        if art.meta.label_bias is not None:
            warn(f"{art.path}: its per-label bias (--calibrate {art.meta.training.calibrate}) is not part of a PEFT "
                 "adapter; add its label_bias (in ptcli.json) to the label scores yourself")
        if art.head is not None:
            warn(f"{art.path}: its linear head (--head linear) is not part of a PEFT adapter, which scores with the "
                 "label words alone; export to safetensors or json to keep it")
        return export_peft(art, args.output, _identity(art))
    outputs = [args.output]
    if fmt == "npy":
        outputs.append(args.output.with_suffix(args.output.suffix + ".json"))
    for path in outputs:  # all checked before anything is written
        check_output_file(path, protected=(art.path,))
    identity = _identity(art)
    if fmt == "safetensors":
        data = save({"prompt_embeddings": art.prompts.contiguous(), **(art.head or {})},
                    metadata={k: json.dumps(v, ensure_ascii=False) for k, v in identity.items()})
        with atomic_file(args.output, "wb") as f:
            f.write(data)
    elif fmt == "npy":
        with atomic_file(args.output, "wb") as f:
            np.save(f, art.prompts.numpy(), allow_pickle=False)
        with atomic_file(outputs[1]) as f:
            f.write(json.dumps({**identity, **_head_lists(art)}, ensure_ascii=False, indent=2) + "\n")
    else:
        with atomic_file(args.output) as f:
            f.write(json.dumps({**identity, "prompt_embeddings": art.prompts.tolist(), **_head_lists(art)},
                               ensure_ascii=False) + "\n")
    return {"written": [str(p) for p in outputs], "format": fmt, **identity}
