"""Export the frozen prompt vectors, with the template and the backbone's identity alongside."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.torch import save_file

from ptcli import artifact
from ptcli.data import check_output_path
from ptcli.errors import UsageError

EXPORT_FORMATS = ("safetensors", "npy", "json")


@dataclass
class ExportArgs:
    artifact: Path
    output: Path
    format: str | None = None  # default: from the output suffix, else safetensors


def _identity(art: artifact.Artifact) -> dict[str, Any]:
    b = art.meta["backbone"]
    return {"template": art.meta["template"]["text"], "labels": art.labels, "verbalizer": art.meta["verbalizer"],
            "backbone": b["name"], "backbone_kind": b["kind"], "model_type": b["model_type"],
            "revision": b.get("revision"), "gguf_sha256": b.get("gguf_sha256"), "fingerprint": b["fingerprint"],
            "shape": list(art.prompts.shape), "ptcli_version": art.meta["ptcli_version"]}


def export(args: ExportArgs) -> dict[str, Any]:
    art = artifact.load(args.artifact)
    fmt = args.format or {".npy": "npy", ".json": "json"}.get(args.output.suffix.lower(), "safetensors")
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"--format {fmt!r}: choose one of {', '.join(EXPORT_FORMATS)}")
    check_output_path(args.output)
    identity = _identity(art)
    fd, name = tempfile.mkstemp(prefix=f".{args.output.name}.", dir=args.output.parent)
    os.close(fd)
    tmp = Path(name)
    written = [str(args.output)]
    try:
        if fmt == "safetensors":
            save_file({"prompt_embeddings": art.prompts.contiguous()}, str(tmp),
                      metadata={k: json.dumps(v, ensure_ascii=False) for k, v in identity.items()})
        elif fmt == "npy":
            with tmp.open("wb") as f:
                np.save(f, art.prompts.numpy(), allow_pickle=False)
            sidecar = args.output.with_suffix(args.output.suffix + ".json")
            sidecar.write_text(json.dumps(identity, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
            written.append(str(sidecar))
        else:
            tmp.write_text(json.dumps({**identity, "prompt_embeddings": art.prompts.tolist()}, ensure_ascii=False)
                           + "\n", encoding="utf-8")
        os.replace(tmp, args.output)
    finally:
        tmp.unlink(missing_ok=True)
    return {"written": written, "format": fmt, **identity}
