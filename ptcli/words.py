"""Label-word search: propose, for each label, the words a frozen model puts in the slot for that label's rows and not
for the others', as a verbalizer to edit and pass to `ptcli train --verbalizer`.

Nothing is trained: rows go through the template without its [P] (the manual, zero-shot prompt), and every number
below is a `Backbone.score`, the scorer the classifier itself uses (a word's score is the sum of its tokens'
log-probabilities in the slot).

Score. For label y and word w, let m_y(w) be the mean score of w over y's rows. The word's *contrast* for y is

    contrast_y(w) = m_y(w) − max over other labels y' of m_y'(w)

the mean log-likelihood ratio against the label's closest competitor: a classifier confuses y with its nearest
rival, not with the average of the others. A positive contrast means y's rows give w more probability than any other
label's rows do, so a word can have a positive contrast for one label at most, and the words of different labels
never compete for the same evidence. The contrast must also be *reliable*: at least `min_t` (2) standard errors
(Welch's t over the two labels' rows), since with 8-16 rows a label a smaller difference is within the noise of
which rows were drawn (function words like "the" come out ahead on a few rows by chance). Ranking by contrast alone
would favour rare words whose tiny probabilities happen to differ, so a word must also be *plausible*: as in LM-BFF
(Gao et al. 2021) a label's candidates start with what the model actually predicts for its rows (one of its `pool`
likeliest first tokens), and a chosen word must be at least 1/100 (`margin` 4.6 nats) as likely on the label's rows,
in geometric mean, as the label's likeliest candidate. That margin is also what stops a word from growing into a
phrase: each token added lowers its probability, so an extension stays only while the model finds it likely.

Stage 1 (one pass per row). The slot's first-token log-probability over the whole vocabulary, for every row: a
one-token word list of the entire vocabulary given to `Backbone.score` (a causal LM reads it from the prefix's last
position; a masked LM from the first [MASK], the others still masked). Per label, the mean over its rows, and from
it the contrast of every token. Tokens that are not words are dropped: special tokens, pieces with whitespace or
punctuation, BERT "##" continuations, byte pieces that do not decode to whole characters, and tokens whose text does
not tokenize back to the same ids the way `train` will tokenize it (with the template's space before the slot, if it
has one; a word is one run of letters and digits, CJK included, with no space inside).

Stage 2 (multi-token words). Each label's likeliest and most contrasting first tokens, whole words or not (a byte
piece of a Chinese character, the 不 of 不错), are extended by the model itself: the tokens are put in the slot and the
next token's distribution read, averaged over the label's `contexts` shortest rows; the `branch` likeliest
continuations that keep the text one word are kept, a beam of 2 × `beams` per label, up to `max_tokens` tokens (a
masked LM: exactly its [MASK] count, the next [MASK] filled in turn, the rest still masked). Every prefix that is a
whole word becomes a candidate, with each label's `shortlist` one-token words of best contrast. All candidates are
then scored on every row by `Backbone.score`, the text after the slot included, and ranked by contrast. (Where a
one-token word's score is just its stage-1 number, a masked LM's single [MASK] or a causal LM with nothing after the
slot, stage 1's per-row numbers are reused, so that case costs one pass over the rows less.)

Choice. Words go to labels best contrast first; a word serves one label, a label takes at most `top` plausible words
with a reliable positive contrast (at least one: its best word even when none qualifies, with a warning, since a
verbalizer needs a word for every label), and within a label no two words share a first token (such words add the
same first-token evidence twice). The in-sample zero-shot accuracy of the chosen verbalizer on the searched rows is
reported too: optimistic, since the words were picked on those rows, but a quick check that they separate the labels
at all.

Cost: with a causal LM, two passes over the rows (stage 1 and the longer words' rescoring, which also runs each
(row, word) continuation on the cached prefix) plus, per extra token, one pass over labels × 2·`beams` × `contexts`
short rows.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ptcli.backbone import Backbone
from ptcli.checks import check_at_least
from ptcli.classifier import position_limit
from ptcli.console import log, progress, warn
from ptcli.errors import PtcliError, UsageError
from ptcli.template import Encoded, Part, Template, TemplateEncoder
from ptcli.verbalizer import Verbalizer, label_scores

REPLACEMENT = "\ufffd"  # what a byte piece of an unfinished UTF-8 character decodes to
MAX_KEPT_CELLS = 32_000_000  # stage 1 keeps per-row scores up to 128 MB (e.g. 200 rows × Qwen's 152k tokens)


@dataclass
class SearchConfig:
    top: int = 3  # words per label in the verbalizer
    pool: int = 100  # a label's candidates start with one of its `pool` likeliest first tokens
    shortlist: int = 16  # one-token words per label (best contrast in its pool) rescored in stage 2
    beams: int = 4  # first tokens per label extended into longer words: this many likeliest, this many best contrast
    branch: int = 2  # continuations tried per beam and step
    max_tokens: int = 3  # longest word for a causal LM, in tokens (a masked LM's words have its [MASK] count)
    contexts: int = 3  # rows per label (its shortest) the continuations are read from
    min_t: float = 2.0  # a word's contrast must be at least this many standard errors: with 8-16 rows a label,
    # anything less is within the noise of which rows were drawn
    margin: float = 4.6  # nats: a word must be at least e^-margin (1/100) as likely on the label's rows as the
    # label's likeliest candidate word (geometric means over the rows)
    alternatives: int = 5  # runners-up per label in the result (positive contrast, likeliest first), to edit by hand
    batch_size: int = 8
    max_length: int = 256
    text_first: bool = True  # the template in the backbone's reading order, as `train` reads it by default

    def check(self) -> None:
        for name in ("top", "pool", "shortlist", "beams", "branch", "max_tokens", "contexts", "batch_size",
                     "max_length"):
            check_at_least(name, getattr(self, name))
        check_at_least("alternatives", self.alternatives, 0)
        for name in ("margin", "min_t"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise UsageError(f"{name} {value}: must be a finite number of at least 0")


@dataclass
class WordScore:
    word: str
    token_ids: list[int]
    contrast: float  # mean score on the label's rows minus the highest other label's mean
    t: float  # the contrast in standard errors (Welch's t)
    logprob: float  # mean score (sum of token log-probabilities in the slot) on the label's rows

    def to_dict(self) -> dict[str, Any]:
        return {"word": self.word, "tokens": len(self.token_ids), "token_ids": self.token_ids,
                "contrast": round(self.contrast, 4), "t": round(self.t, 2) if math.isfinite(self.t) else None,
                "logprob": round(self.logprob, 4)}


@dataclass
class SearchResult:
    labels: list[str]
    words: dict[str, list[WordScore]]  # chosen words per label, best first
    alternatives: dict[str, list[WordScore]]  # the next best candidates per label, not chosen
    rows: dict[str, int]  # rows searched per label
    candidates: int  # distinct words scored in stage 2
    accuracy: float  # in-sample zero-shot accuracy of the chosen words on the searched rows
    seconds: float = 0.0
    template: str = ""
    backbone: str = ""

    @property
    def verbalizer(self) -> Verbalizer:
        return Verbalizer(labels=list(self.labels), words=[[w.word for w in self.words[y]] for y in self.labels])

    def to_dict(self) -> dict[str, Any]:
        return {"verbalizer": self.verbalizer.to_dict(), "template": self.template, "backbone": self.backbone,
                "rows": self.rows, "candidates": self.candidates, "accuracy_in_sample": round(self.accuracy, 4),
                "seconds": round(self.seconds, 2),
                "words": {y: [w.to_dict() for w in self.words[y]] for y in self.labels},
                "alternatives": {y: [w.to_dict() for w in self.alternatives[y]] for y in self.labels}}


@dataclass
class _Candidate:
    ids: tuple[int, ...]
    word: str


@dataclass
class _Vocab:
    """Which token sequences are words: decoded, checked and round-tripped the way `train` will tokenize them."""

    backbone: Backbone
    space_before: bool
    size: int
    special: set[int] = field(default_factory=set)
    _cache: dict[tuple[int, ...], tuple[bool, str | None]] = field(default_factory=dict)

    @property
    def causal(self) -> bool:
        return self.backbone.kind == "causal"

    def check(self, ids: Sequence[int]) -> tuple[bool, str | None]:
        """(can begin a word, the word when it is one).

        The text is the decoded run without whitespace (WordPiece decodes 不错 as "不 错"; a BPE slot after a space
        decodes with that space). It can begin a word when it is letters and digits only (CJK included), maybe
        ending in an unfinished UTF-8 character, and, when finished, tokenizes back to exactly `ids` the way
        `train` will tokenize it: that one test rejects two words run together ("goodmovie"), a token that needs a
        space the slot does not have, and the reverse. A word is such a run with no unfinished character.
        """
        key = tuple(ids)
        if key in self._cache:
            return self._cache[key]
        result: tuple[bool, str | None] = (False, None)
        if key and not any(i in self.special or i >= self.size for i in key):
            text = "".join(self.backbone.tokenizer.decode(list(key), clean_up_tokenization_spaces=False).split())
            core = text.rstrip(REPLACEMENT)
            if text and all(ch.isalnum() for ch in core):
                if core != text:
                    result = (True, None)
                elif self.backbone.tokenize_word(text, self.space_before) == list(key):
                    result = (True, text)
        self._cache[key] = result
        return result


def _vocab(backbone: Backbone, space_before: bool) -> _Vocab:
    tok = backbone.tokenizer
    size = min(len(tok), int(backbone.input_embeddings.weight.shape[0]))
    return _Vocab(backbone, space_before, size, set(tok.all_special_ids))


def _shift(row: Encoded, filled: Sequence[int], rest: int, mask_id: int | None) -> Encoded:
    """The row with `filled` tokens already in the slot, scored at the next slot position. A causal LM reads the
    next token from the prefix alone; a masked LM keeps `rest` [MASK] after it and the text after the slot."""
    before = Part(row.before.ids + list(filled), row.before.prompt + [-1] * len(filled))
    if mask_id is None:
        return Encoded(before=before, after=Part())
    after = Part([mask_id] * rest + row.after.ids, [-1] * rest + row.after.prompt)
    return Encoded(before=before, after=after, truncated=row.truncated)


class _Scorer:
    """Runs `Backbone.score` in batches, longest rows first, without autograd."""

    def __init__(self, backbone: Backbone, batch_size: int) -> None:
        self.backbone = backbone
        self.batch_size = batch_size
        vocab = min(len(backbone.tokenizer), int(backbone.input_embeddings.weight.shape[0]))
        self.every_token = [[i] for i in range(vocab)]

    def batches(self, rows: list[Encoded], word_ids: list[list[int]],
                on_batch: Callable[[int], None] | None = None) -> Any:
        """Yield (row indices, [b, W] scores) per batch."""
        order = sorted(range(len(rows)), key=lambda i: -(len(rows[i].before) + len(rows[i].after)))
        self.backbone.train(False)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                scores = self.backbone.score([rows[i] for i in idx], None, word_ids).float().cpu()
                yield idx, scores
                if on_batch is not None:
                    on_batch(len(idx))

    def next_token(self, rows: list[Encoded], on_batch: Callable[[int], None] | None = None) -> torch.Tensor:
        """[len(rows), V]: log-probability of every vocabulary token at the (shifted) rows' next slot position."""
        out = torch.empty(len(rows), len(self.every_token))
        for idx, scores in self.batches(rows, self.every_token, on_batch):
            out[idx] = scores
        return out


class _Stats:
    """Per-label statistics of word scores, accumulated over rows: [L, W] means, the contrast against each word's
    closest other label, and that contrast in standard errors (Welch's t)."""

    def __init__(self, n_labels: int, n_words: int) -> None:
        self.sums = torch.zeros(n_labels, n_words, dtype=torch.float64)
        self.squares = torch.zeros(n_labels, n_words, dtype=torch.float64)
        self.counts = torch.zeros(n_labels, 1, dtype=torch.float64)

    def add(self, y: np.ndarray, scores: torch.Tensor) -> None:
        index = torch.as_tensor(y, dtype=torch.long)
        values = scores.double().clamp(min=-1e4)  # a -inf log-probability would turn every statistic into nan
        self.sums.index_add_(0, index, values)
        self.squares.index_add_(0, index, values**2)
        self.counts.index_add_(0, index, torch.ones(len(index), 1, dtype=torch.float64))

    def finish(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(means, contrast, t), each [L, W]. With fewer than two rows a label's spread is unknown and counts as 0."""
        n = self.counts
        means = self.sums / n
        var = torch.where(n > 1, (self.squares - n * means**2) / (n - 1).clamp(min=1), 0).clamp(min=0)
        if means.shape[0] == 1:
            return means, means.clone(), torch.full_like(means, math.inf)
        top2 = means.topk(2, dim=0).indices
        labels = torch.arange(means.shape[0]).unsqueeze(1)
        rival = torch.where(top2[0].unsqueeze(0) == labels, top2[1].unsqueeze(0), top2[0].unsqueeze(0))
        contrast = means - means.gather(0, rival)
        se = (var / n + var.gather(0, rival) / n.expand_as(var).gather(0, rival)).sqrt()
        t = torch.where(se > 0, contrast / se.clamp(min=1e-12), torch.sign(contrast) * math.inf)
        return means, contrast, t


def search_words(backbone: Backbone, template: Template, texts: list[str], labels: list[str],
                 texts_b: list[str] | None = None, config: SearchConfig | None = None,
                 label_order: list[str] | None = None) -> SearchResult:
    """Propose label words for `labels` (one per text) with the frozen `backbone` and `template` (its [P] are
    dropped). `label_order`: the labels and their order (default: sorted); each must have rows."""
    started = time.perf_counter()
    config = config or SearchConfig()
    config.check()
    if len(texts) != len(labels) or (texts_b is not None and len(texts_b) != len(texts)):
        raise UsageError("search_words: texts, texts_b and labels must have one entry per row")
    order = list(label_order) if label_order is not None else sorted(set(labels))
    if len(set(order)) < 2:
        raise PtcliError(f"labels {order}: label words are told apart by contrast, which needs at least two labels")
    counts = {y: 0 for y in order}
    for label in labels:
        if label not in counts:
            raise PtcliError(f"label {label!r} has rows but is not among the labels {order}; list it or drop its rows")
        counts[label] += 1
    empty = [y for y in order if counts[y] == 0]
    if empty:
        raise PtcliError(f"label(s) {', '.join(map(repr, empty))} have no rows; every label needs examples to "
                         "search its words")
    if template.has_text_b and texts_b is None:
        raise UsageError(f"{template.path}: the template has <text_b>; give the second texts (--text-b-col)")

    manual = template.without_prompts()
    manual = backbone.reading_order(manual) if config.text_first else manual
    if manual.source != template.source:
        log(f"searching with the template as the backbone reads it, without [P]: {manual.source!r}")
    for message in backbone.template_warnings(manual):
        warn(message)
    causal = backbone.kind == "causal"
    k = 1 if causal else template.mask_count
    longest = config.max_tokens if causal else k
    mask_id = None if causal else int(backbone.tokenizer.mask_token_id)
    limit = position_limit(backbone.model)
    max_length = min(config.max_length, limit) if limit else config.max_length
    encoder = TemplateEncoder(manual, backbone.tokenizer, max_length, backbone.slot_length(k, [[0] * longest]),
                              backbone.n_special())
    rows = encoder.encode(texts, texts_b)
    y = np.array([order.index(label) for label in labels])
    n_labels = len(order)
    # The words are for `train`, which tokenizes them with the [P]-ful template's space rule.
    vocab = _vocab(backbone, template.space_before_slot)
    scorer = _Scorer(backbone, config.batch_size)

    # Stage 1: the first slot token's distribution on every row, as per-label means.
    # When the slot's first token is all there is to a one-token word's score (a masked LM's single [MASK]; a causal
    # LM with nothing after the slot) these are its exact scores: kept per row, within a memory budget, they spare
    # stage 2 a pass.
    first_rows = [_shift(r, [], k - 1, mask_id) for r in rows]
    n_vocab = len(scorer.every_token)
    exact = (k == 1 and not causal) or (causal and not any(r.after.ids for r in rows))
    per_row = torch.empty(len(rows), n_vocab) if exact and len(rows) * n_vocab <= MAX_KEPT_CELLS else None
    stats = _Stats(n_labels, n_vocab)
    with progress() as bar:
        task = bar.add_task("stage 1: first slot token", total=len(rows))
        for idx, batch in scorer.batches(first_rows, scorer.every_token, lambda n: bar.update(task, advance=n)):
            stats.add(y[idx], batch)
            if per_row is not None:
                per_row[idx] = batch
    means, contrast, t_stat = stats.finish()
    del stats

    def best_first(label: int, tokens: list[int]) -> list[int]:
        """Reliable contrasts (t ≥ min_t) first, each group by contrast."""
        return sorted(tokens, key=lambda t: (bool(t_stat[label, t] < config.min_t), -float(contrast[label, t])))

    candidates: dict[tuple[int, ...], str] = {}
    beams: list[list[tuple[tuple[int, ...], float]]] = []
    for label in range(n_labels):
        pool = _pool(vocab, means[label], config.pool)
        words = [t for t in pool if vocab.check([t])[1] is not None] if k == 1 else []
        for t in best_first(label, words)[: config.shortlist]:
            candidates[(t,)] = str(vocab.check([t])[1])
        if longest > 1:
            likeliest = pool[: config.beams]
            contrasting = best_first(label, pool)[: config.beams]
            starts = list(dict.fromkeys(likeliest + contrasting))
            beams.append([((t,), float(means[label, t])) for t in starts])
        else:
            beams.append([])
    log(f"stage 1: {len(candidates)} one-token word(s) shortlisted from {len(scorer.every_token)} tokens "
        f"({time.perf_counter() - started:.1f}s)")

    # Stage 2a: extend the beams token by token, from each label's shortest rows.
    if longest > 1:
        _extend(scorer, vocab, rows, y, beams, candidates, config, longest, k, mask_id)
        log(f"stage 2: {len(candidates)} candidate words ({time.perf_counter() - started:.1f}s)")
    if not candidates:
        raise PtcliError(f"{backbone.info.name}: no vocabulary token in the slot's likeliest {config.pool} is a word; "
                         "check the template, or raise the pool")

    # Stage 2b: every candidate on every row, with the real scorer.
    # One-token and longer words in separate calls: with nothing after the slot a causal LM scores one-token words
    # from the prefix alone, and the longer ones' continuations are not padded for them.
    cand = [_Candidate(ids, word) for ids, word in candidates.items()]
    scores = torch.empty(len(rows), len(cand))
    groups = [[j for j, c in enumerate(cand) if (len(c.ids) == 1) == one] for one in (True, False)]
    if per_row is not None and groups[0]:
        scores[:, groups[0]] = per_row[:, [cand[j].ids[0] for j in groups[0]]]
        groups[0] = []
    del per_row
    with progress() as bar:
        task = bar.add_task(f"stage 2: {len(cand)} candidate words", total=len(rows) * sum(map(bool, groups)))
        for group in filter(None, groups):
            for idx, batch in scorer.batches(rows, [list(cand[j].ids) for j in group],
                                             on_batch=lambda n: bar.update(task, advance=n)):
                scores[torch.as_tensor(idx).unsqueeze(1), torch.as_tensor(group).unsqueeze(0)] = batch
    log(f"stage 2: {len(cand)} candidate words scored on every row ({time.perf_counter() - started:.1f}s)")
    stats = _Stats(n_labels, len(cand))
    stats.add(y, scores)
    chosen, alternatives = _choose(order, cand, *stats.finish(), config)
    accuracy = _accuracy(scores, y, cand, chosen, order)
    return SearchResult(labels=order, words=chosen, alternatives=alternatives, rows=counts, candidates=len(cand),
                        accuracy=accuracy, seconds=time.perf_counter() - started, template=template.source,
                        backbone=backbone.info.name)


def _pool(vocab: _Vocab, label_means: torch.Tensor, size: int) -> list[int]:
    """The label's `size` likeliest first tokens that can begin a word, likeliest first."""
    pool: list[int] = []
    step = max(4 * size, 256)
    ranked = torch.argsort(label_means, descending=True).tolist()
    for start in range(0, len(ranked), step):
        pool += [t for t in ranked[start : start + step] if vocab.check([t])[0]]
        if len(pool) >= size:
            break
    return pool[:size]


def _extend(scorer: _Scorer, vocab: _Vocab, rows: list[Encoded], y: np.ndarray,
            beams: list[list[tuple[tuple[int, ...], float]]], candidates: dict[tuple[int, ...], str],
            config: SearchConfig, longest: int, k: int, mask_id: int | None) -> None:
    """Grow each label's beams one slot token at a time (the model's likeliest continuations on the label's
    shortest rows), adding every whole word met along the way (a masked LM's: only at full length) to candidates."""
    contexts = []
    for label in range(len(beams)):
        mine = [i for i in range(len(rows)) if y[i] == label]
        mine.sort(key=lambda i: (len(rows[i].before) + len(rows[i].after), i))
        contexts.append(mine[: config.contexts])
    width = 2 * config.beams
    for depth in range(1, longest):
        pairs = [(label, b, i) for label in range(len(beams)) for b in range(len(beams[label]))
                 for i in contexts[label]]
        if not pairs:
            break
        shifted = [_shift(rows[i], beams[label][b][0], k - 1 - depth, mask_id) for label, b, i in pairs]
        with progress() as bar:
            task = bar.add_task(f"stage 2: extending words to {depth + 1} tokens", total=len(shifted))
            nxt = scorer.next_token(shifted, on_batch=lambda n, task=task: bar.update(task, advance=n))
        grown: list[list[tuple[tuple[int, ...], float]]] = []
        for label in range(len(beams)):
            new: dict[tuple[int, ...], float] = {}
            for b, (ids, score) in enumerate(beams[label]):
                sel = [p for p, (lab, bb, _) in enumerate(pairs) if lab == label and bb == b]
                mean = nxt[sel].mean(0)
                kept = 0
                for t in torch.argsort(mean, descending=True)[:64].tolist():
                    longer = (*ids, t)
                    if vocab.check(longer)[0]:
                        new[longer] = score + float(mean[t])
                        kept += 1
                        if kept == config.branch:
                            break
            best = sorted(new.items(), key=lambda kv: -kv[1])[:width]
            for ids, _ in best:
                word = vocab.check(ids)[1]
                if word is not None and (len(ids) == k or vocab.causal):
                    candidates.setdefault(ids, word)
            grown.append(best)
        beams[:] = grown


def _choose(order: list[str], cand: list[_Candidate], means: torch.Tensor, contrast: torch.Tensor, t_stat: torch.Tensor,
            config: SearchConfig) -> tuple[dict[str, list[WordScore]], dict[str, list[WordScore]]]:
    """Assign words to labels, best contrast first, among each label's plausible, reliable words (module
    docstring)."""
    n_labels = len(order)
    ranked = sorted(((float(contrast[lab, w]), lab, w) for lab in range(n_labels) for w in range(len(cand))),
                    key=lambda t: (-t[0], t[1], t[2]))
    floor = means.max(dim=1).values - config.margin  # per label: the likeliest candidate's mean minus the margin
    taken: set[int] = set()
    firsts: list[set[int]] = [set() for _ in order]
    chosen: list[list[int]] = [[] for _ in order]

    def plausible(lab: int, w: int) -> bool:
        return bool(means[lab, w] >= floor[lab])

    def reliable(lab: int, w: int) -> bool:
        return bool(contrast[lab, w] > 0 and t_stat[lab, w] >= config.min_t)

    def fits(lab: int, w: int) -> bool:
        return w not in taken and len(chosen[lab]) < config.top and cand[w].ids[0] not in firsts[lab]

    def take(lab: int, w: int) -> None:
        taken.add(w)
        firsts[lab].add(cand[w].ids[0])
        chosen[lab].append(w)

    for _, lab, w in ranked:
        if reliable(lab, w) and plausible(lab, w) and fits(lab, w):
            take(lab, w)
    for lab, label in enumerate(order):
        if chosen[lab]:
            continue
        mine = [w for _, la, w in ranked if la == lab and fits(lab, w)]  # best contrast first
        if not mine:
            raise PtcliError(f"label {label!r}: no candidate word is left for it; the other labels took them all")
        best = next((w for w in mine if plausible(lab, w)), mine[0])
        take(lab, best)
        warn(f"label {label!r}: no likely word is reliably likelier on its rows than on the other labels'; "
             f"proposing {cand[best].word!r} (contrast {float(contrast[lab, best]):+.2f}, "
             f"t {float(t_stat[lab, best]):.1f}): check it by hand, or add rows")

    def entry(lab: int, w: int) -> WordScore:
        return WordScore(cand[w].word, list(cand[w].ids), float(contrast[lab, w]), float(t_stat[lab, w]),
                         float(means[lab, w]))

    words = {label: [entry(lab, w) for w in chosen[lab]] for lab, label in enumerate(order)}
    alternatives = {}
    for lab, label in enumerate(order):
        rest = [w for w in range(len(cand)) if w not in taken and float(contrast[lab, w]) > 0]
        rest.sort(key=lambda w: -float(means[lab, w]))
        alternatives[label] = [entry(lab, w) for w in rest[: config.alternatives]]
    return words, alternatives


def _accuracy(scores: torch.Tensor, y: np.ndarray, cand: list[_Candidate], chosen: dict[str, list[WordScore]],
              order: list[str]) -> float:
    index = {c.ids: j for j, c in enumerate(cand)}
    cols, owner = [], []
    for lab, label in enumerate(order):
        for w in chosen[label]:
            cols.append(index[tuple(w.token_ids)])
            owner.append(lab)
    pred = label_scores(scores[:, cols], owner, len(order)).argmax(1).numpy()
    return float((pred == y).mean())


# --- the command ---------------------------------------------------------------------------------------------------


@dataclass
class WordsArgs:
    data: Path  # labeled rows: .csv, .tsv, .jsonl or .parquet
    template: Path  # template file or a shipped template's name; its [P] are dropped
    model: str = "bert-base-chinese"  # hub id, local directory or .gguf file
    gguf_file: str | None = None
    output: Path | None = None  # verbalizer JSON to write; none: only print
    format: str | None = None
    text_col: str = "text"
    text_b_col: str | None = None
    label_col: str = "label"
    device: str = "auto"
    precision: str = "auto"
    config: SearchConfig = field(default_factory=SearchConfig)


def _template_path(value: Path) -> Path:
    """A file of the user's, else a shipped template of that name (as train resolves it, without its verbalizer)."""
    from ptcli import shipped

    if os.path.lexists(value) and not os.path.isdir(value):
        return value
    name = shipped.shipped_template(value)
    if name is None:
        return value  # the template loader says what is wrong with it
    path = shipped.directory() / (name + shipped.TEMPLATE_SUFFIX)
    log(f"template: shipped {name} ({path})")
    return path


def words(args: WordsArgs, backbone: Backbone | None = None) -> SearchResult:
    """Read the data and template, search, and write the verbalizer JSON to `args.output` (when given)."""
    from ptcli.data import read_labeled
    from ptcli.loading import load_backbone
    from ptcli.outputs import atomic_file, check_output_file

    args.config.check()
    template_path = _template_path(args.template)
    if args.output is not None:
        check_output_file(args.output, reads=(args.data, template_path), option="--output")
    template = Template.load(template_path)
    template.check_text_b_column(args.text_b_col)
    df = read_labeled(args.data, args.text_col, args.label_col, args.text_b_col, args.format)
    classes = sorted(set(df[args.label_col]))
    if len(classes) < 2:
        raise PtcliError(f"{args.data}: only one label ({classes[0]!r}) in column {args.label_col!r}; label words "
                         "are searched by contrast between labels, which needs at least two")
    if backbone is None:
        log(f"loading backbone {args.model}…")
        backbone = load_backbone(args.model, args.device, args.precision, args.gguf_file)
    texts_b = df[args.text_b_col].tolist() if args.text_b_col else None
    result = search_words(backbone, template, df[args.text_col].tolist(), df[args.label_col].tolist(), texts_b,
                          args.config)
    if args.output is not None:
        with atomic_file(args.output) as stream:
            stream.write(json.dumps(result.verbalizer.to_dict(), ensure_ascii=False, indent=2) + "\n")
        log(f"verbalizer → {args.output}")
    log(f"{result.candidates} candidate words scored on {len(df)} rows in {result.seconds:.1f}s; in-sample "
        f"zero-shot accuracy with the chosen words {result.accuracy:.4f}")
    return result


def format_table(result: SearchResult) -> str:
    """The chosen words, one per line: label, word, token count, contrast, its t, mean log-probability on its
    rows."""
    lines = [["label", "word", "tokens", "contrast", "t", "logprob"]]
    for label in result.labels:
        for w in result.words[label]:
            lines.append([label, w.word, str(len(w.token_ids)), f"{w.contrast:+.3f}", f"{w.t:.1f}",
                          f"{w.logprob:.3f}"])
    widths = [max(_width(line[c]) for line in lines) for c in range(len(lines[0]))]
    return "\n".join("  ".join(_pad(cell, widths[c], right=c >= 2) for c, cell in enumerate(line))
                     for line in lines)


def _width(text: str) -> int:
    """Columns a string takes in a terminal: CJK characters take two."""
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(text: str, width: int, right: bool) -> str:
    space = " " * max(0, width - _width(text))
    return space + text if right else text + space

