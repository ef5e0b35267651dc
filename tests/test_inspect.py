"""`ptcli inspect`: the artifact summary, and the learned prompts read against the backbone's token embeddings."""

import json
import random
import shutil

import pytest
import torch
from safetensors.torch import save_file
from test_cli import assert_clean_error, invoke
from tiny import ENGLISH

from ptcli.embeddings import read_input_embeddings
from ptcli.loading import load_backbone

CAUSAL_TEMPLATE = "[P][P]<text> It was [MASK]"


def english_files(directory):
    """Tiny English sentiment rows for the causal models (their BPE vocabulary knows only these words)."""
    rng = random.Random(0)
    rows = ["text,label"]
    for i in range(16):
        label = "pos" if i % 2 else "neg"
        cue = rng.choice(["great", "wonderful", "fun"] if label == "pos" else ["bad", "awful", "boring"])
        rows.append(f"the movie was {cue} {' '.join(rng.choice(ENGLISH) for _ in range(4))},{label}")
    (directory / "en.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (directory / "causal.txt").write_text(CAUSAL_TEMPLATE + "\n", encoding="utf-8")
    (directory / "en.verbalizer.json").write_text('{"pos": "great", "neg": "bad"}', encoding="utf-8")
    return directory / "en.csv", directory / "causal.txt", directory / "en.verbalizer.json"


def train_artifact(model, out, review_files, epochs=2):
    if "bert" in str(model):
        data, template, verbalizer = review_files["train"], review_files["template"], review_files["verbalizer"]
    else:
        data, template, verbalizer = english_files(out.parent)
    result = invoke("-q", "train", data, "--template", template, "--model", model, "--verbalizer", verbalizer,
                    "-o", out, "--epochs", epochs, "--device", "cpu", "--encoder", "mlp",
                    "--head", "words")  # with_prompts rewrites prompts.safetensors with the prompts alone
    assert result.exit_code == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def artifacts(models, review_files, tmp_path_factory):
    built = {}

    def get(name):
        if name not in built:
            built[name] = train_artifact(models[name], tmp_path_factory.mktemp(f"inspect-{name}") / "art",
                                         review_files)
        return built[name]

    return get


def embedding_matrix(model_dir):
    return load_backbone(str(model_dir), device="cpu", precision="fp32").input_embeddings.weight.detach().float()


def with_prompts(art, tmp_path, prompts):
    copy = tmp_path / "copy"
    shutil.copytree(art, copy)
    save_file({"prompt_embeddings": prompts.contiguous()}, str(copy / "prompts.safetensors"))
    return copy


def inspect_json(*args):
    result = invoke("inspect", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("name", ["bert", "gpt2", "qwen2"])
def test_a_prompt_set_to_a_token_embedding_reads_as_that_token(models, artifacts, tmp_path, name):
    art = artifacts(name)
    meta = json.loads((art / "ptcli.json").read_text())
    emb = embedding_matrix(models[name])
    target, other = meta["word_ids"][0][0], meta["word_ids"][1][0]  # the label words' tokens: 好/差, great/bad
    prompts = torch.stack([emb[target], 3.0 * emb[other]])  # scaling changes the norm, not the direction
    report = inspect_json(with_prompts(art, tmp_path, prompts), "--top", 3)

    first, second = report["prompts"]
    assert first["nearest"][0]["token_id"] == target
    assert first["nearest"][0]["similarity"] == pytest.approx(1.0, abs=1e-5)
    assert first["nearest"][1]["similarity"] < 1.0 - 1e-3 and len(first["nearest"]) == 3
    assert first["nearest"][0]["text"].strip() == meta["verbalizer"][meta["labels"][0]][0]
    assert second["nearest"][0]["token_id"] == other
    assert second["nearest"][0]["similarity"] == pytest.approx(1.0, abs=1e-5)
    median = float(emb[: len(load_backbone(str(models[name]), device="cpu").tokenizer)].norm(dim=1).median())
    assert report["median_token_norm"] == pytest.approx(median, rel=1e-5)
    assert second["relative_norm"] == pytest.approx(3.0 * float(emb[other].norm()) / median, rel=1e-5)
    assert report["backbone"]["embeddings_from"] == "safetensors"


def test_json_has_every_part(artifacts):
    art = artifacts("qwen2")
    report = inspect_json(art)
    meta = json.loads((art / "ptcli.json").read_text())
    assert report["template"] == {"text": CAUSAL_TEMPLATE, "n_prompts": 2, "mask_count": 1}
    assert [label["label"] for label in report["labels"]] == meta["labels"]
    assert [w["token_ids"] for label in report["labels"] for w in label["words"]] == meta["word_ids"]
    assert report["labels"][0]["words"][0]["tokens"] == ["Ġgreat"]
    assert report["backbone"]["fingerprint"] == meta["backbone"]["fingerprint"]
    assert report["backbone"]["read_from"] == meta["backbone"]["local_path"]
    assert report["training"]["n_train"] + report["training"]["n_dev"] == 16
    assert report["training"]["args"]["epochs"] == 2
    assert set(report["dev"]) == {"untrained", "trained"} and "accuracy" in report["dev"]["trained"]
    assert [h["epoch"] for h in report["history"]] == [1, 2]
    assert len(report["prompts"]) == 2 and len(report["prompts"][0]["nearest"]) == 5
    assert report["prompt_note"] is None


def test_table_shows_the_curve_and_the_reading(artifacts):
    result = invoke("inspect", artifacts("gpt2"))
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    for fragment in (CAUSAL_TEMPLATE, "Ġgreat", "training curve", "dev accuracy", "before training",
                     "learned prompts", "÷ median", "fingerprint"):
        assert fragment in out, fragment
    assert any(c in out for c in "▁▂▃▄▅▆▇█")
    assert result.stderr == "" or "error" not in result.stderr


def test_backbone_gone_still_inspects_without_the_reading(models, review_files, tmp_path):
    model = tmp_path / "gpt2-copy"
    shutil.copytree(models["gpt2"], model)
    art = train_artifact(model, tmp_path / "art", review_files, epochs=1)
    shutil.rmtree(model)
    result = invoke("inspect", art)
    assert result.exit_code == 0, result.stderr
    assert "--model PATH" in result.stdout and "not found" in result.stdout
    assert "training curve" in result.stdout
    report = inspect_json(art)
    assert report["prompts"] is None and "--model" in report["prompt_note"]
    assert report["template"]["text"] == CAUSAL_TEMPLATE
    # …and --model brings the reading back (same weights, same fingerprint)
    assert len(inspect_json(art, "--model", models["gpt2"])["prompts"]) == 2


def test_another_backbone_is_refused(artifacts, models):
    assert_clean_error(invoke("inspect", artifacts("bert"), "--model", models["bert_other"]), 1, "fingerprint",
                       "--model")


def test_bad_top(artifacts):
    assert_clean_error(invoke("inspect", artifacts("bert"), "--top", 0), 2, "--top")


def test_sharded_checkpoint_reads_the_same_tensor(models, artifacts, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sharded = tmp_path / "sharded"
    AutoModelForCausalLM.from_pretrained(models["qwen2"]).save_pretrained(sharded, max_shard_size="20KB")
    AutoTokenizer.from_pretrained(models["qwen2"]).save_pretrained(sharded)
    assert (sharded / "model.safetensors.index.json").is_file() and not (sharded / "model.safetensors").exists()
    assert torch.equal(read_input_embeddings(sharded), read_input_embeddings(models["qwen2"]))
    report = inspect_json(artifacts("qwen2"), "--model", sharded)
    assert report["backbone"]["embeddings_from"] == "safetensors"
    assert report["prompts"] == inspect_json(artifacts("qwen2"))["prompts"]


def test_without_safetensors_it_loads_the_model_and_reads_the_same(artifacts, monkeypatch):
    from ptcli import embeddings
    from ptcli.inspection import InspectArgs, inspect_artifact

    art = artifacts("bert")
    direct = inspect_artifact(InspectArgs(artifact=art))
    monkeypatch.setattr(embeddings, "read_input_embeddings", lambda directory: None)
    loaded = inspect_artifact(InspectArgs(artifact=art))
    assert loaded["backbone"]["embeddings_from"] == "model" and direct["backbone"]["embeddings_from"] == "safetensors"
    assert loaded["prompts"] == direct["prompts"]


def test_gguf_backbone_is_read_from_its_cached_conversion(models, review_files, tmp_path, monkeypatch):
    import tiny

    from ptcli.gguf import sha256_file

    monkeypatch.setenv("PTCLI_CACHE", str(tmp_path / "cache"))
    gguf = tiny.write_gguf(models["qwen2"], tmp_path / "tiny-qwen2.gguf")
    art = train_artifact(gguf, tmp_path / "art", review_files, epochs=1)
    converted = tmp_path / "cache" / "gguf" / sha256_file(gguf)
    report = inspect_json(art)
    assert report["backbone"]["gguf_sha256"] == converted.name
    assert (report["backbone"]["read_from"], report["backbone"]["embeddings_from"]) == (str(converted), "safetensors")
    shutil.rmtree(converted)  # no cached copy: the GGUF is converted again, as predict would
    assert inspect_json(art)["prompts"] == report["prompts"]
    shutil.rmtree(converted)
    gguf.unlink()  # neither the file nor its conversion: the summary alone
    assert inspect_json(art)["prompts"] is None


def test_a_label_bias_is_shown(tiny_artifact, tmp_path):
    art = tmp_path / "biased"
    shutil.copytree(tiny_artifact, art)
    meta = json.loads((art / "ptcli.json").read_text())
    meta["label_bias"] = [0.25, -0.5]
    meta["training"]["calibrate"] = "contextual"
    (art / "ptcli.json").write_text(json.dumps(meta), encoding="utf-8")
    assert inspect_json(art)["label_bias"] == [0.25, -0.5]
    result = invoke("inspect", art)
    assert result.exit_code == 0, result.stderr
    labels = meta["labels"]
    assert f"{labels[0]} +0.250, {labels[1]} -0.500 (--calibrate contextual)" in " ".join(result.stdout.split())
