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


def read_json_cache(path: Path) -> dict:
    """A cache file's JSON object; {} when it is missing or damaged (a cache is only a shortcut, rebuilt as used)."""
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json_cache(path: Path, data: dict) -> None:
    """Replace a cache file atomically (a concurrent reader sees the old file or the new one); an unwritable cache
    only costs the next command the work it would have saved."""
    import json

    from ptcli.errors import PtcliError
    from ptcli.outputs import atomic_file

    try:
        with atomic_file(path) as f:
            json.dump(data, f, indent=1, sort_keys=True)
    except (PtcliError, OSError):  # OSError: not even a temporary file could be made there
        pass
