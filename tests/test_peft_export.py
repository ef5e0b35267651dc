"""`export-prompts --format peft`: a PEFT P-tuning adapter that scores the slot exactly as ptcli does."""

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from test_cli import assert_clean_error, invoke
from test_inspect import english_files

from ptcli import artifact
from ptcli.classifier import Classifier
from ptcli.template import PROMPT_ID

TEXTS = ["the movie was great fun", "a boring film and bad plot really bad", "it", "not so very good acting"]


def train(model, out, template="[P][P][P]<text> It was [MASK]", encoder="lstm"):
    data, template_file, verbalizer = english_files(out.parent)
    template_file.write_text(template + "\n", encoding="utf-8")
    result = invoke("-q", "train", data, "--template", template_file, "--model", model, "--verbalizer", verbalizer,
                    "-o", out, "--epochs", 1, "--device", "cpu", "--encoder", encoder,
                    "--head", "words", "--calibrate", "none")  # a PEFT adapter holds the prompts alone: the words
    # must score the same, with no label bias (an export warns that it leaves one out)
    assert result.exit_code == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def causal(models, tmp_path_factory):
    built = {}

    def get(name):
        if name not in built:
            built[name] = train(models[name], tmp_path_factory.mktemp(f"peft-{name}") / "art")
        return built[name]

    return get


def export(art, out):
    result = invoke("export-prompts", art, "-o", out, "--format", "peft")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(out)
    return out


@pytest.mark.parametrize("name", ["gpt2", "qwen2", "llama"])
def test_peft_scores_the_slot_exactly_as_ptcli(models, causal, tmp_path, name):
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    art = artifact.load(causal(name))
    adapter = export(art.path, tmp_path / "adapter")
    clf, prompts = Classifier.from_artifact(art, device="cpu", precision="fp32")
    rows = clf.encode(TEXTS)
    with torch.inference_mode():
        ours = clf.logits(rows, prompts)  # [B, labels]: log P(label word | prefix), one single-token word each
    base = AutoModelForCausalLM.from_pretrained(models[name], dtype=torch.float32)
    model = peft.PeftModel.from_pretrained(base, adapter).eval()
    first_tokens = [ids[0] for ids in clf.word_ids]
    assert all(len(ids) == 1 for ids in clf.word_ids)
    for row, expected in zip(rows, ours, strict=True):
        # What PEFT is fed: the template's token ids after the [P] (the row's text, then " It was"), exactly the ids
        # ptcli encodes, with no special tokens: PEFT prepends its virtual tokens to everything it is given, so the
        # tokenizer's leading special tokens (Llama's BOS) are the adapter's first virtual tokens instead, and
        # GPT-2/Qwen have none (a [P]-first template needs no start token in ptcli either).
        ids = [t for t in row.before.ids if t != PROMPT_ID]
        assert row.before.prompt[: art.meta.encoder.n_prompts] == [0, 1, 2]
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long))
        got = torch.log_softmax(logits.logits[0, -1].float(), dim=-1)[first_tokens]
        assert torch.allclose(got, expected, atol=1e-5, rtol=0), (got, expected)


def test_adapter_matches_what_peft_itself_saves(models, causal, tmp_path):
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    art = artifact.load(causal("qwen2"))
    ours = export(art.path, tmp_path / "ours")
    base = AutoModelForCausalLM.from_pretrained(models["qwen2"])
    config = peft.PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=3, encoder_hidden_size=16,
                                      encoder_reparameterization_type="LSTM")
    peft.get_peft_model(base, config).save_pretrained(tmp_path / "theirs")
    mine = json.loads((ours / "adapter_config.json").read_text())
    theirs = json.loads((tmp_path / "theirs" / "adapter_config.json").read_text())
    assert set(mine) == set(theirs)
    assert {k: v for k, v in mine.items() if k != "base_model_name_or_path"} == {
        k: v for k, v in theirs.items() if k != "base_model_name_or_path"}
    for directory in (ours, tmp_path / "theirs"):
        with safe_open(str(directory / "adapter_model.safetensors"), "pt") as f:
            assert list(f.keys()) == ["prompt_embeddings"] and f.metadata() == {"format": "pt"}
            assert f.get_tensor("prompt_embeddings").shape == (3, 32)
    with safe_open(str(ours / "adapter_model.safetensors"), "pt") as f:
        assert torch.equal(f.get_tensor("prompt_embeddings"), art.prompts)


def test_leading_special_tokens_become_the_first_virtual_tokens(models, causal, tmp_path):
    from ptcli.loading import load_backbone

    art = artifact.load(causal("llama"))
    adapter = export(art.path, tmp_path / "adapter")
    backbone = load_backbone(str(models["llama"]), device="cpu", precision="fp32")
    assert backbone.prefix_special == [backbone.tokenizer.bos_token_id]
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["num_virtual_tokens"] == 1 + art.meta.encoder.n_prompts
    with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as f:
        virtual = f.get_tensor("prompt_embeddings")
    assert torch.equal(virtual[0], backbone.input_embeddings.weight[backbone.tokenizer.bos_token_id].detach())
    assert torch.equal(virtual[1:], art.prompts)
    assert "<s>" in (adapter / "README.md").read_text()


def test_refuses_templates_peft_cannot_express(models, tmp_path):
    art = train(models["qwen2"], tmp_path / "art", template="<text>[P][P] It was [MASK]")
    assert_clean_error(invoke("export-prompts", art, "-o", tmp_path / "adapter", "--format", "peft"), 1,
                       "come first", "[P][P][P][P]<text>", "--format safetensors")
    assert not (tmp_path / "adapter").exists()


def test_refuses_masked_lms(models, tmp_path, review_files):
    out = tmp_path / "art"
    result = invoke("-q", "train", review_files["train"], "--template", review_files["template"], "--model",
                    models["bert"], "--verbalizer", review_files["verbalizer"], "-o", out, "--epochs", 1,
                    "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    assert_clean_error(invoke("export-prompts", out, "-o", tmp_path / "adapter", "--format", "peft"), 1,
                       "masked LM", "[CLS]")


def test_output_directory_rules(causal, tmp_path):
    art = causal("gpt2")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    assert_clean_error(invoke("export-prompts", art, "-o", taken, "--format", "peft"), 1, "not an empty directory")
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]
    assert_clean_error(invoke("export-prompts", art, "-o", art / "adapter", "--format", "peft"), 1,
                       "inside the artifact")
    assert_clean_error(invoke("export-prompts", art, "-o", tmp_path / "no" / "adapter", "--format", "peft"), 1,
                       "does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    export(art, empty)
    assert sorted(p.name for p in empty.iterdir()) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary directory left


def test_needs_the_backbone(models, tmp_path):
    model = tmp_path / "gpt2-copy"
    shutil.copytree(models["gpt2"], model)
    art = train(model, tmp_path / "art")
    shutil.rmtree(model)
    assert_clean_error(invoke("export-prompts", art, "-o", tmp_path / "adapter", "--format", "peft"), 1,
                       "needs the backbone", "--format safetensors")
