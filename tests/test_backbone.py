import pytest
import torch

from ptcli.backbone import fingerprint, special_tokens
from ptcli.errors import PtcliError
from ptcli.loading import backbone_kind, load_backbone
from ptcli.precision import resolve_device


def test_kind_from_model_type():
    assert backbone_kind("bert") == "mlm" and backbone_kind("roberta") == "mlm" and backbone_kind("albert") == "mlm"
    assert backbone_kind("gpt2") == "causal" and backbone_kind("qwen2") == "causal"
    with pytest.raises(PtcliError):
        backbone_kind("t5")


def test_cuda_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(PtcliError, match="CUDA is not available"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


def test_fingerprint_same_across_precision_differs_across_weights():
    w = torch.randn(5000, 16)
    assert fingerprint(w) == fingerprint(w.to(torch.bfloat16))
    assert fingerprint(w) != fingerprint(w + 0.1)


@pytest.mark.parametrize(("name", "prefix", "suffix"), [("bert", ["[CLS]"], ["[SEP]"]), ("roberta", ["<s>"], ["</s>"]),
                                                        ("gpt2", [], []), ("llama", ["<s>"], [])])
def test_special_tokens(models, name, prefix, suffix):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(models[name])
    pre, suf = special_tokens(tok)
    assert tok.convert_ids_to_tokens(pre) == prefix and tok.convert_ids_to_tokens(suf) == suffix


def test_load_is_frozen_and_identified(models):
    bb = load_backbone(str(models["bert"]), device="cpu", precision="fp32")
    assert bb.kind == "mlm" and not any(p.requires_grad for p in bb.model.parameters())
    assert not bb.model.training
    assert bb.info.local_path and bb.info.fingerprint
    other = load_backbone(str(models["bert_other"]), device="cpu", precision="fp32")
    assert other.info.fingerprint != bb.info.fingerprint


def test_load_missing_model(tmp_path):
    with pytest.raises(PtcliError, match="could not load"):
        load_backbone(str(tmp_path / "no-such-model"), device="cpu")


@pytest.mark.parametrize("name", ["bert", "gpt2", "llama"])
def test_local_checkpoints_load_tensor_by_tensor_with_the_same_weights(models, name, monkeypatch):
    """The pread loader (low peak memory) must give exactly what transformers' own from_pretrained gives, ties
    included; it is the path every local safetensors checkpoint takes."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM

    from ptcli import loading

    config = AutoConfig.from_pretrained(models[name])
    ours = loading._from_local_safetensors(str(models[name]), config)
    assert ours is not None
    auto = AutoModelForMaskedLM if name == "bert" else AutoModelForCausalLM
    reference = auto.from_pretrained(models[name], dtype=torch.float32)
    theirs = dict(reference.named_parameters(remove_duplicate=False))
    mine = dict(ours.named_parameters(remove_duplicate=False))
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert (ours.get_output_embeddings().weight is ours.get_input_embeddings().weight) == (
        reference.get_output_embeddings().weight is reference.get_input_embeddings().weight)
    # A directory without safetensors (e.g. a hub id's cache layout) takes transformers' path.
    assert loading._from_local_safetensors(str(models[name] / "missing"), config) is None
