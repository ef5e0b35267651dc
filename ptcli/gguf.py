"""GGUF checkpoints: dequantize once through transformers, cache a bf16 safetensors copy keyed by the file's SHA-256.

Loading a GGUF dequantizes every tensor in Python (~30 s for a 0.5B model on 2 CPU cores); the converted copy
loads in a second or two. Keying the cache by content hash, not path, means a renamed file is reused and a changed
file is never mistaken for the old one; the artifact stores the same hash so predict refuses a different file.
Hashing a 500 MB file costs seconds on every command, so hashes are remembered in a small index keyed by resolved
path, size and mtime; a file whose size or mtime changed is hashed again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from ptcli.console import log
from ptcli.errors import PtcliError
from ptcli.paths import cache_dir, read_json_cache, write_json_cache


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _index_path() -> Path:
    return cache_dir("gguf") / "sha256-index.json"


def _read_index() -> dict[str, dict[str, object]]:
    return read_json_cache(_index_path())


def sha256_indexed(path: Path) -> str:
    """The file's SHA-256, from the index when its resolved path, size and mtime_ns match the recorded ones."""
    resolved = path.resolve()
    st = resolved.stat()
    key = str(resolved)
    index = _read_index()
    entry = index.get(key)
    if isinstance(entry, dict) and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
        digest = entry.get("sha256")
        if isinstance(digest, str) and len(digest) == 64:
            return digest
    log(f"hashing {path.name}…")
    digest = sha256_file(resolved)
    index = _read_index()  # re-read: another process may have added entries meanwhile
    index[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
    write_json_cache(_index_path(), index)
    return digest


def converted(path: Path) -> tuple[str, str]:
    """Return (directory of the converted model, SHA-256 of the GGUF), converting on first use."""
    if not path.is_file():
        raise PtcliError(f"{path}: GGUF file not found; pass an existing .gguf file (or a directory and --gguf-file)")
    with path.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise PtcliError(f"{path}: not a GGUF file (no GGUF magic bytes at offset 0)")
    digest = sha256_indexed(path)
    target = cache_dir("gguf") / digest
    if (target / "config.json").is_file():
        return str(target), digest
    try:
        import gguf  # noqa: F401  (transformers needs it; fail here with the install hint)
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise PtcliError("loading GGUF files needs the gguf extra: pip install 'ptcli[gguf]'") from None
    import torch

    log(f"converting {path.name} to a cached bf16 copy (once per file; this takes a while)…")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=torch.float32, trust_remote_code=False
        )
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise PtcliError(f"{path}: transformers could not load this GGUF ({str(e).splitlines()[0]})") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}-", dir=target.parent))
    try:
        # The weights are plain floats by now; drop the GGUF "quantizer" marker so transformers will save them.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.to(torch.bfloat16).save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "SOURCE").write_text(f"{path.resolve()}\nsha256 {digest}\n", encoding="utf-8")
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return str(target), digest
