"""Where ptcli writes: every output path is checked before any work starts, and written atomically.

An output is refused up front when it could not be written (missing or non-directory parent, no permission, a
directory where a file goes) or when writing it would destroy something the command reads: an input file (the same
file under another name or a hard link included) or a file inside the artifact being read. Files are written to a
temporary sibling and renamed into place, with the permissions the user's umask gives any new file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ptcli.errors import PtcliError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def apply_umask(path: Path) -> None:
    """mkstemp/mkdtemp create 0600/0700; give the finished output the mode a plain `open` would have."""
    mask = _umask()
    if path.is_dir():
        for root, _dirs, files in os.walk(path):  # every directory comes round as a root
            os.chmod(root, 0o777 & ~mask)
            for name in files:
                os.chmod(os.path.join(root, name), 0o666 & ~mask)
    else:
        os.chmod(path, 0o666 & ~mask)


def _check_parent(path: Path, option: str) -> None:
    parent = path.parent
    if not parent.exists():
        raise PtcliError(f"{path}: the directory {parent} does not exist; create it first or choose another {option}")
    if not parent.is_dir():
        raise PtcliError(f"{path}: {parent} is not a directory; choose another {option}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".ptcli-probe-", dir=parent)
    except OSError as e:
        raise PtcliError(f"{path}: cannot write in {parent} ({e.strerror or e}); choose another {option}") from None
    os.close(fd)
    os.unlink(probe)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output_file(path: Path, reads: tuple[Path, ...] = (), protected: tuple[Path, ...] = (),
                      option: str = "--output") -> None:
    """Refuse an output file that cannot be written, or that is one of `reads` or lies inside a `protected` dir."""
    if path.is_dir():
        raise PtcliError(f"{path}: is a directory; give a file name such as predictions.csv for {option}")
    for source in reads:
        if _same_file(path, source) or path.resolve() == source.resolve():
            raise PtcliError(f"{path}: is the input {source}; writing there would destroy it, choose another "
                             f"{option}")
    for directory in protected:
        if path.resolve().is_relative_to(directory.resolve()):
            raise PtcliError(f"{path}: is inside the artifact {directory}; writing there would damage it, choose "
                             f"another {option}")
    _check_parent(path, option)


def check_output_dir(path: Path, option: str = "--output") -> None:
    """The parent of an output directory must exist and be writable (the directory itself is renamed into place)."""
    _check_parent(path, option)


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "w") -> Iterator[IO]:
    """Write `path` through a temporary sibling that replaces it only once the block completes; removed on any
    error, Ctrl-C or SIGTERM (see cli.py), so nothing half-written is ever left under the real name."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8", "newline": ""} if "b" not in mode else {})) as stream:
            yield stream
        apply_umask(tmp)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise PtcliError(f"{path}: cannot write it ({e.strerror or e}); nothing was written") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_directory(target: Path, what: str = "the output") -> Iterator[Path]:
    """Fill a temporary sibling of `target` in the block; it replaces `target` (an older one is moved aside and
    removed) only once the block completes, with the umask's modes. On any error, Ctrl-C or SIGTERM nothing is left."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        apply_umask(tmp)  # mkdtemp makes it 0700: what ptcli writes is meant to be shared like any other file
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise PtcliError(f"{target}: cannot write {what} ({e.strerror or e}); nothing was written") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
