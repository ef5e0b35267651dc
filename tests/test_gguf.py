"""GGUF loading: a tiny Qwen2 written as GGUF with the `gguf` package, converted once, cached by content hash."""

import os

import pytest
import tiny
import torch

from ptcli import gguf as ptcli_gguf
from ptcli.errors import PtcliError
from ptcli.gguf import sha256_file
from ptcli.loading import load_backbone
from ptcli.template import Template, TemplateEncoder


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PTCLI_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def gguf_file(models, tmp_path_factory):
    return tiny.write_gguf(models["qwen2"], tmp_path_factory.mktemp("gguf") / "tiny-qwen2.gguf")


def test_roundtrip_scores_match_the_original(models, gguf_file, cache):
    original = load_backbone(str(models["qwen2"]), device="cpu", precision="fp32")
    from_gguf = load_backbone(str(gguf_file), device="cpu", precision="fp32")
    assert from_gguf.kind == "causal" and from_gguf.info.gguf_sha256 == sha256_file(gguf_file)
    # The cache holds bf16 weights: compare with the original rounded the same way.
    original.model.to(torch.bfloat16).to(torch.float32)
    template = Template.parse("<text> It was [MASK]")
    words = [from_gguf.tokenize_word(w, True) for w in ("great", "bad")]
    assert words == [original.tokenize_word(w, True) for w in ("great", "bad")]
    rows = TemplateEncoder(template, from_gguf.tokenizer, 64, 1, 0).encode(["the movie was fun", "boring"])
    assert torch.allclose(from_gguf.score(rows, None, words), original.score(rows, None, words), atol=1e-4)


def test_conversion_is_cached_by_content(gguf_file, cache, monkeypatch, tmp_path):
    load_backbone(str(gguf_file), device="cpu")
    assert (cache / "gguf" / sha256_file(gguf_file) / "config.json").is_file()

    def no_conversion(*a, **kw):
        raise AssertionError("converted twice")

    import transformers

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_conversion)
    renamed = tmp_path / "renamed.gguf"
    renamed.write_bytes(gguf_file.read_bytes())
    source, digest = ptcli_gguf.converted(renamed)  # same content, another name: the cache answers
    assert digest == sha256_file(gguf_file) and source.endswith(digest)


def test_directory_plus_gguf_file(gguf_file, cache):
    bb = load_backbone(str(gguf_file.parent), device="cpu", gguf_file=gguf_file.name)
    assert bb.info.extra["gguf_file"] == gguf_file.name


def test_not_a_gguf_file(tmp_path, cache):
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not gguf at all")
    with pytest.raises(PtcliError, match="not a GGUF file"):
        load_backbone(str(fake), device="cpu")
    with pytest.raises(PtcliError, match="not found"):
        load_backbone(str(tmp_path / "missing.gguf"), device="cpu")


def test_predict_refuses_another_gguf(models, gguf_file, cache, tmp_path, review_files):
    from typer.testing import CliRunner

    from ptcli.cli import app

    data = tmp_path / "data.csv"
    data.write_text("text,label\n" + "".join(f"the movie was {w},{lab}\n" for w, lab in
                                             [("great", "great"), ("fun", "great"), ("bad", "bad"),
                                              ("boring", "bad")] * 3), encoding="utf-8")
    template = tmp_path / "t.txt"
    template.write_text("<text>[P] It was [MASK]", encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(app, ["train", str(data), "--template", str(template), "--model", str(gguf_file),
                                 "-o", str(tmp_path / "art"), "--epochs", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.stderr
    other_model = tiny.build_causal(tmp_path / "other", "qwen2", seed=5)
    other = tiny.write_gguf(other_model, tmp_path / "other.gguf")
    result = runner.invoke(app, ["predict", str(tmp_path / "art"), str(data), "--model", str(other)])
    assert result.exit_code == 1 and "SHA-256" in result.stderr
    result = runner.invoke(app, ["predict", str(tmp_path / "art"), str(data), "--device", "cpu"])
    assert result.exit_code == 0, result.stderr


def test_hash_index_reuses_a_hash_until_size_or_mtime_change(tmp_path, cache, monkeypatch):
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF" + b"a" * 100)
    calls = []
    real = ptcli_gguf.sha256_file
    monkeypatch.setattr(ptcli_gguf, "sha256_file", lambda p, *a: calls.append(p) or real(p, *a))
    first = ptcli_gguf.sha256_indexed(path)
    assert first == real(path) and len(calls) == 1
    assert ptcli_gguf.sha256_indexed(tmp_path / "." / "m.gguf") == first and len(calls) == 1  # same resolved path
    # same size, new content, new mtime: hashed again, and the new digest is returned
    st = path.stat()
    path.write_bytes(b"GGUF" + b"b" * 100)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    second = ptcli_gguf.sha256_indexed(path)
    assert len(calls) == 2 and second == real(path) != first
    # a different size with the old mtime is not trusted either
    path.write_bytes(b"GGUF" + b"b" * 101)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert ptcli_gguf.sha256_indexed(path) == real(path) and len(calls) == 3
    # a damaged index is only a cache miss
    (cache / "gguf" / "sha256-index.json").write_text("{not json", encoding="utf-8")
    assert ptcli_gguf.sha256_indexed(path) == real(path) and len(calls) == 4
