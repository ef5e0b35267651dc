"""Property-based tests of the artifact loader and of predict's round trip.

Whatever is done to an artifact's files, `artifact.load` returns a valid artifact or raises PtcliError; whatever
cells an input holds, predict writes every one back unchanged, in order.
"""

import json
import os
import string
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_artifact import make_meta

from ptcli import artifact
from ptcli.data import TableWriter, read_table
from ptcli.errors import PtcliError
from ptcli.predict import PredictArgs, predict

EXAMPLES = int(os.environ.get("PTCLI_FUZZ_EXAMPLES", "60"))
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                 max_size=3), max_leaves=8)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "art"
    artifact.save(path, make_meta(), torch.randn(2, 4), {"w": torch.ones(3)}, "# card\n")
    return path


def loads_or_refuses(path: Path) -> None:
    try:
        art = artifact.load(path)
    except PtcliError as e:
        assert "\n" not in e.message
        return
    assert art.prompts.shape == (art.meta.encoder.n_prompts, art.meta.encoder.hidden_size)
    assert bool(torch.isfinite(art.prompts).all())


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


def _copy(saved: Path) -> Path:
    tmp = Path(tempfile.mkdtemp())
    target = tmp / "art"
    target.mkdir()
    for p in saved.iterdir():
        (target / p.name).write_bytes(p.read_bytes())
    return target


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_metadata_with_any_field_replaced(saved, data):
    path = _copy(saved)
    meta = json.loads((path / "ptcli.json").read_text())
    where = data.draw(st.sampled_from(list(_paths(meta))[1:]))
    node = meta
    for key in where[:-1]:
        node = node[key]
    if data.draw(st.booleans()):
        node[where[-1]] = data.draw(JSON)
    elif isinstance(node, dict):
        del node[where[-1]]
    else:
        node.pop(where[-1])
    (path / "ptcli.json").write_text(json.dumps(meta), encoding="utf-8")
    loads_or_refuses(path)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from([artifact.META, artifact.PROMPTS]), cut=st.floats(0, 1),
       flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=4),
       junk=st.none() | st.binary(max_size=64))
def test_truncated_flipped_or_junk_files(saved, name, cut, flips, junk):
    path = _copy(saved)
    data = bytearray((path / name).read_bytes() if junk is None else junk)
    for where, value in flips:
        if data:
            data[int(where * (len(data) - 1))] = value
    (path / name).write_bytes(bytes(data[: max(0, int(cut * len(data)))] if cut < 1 else data))
    loads_or_refuses(path)


# --- predict never drops, reorders or alters a cell -----------------------------------------------------------------

CELLS = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)


@pytest.fixture(scope="module")
def trained(models, review_files, tmp_path_factory):
    from ptcli.train import TrainArgs, train

    out = tmp_path_factory.mktemp("fuzz-art") / "art"
    train(TrainArgs(data=review_files["train"], template=review_files["template"], model=str(models["bert"]),
                    verbalizer=review_files["verbalizer"], output=out, device="cpu", precision="fp32", epochs=1))
    return out


@settings(max_examples=max(5, EXAMPLES // 6), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(cells=st.lists(st.tuples(CELLS, CELLS), min_size=1, max_size=12),
       fmt=st.sampled_from(["csv", "tsv", "jsonl"]), out_fmt=st.sampled_from(["csv", "tsv", "jsonl"]),
       chunk=st.integers(1, 5), extra=st.sampled_from(["note", "prob", "id 2", string.ascii_letters[:3]]))
def test_predict_round_trip_keeps_every_cell(trained, cells, fmt, out_fmt, chunk, extra):
    tmp = Path(tempfile.mkdtemp())
    df = pd.DataFrame(cells, columns=["text", extra])
    src = tmp / f"in.{fmt}"
    with src.open("w", encoding="utf-8", newline="") as f:
        TableWriter(f, fmt).write(df)
    dst = tmp / f"out.{out_fmt}"
    predict(PredictArgs(artifact=trained, input=src, output=dst, device="cpu", precision="fp32", chunk_rows=chunk))
    back = read_table(dst)
    assert back["text"].tolist() == df["text"].tolist()
    assert back[extra].tolist() == df[extra].tolist()
    assert list(back.columns[:2]) == ["text", extra] and len(back) == len(df)
