import os
import re
import threading
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from ptcli.errors import PtcliError
from ptcli.template import PROMPT_ID, Template, TemplateEncoder, render


def test_parse_segments_and_counts():
    t = Template.parse("这是一条[P][P][MASK][MASK]评论:<text>\n")
    assert [s.kind for s in t.segments] == ["literal", "prompt", "prompt", "slot", "literal", "text"]
    assert t.n_prompts == 2 and t.mask_count == 2 and not t.has_text_b
    assert t.source.endswith("<text>")  # the file's trailing newline is not part of the template


def test_prompts_anywhere_and_text_b():
    t = Template.parse("[P]<text>[P]？[MASK]，[P]<text_b>[P]")
    assert t.n_prompts == 4 and t.has_text_b
    assert [s.size for s in t.segments if s.kind == "prompt"] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("[P][MASK]", "no <text>"),
        ("<text> great", "no [MASK]"),
        ("[MASK]<text>[MASK]", "line 1, column 13"),
        ("[MASK] [MASK]<text>", "second [MASK] run"),
        ("<text>\n[P][XYZ][MASK]", "line 2, column 4"),
        ("<text>[p][MASK]", "unknown tag [p]"),
        ("<text><text>[MASK]", "appears twice"),
        ("<text_c><text>[MASK]", "unknown tag <text_c>"),
    ],
)
def test_template_errors_name_the_problem_and_position(source, message):
    with pytest.raises(PtcliError) as e:
        Template.parse(source, "t.txt")
    assert message in e.value.message and e.value.message.startswith("t.txt")


def test_load_missing_and_non_utf8(tmp_path):
    with pytest.raises(PtcliError, match=r"nope\.txt: no such file; expected a template file"):
        Template.load(tmp_path / "nope.txt")
    with pytest.raises(PtcliError, match="is a directory"):
        Template.load(tmp_path)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"<text>[MASK]" + b"\xff")
    with pytest.raises(PtcliError, match="offset 12"):
        Template.load(bad)


def test_without_prompts():
    t = Template.parse("[P]<text>[P]总之很[MASK]").without_prompts()
    assert t.n_prompts == 0 and t.source == "<text>总之很[MASK]"
    # the source is rebuilt from the segments, not by deleting "[P]" from the text
    t = Template.parse("<text>[[P]MASK] is [MASK]").without_prompts()
    assert t.source == render(t.segments) == "<text>[MASK] is [MASK]"
    assert [s.kind for s in t.segments] == ["text", "literal", "literal", "slot"]


@pytest.mark.parametrize(("source", "expected"), [
    ("这是一条[P][P][MASK][MASK]评论:<text>", "评论:<text>\n这是一条[P][P][MASK][MASK]"),  # its name goes with it
    ("[P] It was [MASK]! [P]<text> ok", "<text>\n[P] It was [MASK]! [P] ok"),
    ("[P] It was [MASK]: <text>", "<text>\n[P] It was [MASK]:"),  # punctuation alone names nothing: it stays
    ("[P] It was [MASK]. Review: <text>", "Review: <text>\n[P] It was [MASK]."),  # from the last sentence break
    ("这是[MASK]的评论。内容:<text>", "内容:<text>\n这是[MASK]的评论。"),
    ("<text>？[MASK]，[P][P]<text_b>", "<text_b>\n<text>？[MASK]，[P][P]"),
    ("[MASK]<text><text_b>", "<text>\n<text_b>\n[MASK]"),
    ("[MASK]\n评论：<text>\n问题：<text_b>", "评论：<text>\n问题：<text_b>\n[MASK]"),  # no line breaks left at the end
])
def test_inputs_after_the_slot_move_to_the_front(source, expected):
    t = Template.parse(source)
    moved = t.inputs_first()
    assert moved.source == expected and t.inputs_after_slot and not moved.inputs_after_slot
    assert Template.parse(moved.source).segments == moved.segments  # what parsing the new text would give
    assert (moved.n_prompts, moved.mask_count, moved.has_text_b) == (t.n_prompts, t.mask_count, t.has_text_b)


@pytest.mark.parametrize(("source", "expected"), [
    ("这是一条[P][P][MASK][MASK]评论:<text>", "<text>\n这是一条[P][P][MASK][MASK]评论:"),
    ("[P] It was [MASK]: <text>", "<text>\n[P] It was [MASK]:"),  # the space before <text> goes with it
    ("[MASK]<text><text_b>", "<text>\n<text_b>\n[MASK]"),
])
def test_format_4_rule_moves_the_inputs_alone(source, expected):
    assert Template.parse(source).inputs_first(names=False).source == expected


def test_inputs_first_leaves_a_template_with_the_slot_last_alone():
    t = Template.parse("[P][P]评论：<text>\n这条评论的态度是[MASK]")
    assert t.inputs_first() is t and not t.inputs_after_slot


def test_render_gives_back_the_source():
    src = "前 [P]<text>\n[P][P]问：<text_b>答[MASK][MASK]。"
    t = Template.parse(src)
    assert render(t.segments) == t.source == src


def test_load_permission_denied_and_other_os_errors(tmp_path, monkeypatch):
    p = tmp_path / "t.txt"
    p.write_text("<text>[MASK]", encoding="utf-8")
    for error, message in [(PermissionError(13, "Permission denied"), "permission denied"),
                           (OSError(5, "Input/output error"), r"cannot read it \(Input/output error\)")]:
        def fail(self, error=error):
            raise error

        monkeypatch.setattr(Path, "read_bytes", fail)
        with pytest.raises(PtcliError, match=message) as e:
            Template.load(p)
        assert e.value.message.startswith(str(p))


def test_load_from_a_fifo(tmp_path):
    fifo = tmp_path / "t.txt"
    os.mkfifo(fifo)

    def writer():
        with open(fifo, "wb") as f:
            f.write("<text>很[MASK]\n".encode())

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    assert Template.load(fifo).source == "<text>很[MASK]"
    thread.join(5)


@pytest.fixture(scope="module")
def bert_tok(models):
    return AutoTokenizer.from_pretrained(models["bert"])


def test_encode_splits_at_slot_and_marks_prompts(bert_tok):
    t = Template.parse("这是[P][P][MASK]评论:<text>")
    enc = TemplateEncoder(t, bert_tok, max_length=64, slot_length=1, n_special=2)
    (row,) = enc.encode(["很好吃"])
    assert row.before.prompt == [-1, -1, 0, 1]
    assert row.before.ids[2:] == [PROMPT_ID, PROMPT_ID]
    assert bert_tok.convert_ids_to_tokens(row.before.ids[:2]) == ["这", "是"]
    assert bert_tok.convert_ids_to_tokens(row.after.ids) == ["评", "论", ":", "很", "好", "吃"]


def test_truncates_text_never_template(bert_tok):
    t = Template.parse("[P]这是[MASK][MASK]评论:<text>")
    enc = TemplateEncoder(t, bert_tok, max_length=16, slot_length=2, n_special=2)
    (row,) = enc.encode(["好" * 100])
    assert row.truncated
    assert len(row.before) + 2 + len(row.after) + 2 == 16
    assert bert_tok.convert_ids_to_tokens(row.after.ids[:3]) == ["评", "论", ":"]


def test_truncates_longest_input_first(bert_tok):
    t = Template.parse("<text>[MASK]<text_b>")
    enc = TemplateEncoder(t, bert_tok, max_length=13, slot_length=1, n_special=2)
    (row,) = enc.encode(["好" * 20], ["差" * 4])
    assert len(row.before) == 6 and len(row.after) == 4  # 10 tokens of budget: the long one gave way


def test_template_longer_than_max_length(bert_tok):
    t = Template.parse("这是一条很长很长的模板[MASK]<text>")
    with pytest.raises(PtcliError, match="--max-length"):
        TemplateEncoder(t, bert_tok, max_length=8, slot_length=1, n_special=2)


def test_bpe_leading_space_goes_with_the_text(models):
    tok = AutoTokenizer.from_pretrained(models["roberta"])
    t = Template.parse("Review: <text> It was [MASK].")
    assert t.space_before_slot
    enc = TemplateEncoder(t, tok, max_length=64, slot_length=1, n_special=2)
    (row,) = enc.encode(["great movie"])
    tokens = tok.convert_ids_to_tokens(row.before.ids)
    assert "Ġgreat" in tokens  # " great", as in running text, not "great"
    assert tokens[-1] != "Ġ"  # no dangling space token before the slot


def test_newline_before_prompt_is_kept(models):
    tok = AutoTokenizer.from_pretrained(models["gpt2"])
    enc = TemplateEncoder(Template.parse("<text>\n[P] It was [MASK]"), tok, 64, 1, 0)
    (row,) = enc.encode(["fun"])
    assert "Ċ" in tok.convert_ids_to_tokens([i for i in row.before.ids if i >= 0])


def test_text_b_column_must_match_the_template():
    from ptcli.errors import UsageError

    pair, single = Template.parse("<text>[MASK]<text_b>", "pair.txt"), Template.parse("<text>[MASK]", "one.txt")
    pair.check_text_b_column("hypothesis")
    single.check_text_b_column(None)
    message = "pair.txt: the template has <text_b>; name its column with --text-b-col"
    with pytest.raises(UsageError, match=re.escape(message)):
        pair.check_text_b_column(None)
    with pytest.raises(UsageError, match=re.escape("--text-b-col hypothesis: the template one.txt has no <text_b>")):
        single.check_text_b_column("hypothesis")
