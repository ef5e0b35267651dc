"""Device and precision policy: fp32 weights on CPU always, bf16 only as autocast, int8 only where it works."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from ptcli import precision as prec
from ptcli.errors import UsageError
from ptcli.loading import load_backbone
from ptcli.template import Template, TemplateEncoder

CPU = torch.device("cpu")


def fake_model(hidden: int) -> SimpleNamespace:
    return SimpleNamespace(get_input_embeddings=lambda: nn.Embedding(4, hidden))


@pytest.mark.parametrize("precision", ["fp32", "bf16", "auto"])
def test_frozen_cpu_backbone_keeps_fp32_weights(models, precision):
    bb = load_backbone(str(models["qwen2"]), device="cpu", precision=precision)
    assert {p.dtype for p in bb.model.parameters()} == {torch.float32}
    assert bb.precision.weights == torch.float32
    assert bb.dtype == (torch.bfloat16 if precision == "bf16" else torch.float32)


def test_auto_on_cpu_follows_the_measured_probe(monkeypatch):
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(prec, "bf16_autocast_is_faster", lambda model, key: False)
    assert prec.resolve("auto", CPU, fake_model(896), "k") == prec.FP32
    monkeypatch.setattr(prec, "bf16_autocast_is_faster", lambda model, key: True)
    chosen = prec.resolve("auto", CPU, fake_model(896), "k")
    assert (chosen.weights, chosen.compute) == (torch.float32, torch.bfloat16)
    # small models stay fp32 without measuring
    assert prec.resolve("auto", CPU, fake_model(64), "k") == prec.FP32


def test_auto_never_probes_a_cpu_without_native_bf16(monkeypatch):
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: False)

    def probe(model, key):
        raise AssertionError("probed a CPU without bf16")

    monkeypatch.setattr(prec, "bf16_autocast_is_faster", probe)
    assert prec.resolve("auto", CPU, fake_model(896), "k") == prec.FP32


def test_probe_times_the_real_model_once_per_key(models, monkeypatch, tmp_path):
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("PTCLI_CACHE", str(tmp_path))

    model = AutoModelForCausalLM.from_pretrained(models["qwen2"])
    calls = []
    forward = model.base_model.forward
    monkeypatch.setattr(model.base_model, "forward", lambda *a, **k: calls.append(1) or forward(*a, **k))
    first = prec.bf16_autocast_is_faster(model, "test-probe-key")
    n = len(calls)
    assert n >= 4 and prec.bf16_autocast_is_faster(model, "test-probe-key") == first and len(calls) == n


def test_cuda_frozen_weights_may_be_bf16_trained_ones_not(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    cuda = torch.device("cuda")
    assert prec.resolve("auto", cuda, fake_model(32), "k").weights == torch.bfloat16
    trained = prec.resolve("auto", cuda, fake_model(32), "k", trainable=True)
    assert (trained.weights, trained.compute) == (torch.float32, torch.bfloat16)


def test_unknown_precision_refused_before_loading(tmp_path):
    with pytest.raises(UsageError, match="choose auto, fp32, bf16, int8"):
        load_backbone(str(tmp_path / "not-loaded"), device="cpu", precision="fp16")


@pytest.mark.parametrize("name", ["qwen2", "llama"])
def test_int8_scores_close_to_fp32(models, name):
    fp32 = load_backbone(str(models[name]), device="cpu", precision="fp32")
    int8 = load_backbone(str(models[name]), device="cpu", precision="int8")
    assert int8.precision.int8 and any("quantized" in type(m).__module__ for m in int8.model.modules())
    # the LM head and the (tied) input embeddings stay exact fp32
    assert torch.equal(int8.input_embeddings.weight, fp32.input_embeddings.weight)
    assert isinstance(int8.model.get_output_embeddings(), nn.Linear)
    words = [fp32.tokenize_word(w, True) for w in ("great", "bad", "terrible movie")]
    rows = TemplateEncoder(Template.parse("[P] <text> It was [MASK] really"), fp32.tokenizer, 64, 2, 0).encode(
        ["the movie was fun", "a boring film and bad plot"])
    prompts = torch.randn(1, fp32.hidden_size)
    a, b = fp32.score(rows, prompts, words), int8.score(rows, prompts, words)
    assert not torch.equal(a, b) and torch.allclose(a, b, atol=0.05, rtol=0.02)


def test_int8_refused_where_it_cannot_work(models):
    with pytest.raises(UsageError, match="predict and eval"):
        load_backbone(str(models["qwen2"]), device="cpu", precision="int8", training=True)
    with pytest.raises(UsageError, match=r"no nn\.Linear"):
        load_backbone(str(models["gpt2"]), device="cpu", precision="int8")  # Conv1D layers
    with pytest.raises(UsageError, match="CPU only"):
        prec.check("int8", torch.device("cuda"))


def test_train_refuses_int8(models, tmp_path):
    from ptcli.train import TrainArgs, train

    csv = tmp_path / "d.csv"
    csv.write_text("text,label\n" + "good,pos\nbad,neg\n" * 8, encoding="utf-8")
    tpl = tmp_path / "t.txt"
    tpl.write_text("<text> It was [MASK]\n", encoding="utf-8")
    with pytest.raises(UsageError, match="int8"):
        train(TrainArgs(data=csv, template=tpl, model=str(models["qwen2"]), output=tmp_path / "a", device="cpu",
                        precision="int8", epochs=1))


def test_clear_probe_verdicts_are_remembered_per_machine_and_near_ties_are_not(models, monkeypatch, tmp_path):
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("PTCLI_CACHE", str(tmp_path))
    model = AutoModelForCausalLM.from_pretrained(models["qwen2"])
    clock = iter([])
    monkeypatch.setattr(prec.time, "perf_counter", lambda: next(clock))

    def timings(fp32_s: float, bf16_s: float) -> None:  # warm-up pair, then two measured pairs
        nonlocal clock
        clock = iter([v for pair in [(0, fp32_s), (0, bf16_s)] * 3 for v in pair])

    for verdict, (fp32_s, bf16_s), kept in [(True, (1.0, 0.4), True), (False, (1.0, 1.5), True),
                                            (False, (1.0, 0.9), False)]:
        key = f"model-{fp32_s}-{bf16_s}"
        timings(fp32_s, bf16_s)
        assert prec.bf16_autocast_is_faster(model, key) is verdict
        prec._PROBED.clear()  # a new process: only the disk remembers
        assert (prec._remembered(prec._machine_key(key)) is not None) is kept
        if kept:
            monkeypatch.setattr(model.base_model, "forward", lambda *a, **k: pytest.fail("probed again"))
            assert prec.bf16_autocast_is_faster(model, key) is verdict
            monkeypatch.undo()
            monkeypatch.setenv("PTCLI_CACHE", str(tmp_path))
            monkeypatch.setattr(prec.time, "perf_counter", lambda: next(clock))
    # another thread count is another machine as far as the verdict goes
    monkeypatch.setattr(prec.torch, "get_num_threads", lambda: 97)
    assert prec._remembered(prec._machine_key("model-1.0-0.4")) is None
