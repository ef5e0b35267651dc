import json
import os
import stat

import pytest
import torch
from safetensors.torch import save_file

from ptcli import artifact
from ptcli.encoder import EncoderConfig
from ptcli.errors import PtcliError


def make_meta(**overrides):
    fields = dict(
        ptcli_version="0", created="2026-01-01T00:00:00+00:00",
        template=artifact.TemplateRecord(text="<text>[P][P][MASK]", path="t.txt"),
        labels=["a", "b"], verbalizer={"a": ["x"], "b": ["y"]}, word_ids=[[1], [2]],
        backbone=artifact.BackboneRecord(name="m", kind="mlm", model_type="bert", fingerprint="f"),
        encoder=EncoderConfig(kind="lstm", n_prompts=2, hidden_size=4),
        columns=artifact.Columns(),
        training=artifact.TrainingRecord(max_length=32, seed=0, n_train=4, n_dev=2, best_epoch=1, precision="float32",
                                         device="cpu", args={"epochs": 3}),
        dev_metrics=artifact.Metrics(accuracy=1.0, macro_f1=1.0, n=2, loss=0.1),
        dev_metrics_untrained=artifact.Metrics(accuracy=0.5, macro_f1=0.33, n=2, loss=0.7),
    )
    fields.update(overrides)
    return artifact.Meta(**fields)


def save(tmp_path, name="art", prompts=None, **kw):
    prompts = torch.randn(2, 4) if prompts is None else prompts
    return artifact.save(tmp_path / name, make_meta(), prompts, {"w": torch.ones(3)}, "# card\n", **kw)


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


def test_format_2_artifacts_still_load(tmp_path):
    path = save(tmp_path)
    meta = json.loads((path / "ptcli.json").read_text())
    assert meta["format_version"] == artifact.FORMAT_VERSION
    for field in ("label_bias", "demonstrations", "chat", "text_first", "text_first_names", "head", "demo_prompts"):
        meta.pop(field, None)
    meta["encoder"].pop("init", None)
    meta["format_version"] = 2
    (path / "ptcli.json").write_text(json.dumps(meta))
    art = artifact.load(path)
    assert art.meta.label_bias is None and not art.meta.demonstrations and art.meta.chat is False
    assert art.meta.text_first is False  # trained before reordering existed: read as written
    assert art.meta.encoder.init == "random"
    assert art.meta.head == "words" and art.head is None  # no linear head before format 6
    assert art.meta.demo_prompts is False  # demonstrations were rendered without [P] before format 8


def test_format_4_text_first_artifacts_read_their_inputs_alone_moved(tmp_path):
    path = save(tmp_path)
    meta = json.loads((path / "ptcli.json").read_text())
    meta.pop("text_first_names")
    meta.update(format_version=4, text_first=True,
                template={**meta["template"], "text": "[P][P] 这是[MASK]评论:<text>"})
    meta["backbone"]["kind"] = "causal"
    (path / "ptcli.json").write_text(json.dumps(meta, ensure_ascii=False))
    art = artifact.load(path)
    assert art.meta.text_first_names is False
    assert art.meta.read_template().source == "<text>\n[P][P] 这是[MASK]评论:"  # as format 4 trained it
    art.meta.text_first_names = True
    assert art.meta.read_template().source == "评论:<text>\n[P][P] 这是[MASK]"


def test_not_a_directory(tmp_path):
    with pytest.raises(PtcliError, match="not an artifact directory"):
        artifact.load(tmp_path / "nope")


def test_output_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "art").write_text("x")
    with pytest.raises(PtcliError, match="not a ptcli artifact"):
        save(tmp_path)
    assert (tmp_path / "art").read_text() == "x"


def edit(path, change):
    meta = json.loads((path / "ptcli.json").read_text())
    change(meta)
    (path / "ptcli.json").write_text(json.dumps(meta), encoding="utf-8")


@pytest.mark.parametrize(("change", "expected"), [
    (lambda m: m["labels"].append("c"), "verbalizer: its labels differ"),
    (lambda m: m.__setitem__("labels", "ab"), "field labels: input should be a valid array"),
    (lambda m: m["training"].pop("max_length"), "field training.max_length: field required"),
    (lambda m: m["encoder"].pop("n_prompts"), "encoder.n_prompts: 4, but the template has 2 [P]"),
    (lambda m: m["encoder"].__setitem__("n_prompts", 3), "encoder.n_prompts: 3, but the template has 2 [P]"),
    (lambda m: m["training"].__setitem__("max_length", "32"), "field training.max_length: input should be a valid int"),
    (lambda m: m.__setitem__("labels", ["a", "a"]), "two or more distinct"),
    (lambda m: m.__setitem__("word_ids", [[1]]), "word_ids: expected 2"),
    (lambda m: m["template"].__setitem__("text", "no slot <text>"), "template.text"),
    (lambda m: m["backbone"].__setitem__("kind", "seq2seq"), "backbone.kind"),
    (lambda m: m.__setitem__("format_version", "2"), "not a version number"),
    (lambda m: m.clear() or m.update(format="ptcli-artifact", format_version=2), "field required"),
    (lambda m: m.__setitem__("label_bias", [0.5]), "label_bias: expected 2 finite numbers"),
    (lambda m: m.__setitem__("label_bias", [0.5, float("nan")]), "label_bias: expected 2 finite numbers"),
    (lambda m: m.__setitem__("label_bias", [float("-inf"), 0.0]), "label_bias: expected 2 finite numbers"),
    (lambda m: m.__setitem__("label_bias", ["0.5", "0"]), "field label_bias.0: input should be a valid number"),
    (lambda m: m["encoder"].__setitem__("init", "glove"), "encoder: "),
])
def test_hand_edited_metadata_fails_in_one_line_naming_the_field(tmp_path, change, expected):
    path = save(tmp_path)
    edit(path, change)
    with pytest.raises(artifact.PtcliError) as e:
        artifact.load(path)
    assert expected in e.value.message and "\n" not in e.value.message, e.value.message
    assert str(path / "ptcli.json") in e.value.message or "prompts" in e.value.message


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_prompts_are_refused_at_load(tmp_path, bad):
    path = save(tmp_path)
    prompts = torch.randn(2, 4)
    prompts[1, 2] = bad
    save_file({"prompt_embeddings": prompts}, str(path / "prompts.safetensors"))
    with pytest.raises(PtcliError, match="NaN or infinity"):
        artifact.load(path)


def test_wrong_prompt_shape_is_refused(tmp_path):
    path = save(tmp_path)
    save_file({"prompt_embeddings": torch.randn(3, 4)}, str(path / "prompts.safetensors"))
    with pytest.raises(PtcliError, match=r"shape \[2, 4\], found \[3, 4\]"):
        artifact.load(path)


def test_format_1_artifacts_are_upgraded_on_load(tmp_path):
    path = save(tmp_path)
    meta = json.loads((path / "ptcli.json").read_text())
    not_in_v1 = ("select", "folds", "calibrate", "refit", "head_refit")
    training = {k: v for k, v in meta["training"].items() if k not in not_in_v1}
    v1 = {**meta, "format_version": 1, "seed": training["seed"],
          "training": {**training.pop("args"), **{k: v for k, v in training.items() if k != "seed"}},
          "backbone": {**{k: v for k, v in meta["backbone"].items() if k != "gguf_file"},
                       "extra": {"gguf_file": "m.gguf"}}}
    (path / "ptcli.json").write_text(json.dumps(v1), encoding="utf-8")
    art = artifact.load(path)
    assert art.meta.training.max_length == 32 and art.meta.training.args == {"epochs": 3}
    assert art.meta.backbone.gguf_file == "m.gguf" and art.meta.training.seed == 0


def test_label_bias_roundtrips_and_older_artifacts_have_none(tmp_path):
    path = artifact.save(tmp_path / "biased", make_meta(label_bias=[-0.25, 1.5]), torch.randn(2, 4), {}, "# card\n")
    assert artifact.load(path).meta.label_bias == [-0.25, 1.5]
    edit(path, lambda m: m.__setitem__("label_bias", [0, 2]))  # JSON integers are numbers too
    assert artifact.load(path).meta.label_bias == [0.0, 2.0]
    # written before these fields existed: no bias, the paper's encoder init, the dev-acc rule
    edit(path, lambda m: [m.pop("label_bias"), m["encoder"].pop("init"),
                          *(m["training"].pop(k) for k in ("select", "folds", "calibrate", "refit"))])
    meta = artifact.load(path).meta
    assert meta.label_bias is None and meta.encoder.init == "random" and meta.training.select == "dev-acc"
    assert meta.training.refit is False


def test_metadata_is_small_whatever_the_number_of_labels():
    report = {"accuracy": 0.5, "macro_f1": 0.5, "n": 10, "per_class": {str(i): {} for i in range(1000)}}
    assert artifact.Metrics.from_report(report).per_class is None


def test_artifact_is_readable_per_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = save(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    assert stat.S_IMODE((path / "ptcli.json").stat().st_mode) == 0o644


def test_a_linear_head_roundtrips_in_the_prompts_file(tmp_path):
    head = {"head_weight": torch.randn(2, 4), "head_bias": torch.tensor([0.5, -0.5])}
    path = artifact.save(tmp_path / "headed", make_meta(head="linear"), torch.randn(2, 4), {}, "# card\n", head=head)
    art = artifact.load(path)
    assert art.meta.head == "linear" and all(torch.equal(art.head[k], v) for k, v in head.items())
    with pytest.raises(ValueError, match="missing"):  # the record and the tensors must agree
        artifact.save(tmp_path / "other", make_meta(head="linear"), torch.randn(2, 4), {}, "# card\n")


@pytest.mark.parametrize(("tensors", "found"), [
    ({}, "found none"),
    ({"head_weight": torch.randn(3, 4), "head_bias": torch.zeros(2)}, r"found \[3, 4\]"),
    ({"head_weight": torch.randn(2, 4), "head_bias": torch.tensor([0.0, float("nan")])}, r"found \[2\]"),
])
def test_a_damaged_head_is_refused_in_one_line(tmp_path, tensors, found):
    head = {"head_weight": torch.randn(2, 4), "head_bias": torch.zeros(2)}
    path = artifact.save(tmp_path / "headed", make_meta(head="linear"), torch.randn(2, 4), {}, "# card\n", head=head)
    save_file({"prompt_embeddings": torch.randn(2, 4), **tensors}, str(path / "prompts.safetensors"))
    with pytest.raises(PtcliError, match=found) as e:
        artifact.load(path)
    assert "\n" not in e.value.message and "prompts.safetensors" in e.value.message


def test_an_unknown_head_is_refused(tmp_path):
    path = save(tmp_path)
    edit(path, lambda m: m.__setitem__("head", "mlp"))
    with pytest.raises(PtcliError, match="head: 'mlp' is not one of words, linear"):
        artifact.load(path)


def test_a_slot_and_mean_head_is_twice_as_wide_and_older_heads_read_the_slot(tmp_path):
    wide = {"head_weight": torch.randn(2, 8), "head_bias": torch.zeros(2)}  # hidden 4, two states
    meta = make_meta(head="linear")
    meta.head_features = ["slot", "mean"]
    art = artifact.load(artifact.save(tmp_path / "wide", meta, torch.randn(2, 4), {}, "# card\n", head=wide))
    assert art.meta.head_features == ["slot", "mean"] and art.head["head_weight"].shape == (2, 8)
    narrow = {"head_weight": torch.randn(2, 4), "head_bias": torch.zeros(2)}
    path = artifact.save(tmp_path / "v6", make_meta(head="linear"), torch.randn(2, 4), {}, "# card\n", head=narrow)
    edit(path, lambda m: (m.pop("head_features"), m.__setitem__("format_version", 6)))  # as format 6 wrote it
    assert artifact.load(path).meta.head_features == ["slot"]
    save_file({"prompt_embeddings": torch.randn(2, 4), **wide}, str(path / "prompts.safetensors"))
    with pytest.raises(PtcliError, match=r"head_weight is not \[2, 4\]"):  # a slot-only head is [labels, H]
        artifact.load(path)
    edit(path, lambda m: m.__setitem__("head_features", ["mean", "slot"]))
    with pytest.raises(PtcliError, match="head_features"):
        artifact.load(path)
