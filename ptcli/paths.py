"""Where ptcli keeps its caches: $PTCLI_CACHE, else the platform's user cache dir (e.g. ~/.cache/ptcli)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    root = os.environ.get("PTCLI_CACHE")
    if root:
        base = Path(root)
    else:
        from platformdirs import user_cache_dir

        base = Path(user_cache_dir("ptcli", appauthor=False))
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
