"""Label words: which vocabulary words stand for which label, and how their scores become label scores.

A label may have several words. Each word is scored by the backbone (sum of its tokens' log-probabilities in the
slot); a label's score is the log of the *mean probability* of its words (log-mean-exp), so a label with more words
is not favoured just for having more of them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ptcli.data import UNWRITABLE, RepeatedKey, load_json, read_text
from ptcli.errors import PtcliError


@dataclass
class Verbalizer:
    labels: list[str]
    words: list[list[str]]  # words[i] are the label words of labels[i]

    @classmethod
    def default(cls, labels: list[str]) -> Verbalizer:
        return cls(labels=list(labels), words=[[label] for label in labels])

    @classmethod
    def load(cls, path: str | Path, labels: list[str]) -> Verbalizer:
        """Read `{"label": "word"}` or `{"label": ["w1", "w2"]}`; its order wins, restricted to the data's labels."""
        p = Path(path)
        mapping = _read_mapping(p)
        missing = [label for label in labels if label not in mapping]
        if missing:
            raise PtcliError(
                f"{p}: no label words for label(s) {', '.join(map(repr, missing))}; add them to the verbalizer "
                f"(it has {', '.join(map(repr, mapping))})"
            )
        ordered = [k for k in mapping if k in set(labels)]
        return cls(labels=ordered, words=[mapping[k] for k in ordered])

    def flat(self) -> tuple[list[str], list[int]]:
        """All words in one list, and the label index of each."""
        words, owner = [], []
        for i, ws in enumerate(self.words):
            words.extend(ws)
            owner.extend([i] * len(ws))
        return words, owner

    def to_dict(self) -> dict[str, list[str]]:
        return {label: list(ws) for label, ws in zip(self.labels, self.words, strict=True)}


def _read_mapping(p: Path) -> dict[str, list[str]]:
    """The file's label → words, each word stripped, with one-line errors for anything that cannot work."""
    text = read_text(p, 'a JSON file like {"pos": "好", "neg": "差"}')
    try:
        raw = load_json(text)
    except json.JSONDecodeError as e:
        raise PtcliError(f"{p}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    except RepeatedKey as e:
        raise PtcliError(f"{p}: key {e.key!r} appears twice in one object; list each label once") from None
    except (RecursionError, ValueError) as e:
        raise PtcliError(f"{p}: cannot read this JSON ({type(e).__name__}); write one object of labels") from None
    if not isinstance(raw, dict) or not raw:
        raise PtcliError(f"{p}: expected a JSON object mapping each label to a word or a list of words")
    mapping: dict[str, list[str]] = {}
    owner: dict[str, str] = {}  # word → the label that has it: one word cannot stand for two labels
    for key, value in raw.items():
        words = [value] if isinstance(value, str) else value
        if not key.strip():
            raise PtcliError(f"{p}: a label with no name ({key!r}); use the labels of your data")
        if not isinstance(words, list) or not words or not all(isinstance(w, str) and w.strip() for w in words):
            raise PtcliError(f"{p}: label {key!r} needs a non-empty word or a non-empty list of words")
        mapping[key] = [w.strip() for w in words]
        for word in mapping[key]:
            if UNWRITABLE.search(word):
                raise PtcliError(f"{p}: label {key!r} has the word {word!r} with a NUL or an unpaired surrogate "
                                 "escape; write the word itself")
            if word in owner:
                where = (f"twice under label {key!r}" if owner[word] == key
                         else f"under both {owner[word]!r} and {key!r}")
                raise PtcliError(f"{p}: the word {word!r} is listed {where}; each word may stand for one label, once")
            owner[word] = key
    return mapping


def label_scores(word_scores: torch.Tensor, owner: list[int], n_labels: int) -> torch.Tensor:
    """[B, W] word log-scores → [B, n_labels] label log-scores (log-mean-exp over each label's words).

    Grouped with scatter operations rather than a loop over labels, so 10,000 labels cost one pass, not 10,000.
    """
    if len(owner) == n_labels and owner == list(range(n_labels)):
        return word_scores  # one word per label: log-mean-exp of one score is the score
    index = torch.tensor(owner, device=word_scores.device).expand_as(word_scores)
    # The per-label max only keeps exp() in range; it is a constant for the gradient.
    peak = torch.full((word_scores.shape[0], n_labels), -math.inf, device=word_scores.device,
                      dtype=word_scores.dtype).scatter_reduce(1, index, word_scores.detach(), "amax")
    summed = torch.zeros_like(peak).scatter_add(1, index, torch.exp(word_scores - peak.gather(1, index)))
    counts = torch.bincount(torch.tensor(owner, device=word_scores.device), minlength=n_labels)
    return torch.log(summed) + peak - torch.log(counts.to(word_scores.dtype))
