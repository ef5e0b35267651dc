import json

import pytest
import torch

from ptcli import artifact
from ptcli.errors import PtcliError

META = {
    "template": {"text": "<text>[P][MASK]", "path": "t.txt"},
    "labels": ["a", "b"],
    "verbalizer": {"a": ["x"], "b": ["y"]},
    "word_ids": [[1], [2]],
    "backbone": {"name": "m", "fingerprint": "f"},
    "encoder": {"kind": "lstm", "n_prompts": 2, "hidden_size": 4, "dropout": 0.0},
    "training": {"max_length": 32},
}


def save(tmp_path, name="art", **kw):
    return artifact.save(tmp_path / name, META, torch.randn(2, 4), {"w": torch.ones(3)}, "# card\n", **kw)


def test_roundtrip(tmp_path):
    path = save(tmp_path)
    art = artifact.load(path)
    assert art.labels == ["a", "b"] and art.prompts.shape == (2, 4)
    assert torch.equal(art.encoder_state()["w"], torch.ones(3))
    assert {p.name for p in path.iterdir()} == {"README.md", "encoder.safetensors", "ptcli.json",
                                                "prompts.safetensors"}
    assert json.loads((path / "ptcli.json").read_text())["format_version"] == artifact.FORMAT_VERSION
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dir left behind


def test_replaces_an_older_artifact_but_not_other_directories(tmp_path):
    save(tmp_path)
    save(tmp_path)
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    with pytest.raises(PtcliError, match="not a ptcli artifact"):
        save(tmp_path, "notes")
    assert (other / "keep.txt").exists()


def test_failure_while_writing_leaves_nothing(tmp_path):
    def boom(_):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save(tmp_path, extra=boom)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["missing_prompts", "missing_meta", "truncated", "future", "bad_json", "not_ours"])
def test_damaged_artifacts_are_refused(tmp_path, damage):
    path = save(tmp_path)
    meta = json.loads((path / "ptcli.json").read_text())
    if damage == "missing_prompts":
        (path / "prompts.safetensors").unlink()
        expected = "prompts.safetensors is missing"
    elif damage == "missing_meta":
        (path / "ptcli.json").unlink()
        expected = "ptcli.json is missing"
    elif damage == "truncated":
        data = (path / "prompts.safetensors").read_bytes()
        (path / "prompts.safetensors").write_bytes(data[: len(data) // 2])
        expected = "damaged"
    elif damage == "future":
        meta["format_version"] = artifact.FORMAT_VERSION + 1
        (path / "ptcli.json").write_text(json.dumps(meta))
        expected = "upgrade ptcli"
    elif damage == "bad_json":
        (path / "ptcli.json").write_text("{")
        expected = "unreadable"
    else:
        meta["format"] = "something-else"
        (path / "ptcli.json").write_text(json.dumps(meta))
        expected = "not a ptcli artifact"
    with pytest.raises(PtcliError, match=expected):
        artifact.load(path)


def test_not_a_directory(tmp_path):
    with pytest.raises(PtcliError, match="not an artifact directory"):
        artifact.load(tmp_path / "nope")


def test_output_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "art").write_text("x")
    with pytest.raises(PtcliError, match="not a ptcli artifact"):
        save(tmp_path)
    assert (tmp_path / "art").read_text() == "x"
