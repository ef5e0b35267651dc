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


def parse_count(value: str) -> int:
    """`--demos` as given: a count of rows per label, or `all`."""
    text = value.strip().lower()
    if text == "all":
        return ALL
    if not text.isdigit():
        raise UsageError(f"--demos {value}: give a number of rows per label (0 for none) or `all`")
    return int(text)


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


def prefix_ids(demos: list[Demonstration], backbone: Backbone, template: Template, verbalizer: Verbalizer,
               max_length: int) -> list[int]:
    """The token ids of the demonstrations, each rendered through `template` without its [P] with its label's first
    word in the slot and followed by the separator."""
    if not demos:
        return []
    plain = template.without_prompts()
    first = {label: backbone.tokenize_word(words[0], plain.space_before_slot)
             for label, words in zip(verbalizer.labels, verbalizer.words, strict=True)}
    slot = max(len(w) for w in first.values())
    encoder = TemplateEncoder(plain, backbone.tokenizer, max_length, slot, backbone.n_special())
    rows = encoder.encode([d.text for d in demos], [d.text_b or "" for d in demos] if plain.has_text_b else None)
    sep = separator(backbone.tokenizer)
    ids: list[int] = []
    for demo, row in zip(demos, rows, strict=True):
        ids += row.before.ids + first[demo.label] + row.after.ids + sep
    return ids
