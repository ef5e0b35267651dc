"""The template language: parse a template file, then turn rows of text into token ids around the label slot.

    这是一条[P][P][MASK][MASK]评论:<text>

`[P]` is a trainable prompt token, a run of `[MASK]` is the label slot (k masks = k-token label words for a masked
LM), `<text>` / `<text_b>` are the inputs, everything else is literal anchor text tokenized by the backbone's
tokenizer. Encoding splits each row at the slot: the backbone decides what fills it (k mask tokens for a masked LM,
the candidate label words for a causal LM).
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ptcli.data import read_text
from ptcli.errors import PtcliError, UsageError

TAG = re.compile(r"\[[^\[\]\s]{1,20}\]|<text[A-Za-z0-9_]*>")
KNOWN_TAGS = {"[P]", "[MASK]", "<text>", "<text_b>"}
PROMPT_ID = -1  # placeholder in `Part.ids` at [P] positions; the backbone swaps in the prompt vector there


@dataclass(frozen=True)
class Segment:
    kind: str  # "literal" | "prompt" | "slot" | "text" | "text_b"
    text: str = ""  # literal text; the slot's mask count is `size`
    size: int = 1


@dataclass
class Part:
    """Token ids of one side of the slot. `prompt[i]` is the [P] index at position i, or -1 for a real token."""

    ids: list[int] = field(default_factory=list)
    prompt: list[int] = field(default_factory=list)

    def add(self, ids: list[int], prompt: int = -1) -> None:
        self.ids.extend(ids)
        self.prompt.extend([prompt] * len(ids))

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(eq=False)
class Context:
    """Token ids every row shares before its template (demonstrations, a chat template's head: see demos.py and
    chat.py), one object for all of a classifier's rows. `prompt[i]` is the [P] index at position i, or -1 (the
    demonstrations carry the template's [P]). A causal backbone keeps their KV cache in `cache`, per backbone, so it
    is computed once (once per prompts, when they hold [P])."""

    ids: list[int]
    prompt: list[int] = field(default_factory=list)  # empty: no [P] anywhere
    cache: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary, repr=False)

    def __post_init__(self) -> None:
        if not self.prompt:
            self.prompt = [-1] * len(self.ids)
        if len(self.prompt) != len(self.ids):
            raise ValueError(f"context: {len(self.ids)} ids but {len(self.prompt)} prompt indices")

    @property
    def has_prompts(self) -> bool:
        return any(p >= 0 for p in self.prompt)


@dataclass
class Encoded:
    """One row, split at the label slot. Special tokens ([CLS], BOS…) are added by the backbone."""

    before: Part
    after: Part
    truncated: bool = False
    context: Context | None = None  # shared tokens that go before `before`, after the special tokens


TAG_TEXT = {"prompt": "[P]", "slot": "[MASK]", "text": "<text>", "text_b": "<text_b>"}


def _merge_literals(segments: list[Segment]) -> tuple[Segment, ...]:
    """Adjacent literal pieces joined into one, empty ones dropped (what parsing the rendered text would give)."""
    out: list[Segment] = []
    for seg in segments:
        if seg.kind == "literal" and out and out[-1].kind == "literal":
            out[-1] = Segment("literal", out[-1].text + seg.text)
        elif seg.kind != "literal" or seg.text:
            out.append(seg)
    return tuple(out)


SENTENCE_BREAKS = "。！？；.!?;\n"


def _split_name(text: str) -> tuple[str, str]:
    """A literal that precedes an input, split into (what stays, the clause naming the input): the clause is what
    follows the last sentence break, when it has a letter or a character in it."""
    cut = max(text.rfind(c) for c in SENTENCE_BREAKS) + 1
    tail = text[cut:]
    return (text[:cut], tail) if any(c.isalnum() for c in tail) else (text, "")


def render(segments: tuple[Segment, ...] | list[Segment]) -> str:
    """The template text the segments were parsed from."""
    return "".join(s.text if s.kind == "literal" else TAG_TEXT[s.kind] * (s.size if s.kind == "slot" else 1)
                   for s in segments)


def _position(source: str, offset: int) -> str:
    line = source.count("\n", 0, offset) + 1
    col = offset - (source.rfind("\n", 0, offset) + 1) + 1
    return f"line {line}, column {col}"


@dataclass(frozen=True)
class Template:
    source: str
    segments: tuple[Segment, ...]
    path: str = "<template>"

    @property
    def n_prompts(self) -> int:
        return sum(1 for s in self.segments if s.kind == "prompt")

    @property
    def mask_count(self) -> int:
        return next(s.size for s in self.segments if s.kind == "slot")

    @property
    def has_text_b(self) -> bool:
        return any(s.kind == "text_b" for s in self.segments)

    def check_text_b_column(self, column: str | None) -> None:
        """Refuse <text_b> without a column to fill it, and a --text-b-col with no <text_b> to go in."""
        if self.has_text_b and not column:
            raise UsageError(f"{self.path}: the template has <text_b>; name its column with --text-b-col")
        if column and not self.has_text_b:
            raise UsageError(f"--text-b-col {column}: the template {self.path} has no <text_b> to put it in")

    @property
    def space_before_slot(self) -> bool:
        """True when literal whitespace precedes the slot: BPE tokenizers then need the label word's leading space."""
        i = next(i for i, s in enumerate(self.segments) if s.kind == "slot")
        return i > 0 and self.segments[i - 1].kind == "literal" and self.segments[i - 1].text.endswith(" ")

    def without_prompts(self) -> Template:
        """The same template with every [P] removed: the manual prompt used for zero-shot scoring."""
        kept = tuple(s for s in self.segments if s.kind != "prompt")
        # Rendered from the segments: replacing "[P]" in the source text could also hit a literal "[" + "[P]".
        return Template(source=render(kept), segments=kept, path=self.path)

    def slot_index(self) -> int:
        return next(i for i, s in enumerate(self.segments) if s.kind == "slot")

    @property
    def inputs_after_slot(self) -> bool:
        """True when <text> or <text_b> comes after the slot: a causal LM would read it after the label."""
        return any(s.kind in ("text", "text_b") for s in self.segments[self.slot_index() + 1:])

    def inputs_first(self, names: bool = True) -> Template:
        """The template a left-to-right LM can use: the inputs that follow the slot move to the front, each on its
        own line, with the clause that names it (`names`), and everything else stays in order.
        '这是一条[P][P][MASK]评论:<text>' becomes '评论:<text>\n这是一条[P][P][MASK]': the slot is predicted with
        the text in view, instead of the label having to be guessed first and the text's likelihood under each label
        carrying the whole decision. The naming clause is the literal text right before an input, from its last
        sentence break, when it has a letter or a character in it ('评论:', ' Review: '); punctuation alone
        (': ') stays where it was. `names=False` is the rule of artifact format 4: the inputs alone move."""
        if not self.inputs_after_slot:
            return self
        cut = self.slot_index()
        front: list[Segment] = []
        rest: list[Segment] = []
        for i, seg in enumerate(self.segments):
            if i > cut and seg.kind in ("text", "text_b"):
                label = ""
                if self.segments[i - 1].kind == "literal":  # rest[-1]: literals never move whole
                    kept, label = _split_name(rest[-1].text) if names else (rest[-1].text, "")
                    # A space before an input belongs to it (TemplateEncoder); so does its naming clause.
                    rest[-1] = Segment("literal", kept.rstrip(" "))
                # An empty name is dropped by _merge_literals below.
                front += [Segment("literal", label.lstrip()), seg, Segment("literal", "\n")]
                continue
            rest.append(seg)
        rest = list(_merge_literals(rest))
        if names and rest[-1].kind == "literal":  # line breaks left behind at the end would only be scored
            rest[-1] = Segment("literal", rest[-1].text.rstrip())
        segments = _merge_literals(front + rest)
        return Template(source=render(segments), segments=segments, path=self.path)

    @classmethod
    def parse(cls, source: str, path: str = "<template>") -> Template:
        source = source.rstrip("\r\n")
        if not source.strip():
            raise PtcliError(f"{path}: the template is empty; write one like '这是一条[P][P][MASK][MASK]评论:<text>'")
        segments: list[Segment] = []
        pos = 0
        prompts = 0
        slot_at: int | None = None
        seen_inputs: dict[str, int] = {}
        for match in TAG.finditer(source):
            tag, start = match.group(), match.start()
            if start > pos:
                segments.append(Segment("literal", source[pos:start]))
            where = f"{path}: {_position(source, start)}"
            if tag not in KNOWN_TAGS:
                raise PtcliError(
                    f"{where}: unknown tag {tag}; the tags are [P] (prompt token), [MASK] (label slot), "
                    "<text> and <text_b> (inputs)"
                )
            if tag == "[P]":
                segments.append(Segment("prompt", size=prompts))
                prompts += 1
            elif tag == "[MASK]":
                if segments and segments[-1].kind == "slot":
                    last = segments.pop()
                    segments.append(Segment("slot", size=last.size + 1))
                elif slot_at is not None:
                    raise PtcliError(
                        f"{where}: a second [MASK] run (the first is at {_position(source, slot_at)}); the label "
                        "slot must be one run of adjacent masks, e.g. [MASK][MASK] with nothing between"
                    )
                else:
                    slot_at = start
                    segments.append(Segment("slot", size=1))
            else:
                name = tag[1:-1]
                if name in seen_inputs:
                    raise PtcliError(
                        f"{where}: {tag} appears twice (first at {_position(source, seen_inputs[name])}); "
                        "each input goes in exactly once"
                    )
                seen_inputs[name] = start
                segments.append(Segment(name))
            pos = match.end()
        if pos < len(source):
            segments.append(Segment("literal", source[pos:]))
        if "text" not in seen_inputs:
            raise PtcliError(f"{path}: the template has no <text>; put <text> where the input goes")
        if slot_at is None:
            raise PtcliError(f"{path}: the template has no [MASK]; put a [MASK] run where the label word goes")
        return cls(source=source, segments=tuple(segments), path=path)

    @classmethod
    def load(cls, path: str | Path) -> Template:
        return cls.parse(read_text(path, "a template file such as templates/review_zh.txt"), str(path))


class TemplateEncoder:
    """Tokenizes rows through a template for one tokenizer; literal pieces are tokenized once and cached."""

    def __init__(self, template: Template, tokenizer: Any, max_length: int, slot_length: int, n_special: int,
                 context: Context | None = None) -> None:
        self.template = template
        self.context = context  # on top of max_length, which bounds the row itself
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.slot_length = slot_length
        self.n_special = n_special
        # Spaces right before an input or the slot belong to it: BPE tokenizers (RoBERTa, GPT-2, Qwen) encode
        # " great" and "great" differently, and the word is what follows the space. Other whitespace (newlines,
        # spaces before [P]) stays literal.
        self._pieces: list[tuple[str, str | int]] = []  # (kind, literal text | input's space prefix | [P] index)
        segments = template.segments
        carry = ""
        for i, seg in enumerate(segments):
            nxt = segments[i + 1].kind if i + 1 < len(segments) else None
            if seg.kind == "literal":
                text = seg.text
                if nxt in ("text", "text_b", "slot"):
                    stripped = text.rstrip(" ")
                    carry = text[len(stripped):]
                    text = stripped
                if text:
                    self._pieces.append(("literal", text))
                continue
            if seg.kind == "prompt":
                self._pieces.append(("prompt", seg.size))
            elif seg.kind == "slot":
                self._pieces.append(("slot", 0))
            else:
                self._pieces.append((seg.kind, carry))
            carry = ""
        self._literal_ids = {
            text: self._tokenize(text) for kind, text in self._pieces if kind == "literal" and isinstance(text, str)
        }
        fixed = sum(len(v) for v in self._literal_ids.values()) + template.n_prompts
        self.budget = max_length - n_special - slot_length - fixed
        if self.budget < 1:
            raise PtcliError(
                f"{template.path}: the template alone needs {max_length - self.budget + 1} tokens with its label slot, "
                f"more than --max-length {max_length}; shorten the template or raise --max-length"
            )

    def _tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _tokenize_many(self, texts: list[str], prefix: str) -> list[list[int]]:
        if not texts:
            return []
        out = self.tokenizer([prefix + t for t in texts], add_special_tokens=False)["input_ids"]
        return [list(x) for x in out]

    def _fit(self, a: list[int], b: list[int]) -> tuple[list[int], list[int], bool]:
        """Truncate the inputs, never the template: longest first, keeping each input's head."""
        over = len(a) + len(b) - self.budget
        if over <= 0:
            return a, b, False
        la, lb = len(a), len(b)
        while la + lb > self.budget:
            if la >= lb:
                la -= 1
            else:
                lb -= 1
        return a[:la], b[:lb], True

    def encode(self, texts: list[str], texts_b: list[str] | None = None) -> list[Encoded]:
        prefix = {kind: text for kind, text in self._pieces if kind in ("text", "text_b")}
        ids_a = self._tokenize_many(texts, str(prefix.get("text", "")))
        if self.template.has_text_b:
            if texts_b is None:
                raise PtcliError(f"{self.template.path}: the template has <text_b> but no second text column was given")
            ids_b = self._tokenize_many(texts_b, str(prefix.get("text_b", "")))
        else:
            ids_b = [[] for _ in texts]
        rows = []
        for a, b in zip(ids_a, ids_b, strict=True):
            a, b, truncated = self._fit(a, b)
            before, after = Part(), Part()
            side = before
            for kind, value in self._pieces:
                if kind == "slot":
                    side = after
                elif kind == "literal":
                    side.add(self._literal_ids[str(value)])
                elif kind == "prompt":
                    side.add([PROMPT_ID], prompt=int(value))
                else:
                    side.add(a if kind == "text" else b)
            rows.append(Encoded(before=before, after=after, truncated=truncated, context=self.context))
        return rows
