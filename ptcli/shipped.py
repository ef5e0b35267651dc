"""Shipped templates: the template files that travel inside the package (`ptcli/templates/`), found by name.

`--template review_zh` (also `review_zh.txt`, `review_zh.causal`, or `templates/review_zh.txt` from any directory)
means the shipped file when no such file exists where you are; its `.verbalizer.json` comes along unless
`--verbalizer` names another. A file you have always wins over a shipped name. `index.json` beside the templates
records each one's purpose and the backbone kind it is written for; the template parser never reads it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path, PurePath

from ptcli.console import log
from ptcli.errors import PtcliError

TEMPLATE_SUFFIX = ".txt"
VERBALIZER_SUFFIX = ".verbalizer.json"
INDEX = "index.json"
REPO_DIR = "templates"  # `templates/review_zh.txt` as in the README: the shipped file when run elsewhere


@dataclass(frozen=True)
class Shipped:
    name: str
    kind: str  # "masked" | "causal": the backbone kind the template is written for
    purpose: str
    template: str
    verbalizer: str | None

    def to_dict(self) -> dict[str, str | None]:
        return asdict(self)


def directory() -> Path:
    """Where the shipped templates are: inside the installed package, so a wheel install has them too."""
    return Path(__file__).resolve().parent / "templates"


def _index() -> dict[str, dict[str, str]]:
    path = directory() / INDEX
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise PtcliError(f"{path}: cannot read the shipped template index ({e}); reinstall ptcli") from None


def catalog() -> list[Shipped]:
    """Every shipped template, by name."""
    index = _index()
    found = []
    for path in sorted(directory().glob(f"*{TEMPLATE_SUFFIX}"), key=lambda p: p.name.removesuffix(TEMPLATE_SUFFIX)):
        name = path.name.removesuffix(TEMPLATE_SUFFIX)
        entry = index.get(name, {})
        verbalizer = path.with_name(name + VERBALIZER_SUFFIX)
        found.append(Shipped(name=name, kind=entry.get("kind", "?"), purpose=entry.get("purpose", ""),
                             template=str(path), verbalizer=str(verbalizer) if verbalizer.is_file() else None))
    return found


def _local(path: Path) -> bool:
    """A file (or pipe) the user has: it wins over a shipped name. A directory of that name does not."""
    return os.path.lexists(path) and not os.path.isdir(path)


def _bare(value: Path) -> str | None:
    """`value` as a name a shipped file could have: no directory part, or the repository's `templates/`."""
    parts = PurePath(value).parts
    if len(parts) == 1 or (len(parts) == 2 and parts[0] == REPO_DIR):
        return parts[-1]
    return None


def shipped_template(value: Path) -> str | None:
    """The shipped template's name that `value` means, if any (whether or not a local file shadows it)."""
    bare = _bare(value)
    if bare is None:
        return None
    name = bare.removesuffix(TEMPLATE_SUFFIX)
    return name if (directory() / (name + TEMPLATE_SUFFIX)).is_file() else None


def resolve_verbalizer(value: Path) -> Path:
    """`--verbalizer review_zh` (or `review_zh.verbalizer.json`): the shipped file when no such file is here."""
    bare = _bare(value)
    if _local(value) or bare is None:
        return value
    path = directory() / (bare.removesuffix(VERBALIZER_SUFFIX) + VERBALIZER_SUFFIX)
    return path if path.is_file() else value


def resolve(template: Path, verbalizer: Path | None) -> tuple[Path, Path | None]:
    """The template and verbalizer files `train` reads, shipped names resolved (see the module docstring)."""
    if verbalizer is not None:
        verbalizer = resolve_verbalizer(verbalizer)
    if _local(template):
        return template, verbalizer
    name = shipped_template(template)
    if name is None:
        if _bare(template) is not None and len(PurePath(template).parts) == 1:
            names = ", ".join(s.name for s in catalog())
            raise PtcliError(f"{template}: no such file, and no shipped template of that name; give a template file "
                             f"or one of {names} (`ptcli templates` lists them)")
        return template, verbalizer  # the template loader says what is wrong with it
    path = directory() / (name + TEMPLATE_SUFFIX)
    log(f"template: shipped {name} ({path})")
    if verbalizer is None and (default := path.with_name(name + VERBALIZER_SUFFIX)).is_file():
        log(f"verbalizer: shipped {default.name}")
        verbalizer = default
    return path, verbalizer
