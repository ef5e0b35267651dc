"""Causal-LM backbones (GPT-2, Qwen, Llama…): the slot is scored left to right by teacher forcing.

For a row split at the slot into `before` and `after`, the score of label word w is

    log P(w | before) + log P(after | before, w)

The first term is the usual answer likelihood. The second term is zero when nothing follows the slot and, when text
does follow it (`[MASK]` in the middle of the template), it lets the rest of the row vote too, the way a masked LM
sees both sides. Every candidate sees the same `after`, so the scores stay comparable across labels; words of
different token lengths are summed, not averaged, so padding adds no bias.

One forward pass over the (left-padded) prefix builds the KV cache and scores every word's first token from the
last position alone: when each label word is one token and nothing follows the slot, that is the whole score. Else
all (row, word) continuations run as a second batch on top of that cache, in chunks, with the vocabulary projection
applied only at the positions that are scored.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint
from transformers import DynamicCache

from ptcli.backbone import Backbone
from ptcli.errors import PtcliError
from ptcli.template import Context, Encoded, Template


class CausalLM(Backbone):
    kind = "causal"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A causal LM needs at least one token before the slot to predict it from: BOS, else EOS as GPT-2 uses it.
        tok = self.tokenizer
        start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        self.start_id = int(start) if start is not None else self.pad_id
        self.suffix_special = []  # an EOS after the text would only add a constant to every candidate
        # transformers renamed `past_key_values` to `cache` during 5.x; speak whichever this version knows.
        self._body, self._head = self.model.base_model, self.model.get_output_embeddings()
        params = inspect.signature(self._body.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        # Continuation tokens per chunk. Inference keeps one layer's activations at a time, so chunks can be big;
        # training recomputes a chunk in backward with every layer's activations saved (~3 MB a token for
        # Qwen2-0.5B in fp32), so its chunks are small. Either bounds memory; neither changes a score.
        self.chunk_tokens, self.train_chunk_tokens = 1024, 256
        # LM-head positions per chunk: ~64 MB of fp32 logits whatever the vocabulary size.
        self.head_chunk = max(8, 2**24 // int(self._head.weight.shape[0]))
        # KV cache copied per pass: each row of a batch gets a copy of the shared context's cache, each pair in a chunk
        # of continuations a copy of its row's prefix cache. Rows per pass and pairs per chunk keep that under 256 MB
        # (a 600-token prefix is ~28 MB a row for SmolLM2-135M in fp32, ~15 MB for Qwen2-0.5B). No score changes.
        self.cache_bytes = 2**28
        # (context, tokens, prompts, shared run) of the last leading run a whole batch shared (`_shared_past`).
        self._template_past: tuple[Any, Any, torch.Tensor | None, _Shared] | None = None
        _check_split(self)

    def slot_length(self, mask_count: int, word_ids: list[list[int]]) -> int:
        return max(len(w) for w in word_ids)

    def reading_order(self, template: Template, names: bool = True) -> Template:
        """Left to right, the slot would be predicted before the inputs that follow it: they move to the front."""
        return template.inputs_first(names)

    def template_warnings(self, template: Template) -> list[str]:
        warnings = []
        if template.inputs_after_slot:
            warnings.append(
                f"{template.path}: the label slot comes before an input; a causal LM reads left to right, so it "
                "must guess the label before seeing the text (only the text's likelihood given the label helps). "
                "Put [MASK] after <text>, e.g. '<text> 这条评论是[MASK]的', or drop --no-text-first"
            )
        if template.mask_count > 1:
            warnings.append(
                f"{template.path}: {template.mask_count} [MASK] in a row; for a causal LM the slot takes each label "
                "word whole, whatever its token count, so one [MASK] is enough"
            )
        return warnings

    def score(self, rows: list[Encoded], prompts: torch.Tensor | None, word_ids: list[list[int]]) -> torch.Tensor:
        return self._run(rows, prompts, word_ids, states=False)[0]

    def score_and_state(self, rows: list[Encoded], prompts: torch.Tensor | None, word_ids: list[list[int]]
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._run(rows, prompts, word_ids, states=True)

    def _run(self, rows: list[Encoded], prompts: torch.Tensor | None, word_ids: list[list[int]], states: bool
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
        seqs = [self._sequence(row) for row in rows]
        shared = self._shared_past(rows, seqs, prompts)
        if shared is not None:
            # Each row gets its own copy of the shared cache: bound rows per pass by `cache_bytes`.
            step = max(1, self.cache_bytes // _row_bytes(shared.layers))
            if step < len(rows):
                parts = [self._score(rows[i : i + step], seqs[i : i + step], prompts, word_ids, shared, states)
                         for i in range(0, len(rows), step)]
                return torch.cat([s for s, _ in parts]), None if not states else torch.cat([h for _, h in parts])
        return self._score(rows, seqs, prompts, word_ids, shared, states)

    def _score(self, rows: list[Encoded], seqs: list[_Sequence], prompts: torch.Tensor | None,
               word_ids: list[list[int]], shared: _Shared | None, want_states: bool
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        # The slot ends every row and each word is one token: the prefix's last position is the whole score.
        single = all(len(w) == 1 for w in word_ids) and not any(row.after.ids for row in rows)
        with self.autocast():
            last, mean, cache, attn, prefix_len = self._prefix(seqs, prompts, keep_cache=not single, shared=shared,
                                                               mean=want_states)
        states = torch.stack([last.float(), mean.float()], dim=1) if mean is not None else None  # head.STATES
        # log P(first token of each word | before): one row of logits per row, read for every word.
        first = torch.tensor([w[0] for w in word_ids], device=self.device)
        scores = torch.log_softmax(self._head(last).float(), dim=-1)[:, first]  # [B, W]
        if single:
            return scores, states
        return scores + self._continuations(rows, prompts, word_ids, cache, attn, prefix_len), states

    def _sequence(self, row: Encoded) -> _Sequence:
        """Everything a row runs before its slot: the special tokens, the shared context, then `before`; with each
        position's prompt index (-1: a plain token)."""
        if row.context is not None:
            head = self.prefix_special + row.context.ids
            head_prompt = [-1] * len(self.prefix_special) + row.context.prompt
        else:
            head = self.prefix_special or ([] if row.before.ids else [self.start_id])
            head_prompt = [-1] * len(head)
        return head + row.before.ids, head_prompt + row.before.prompt

    def _shared_past(self, rows: list[Encoded], seqs: list[_Sequence], prompts: torch.Tensor | None
                     ) -> _Shared | None:
        """The KV cache [1, heads, S, d] per layer of the first S positions every row of the batch shares, or None.

        The shared context (demonstrations, a chat head) is cached once per backbone (`_context_cache`). When nothing
        needs gradients (prediction, evaluation), the template's own leading run is shared too: in
        "[P][P][P][P]评论：<text>…" the prompts and the anchor text are the same tokens in every row, so they run
        once instead of once a row (the demo's 150 rows: 9 of their ~60 tokens each). Kept while the same prompts
        come back, so a whole prediction runs them once. Each row keeps at least its last position to run itself.
        The run's hidden states are the same in every row (attention is causal), so their sum joins each row's mean
        state; the context's do not (the mean covers the row, not the prefix every row shares).
        """
        context = _shared_context(rows)
        past = self._context_cache(context, prompts) if context is not None else None
        plain = None if past is None else _Shared(past)
        if self._needs_grad(prompts) or not rows:
            return plain
        ids, pidx = seqs[0]
        shared = min(len(s[0]) for s in seqs) - 1
        for other_ids, other_p in seqs[1:]:
            shared = next((i for i in range(shared) if other_ids[i] != ids[i] or other_p[i] != pidx[i]), shared)
        shift = 0 if past is None else int(past[0][0].shape[2])
        if shared <= shift:
            return plain
        key = (tuple(ids[:shared]), tuple(pidx[:shared]))
        kept = self._template_past
        if kept is not None and kept[0] is context and kept[1] == key and _same(kept[2], prompts):
            return kept[3]
        with torch.inference_mode(False), torch.no_grad(), self.autocast():
            t = torch.tensor([ids[shift:shared]], device=self.device)
            p = torch.tensor([pidx[shift:shared]], device=self.device)
            cache = None if past is None else DynamicCache(ddp_cache_data=past)
            out = self._body(inputs_embeds=self.embed(t, p, prompts), attention_mask=t.new_ones(1, shared),
                             position_ids=torch.arange(shift, shared, device=self.device).unsqueeze(0),
                             use_cache=True, **{self._cache_arg: cache})
        layers = [(k, v) for k, v, *_ in getattr(out, self._cache_arg)]
        run = _Shared(layers, out.last_hidden_state[0].float().sum(0), shared - shift)
        # Kept only while the weights cannot change between calls (not under --tune-backbone).
        kept_prompts = None if prompts is None else prompts.detach().clone()
        self._template_past = (context, key, kept_prompts, run) if not self._trainable() else None
        return run

    def _needs_grad(self, prompts: torch.Tensor | None) -> bool:
        if not torch.is_grad_enabled():
            return False
        return (prompts is not None and prompts.requires_grad) or self._trainable()

    def _trainable(self) -> bool:
        return any(p.requires_grad for p in self.model.parameters())

    def _context_cache(self, context: Context, prompts: torch.Tensor | None
                       ) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """The KV cache [1, heads, C, d] per layer of the special tokens and the shared context but its last token
        (which each row runs itself, so that every row has a position to read the slot from). Computed once per
        backbone and kept in `context`, without autograd; recomputed on every call while the backbone itself trains
        (--tune-backbone), since its weights change between calls.

        Demonstrations that carry the template's [P] are run with the current prompts, so the cache is kept per
        prompts and recomputed once a training step. Their [P] count as constants there: the gradient reaches the
        prompts through each row's own [P] only, as without demonstrations, which keeps the rows' text before their
        first [P] free of autograd (`_prefix`) and costs one pass of the context a step."""
        ids = (self.prefix_special + context.ids)[:-1]
        index = ([-1] * len(self.prefix_special) + context.prompt)[:-1]
        if not ids:
            return None
        vectors = prompts.detach() if context.has_prompts and prompts is not None else None
        kept = context.cache.get(self)
        if kept is not None and _same(kept[0], vectors):
            return kept[1]
        # Not inference tensors even when first asked for under inference_mode: training reuses them.
        with torch.inference_mode(False), torch.no_grad(), self.autocast():
            t = torch.tensor([ids], device=self.device)
            p = torch.tensor([index], device=self.device)
            out = self._body(inputs_embeds=self.embed(t, p, vectors), attention_mask=torch.ones_like(t),
                             position_ids=torch.arange(len(ids), device=self.device).unsqueeze(0),
                             use_cache=True)
        cached = [(k, v) for k, v, *_ in getattr(out, self._cache_arg)]
        if not self._trainable():
            context.cache[self] = (None if vectors is None else vectors.clone(), cached)
        return cached

    def _prefix(self, seqs: list[_Sequence], prompts: torch.Tensor | None, keep_cache: bool = True,
                shared: _Shared | None = None, mean: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor | None, Any, torch.Tensor, torch.Tensor]:
        """Run everything before the slot; return the last hidden state [B, H], the mean of the row's last hidden
        states [B, H] (those it ran itself and the shared template run's, not the shared context's; None unless
        `mean`), the KV cache (None unless `keep_cache`), its attention mask and each row's prefix length.

        The prefix runs in two parts. Tokens before the first [P] cannot see the prompts (attention is causal), so
        they run without autograd: training then back-propagates only through the short tail, ~2.5× cheaper for
        templates of the form "<text> … [P][P] … [MASK]". Both parts are left-padded so every row's prefix ends in
        the last column; pad holes in the middle are masked out and positions are explicit. The first positions
        every row shares can come as a cache (`_shared_past`), expanded to the batch, positions shifted past it.
        """
        past = None if shared is None else shared.layers
        shift = 0 if past is None else int(past[0][0].shape[2])
        two_parts = self._needs_grad(prompts)  # without autograd one pass does it, with one pass's overhead
        static, dynamic, dynamic_p = [], [], []
        for all_ids, all_prompt in seqs:
            ids, prompt = all_ids[shift:], all_prompt[shift:]  # what `past` holds already is not run again
            split = min(next((i for i, p in enumerate(prompt) if p >= 0), len(ids)), len(ids) - 1) if two_parts else 0
            static.append(ids[:split])
            dynamic.append(ids[split:])
            dynamic_p.append(prompt[split:])
        sids, sattn = self.to_tensor(static, self.pad_id, left=True)
        dids, dattn = self.to_tensor(dynamic, self.pad_id, left=True)
        dpidx, _ = self.to_tensor(dynamic_p, -1, left=True)
        static_len = shift + sattn.sum(-1, keepdim=True)
        cache, n = None, len(seqs)
        if past is not None:
            cache = DynamicCache(ddp_cache_data=[(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1)) for k, v in past])
        positions = shift + (sattn.cumsum(-1) - 1).clamp(min=0)
        own = sattn  # the static positions each row runs itself
        sattn = torch.cat([sattn.new_ones(n, shift), sattn], dim=1)
        total: Any = 0.0 if shared is None else shared.total
        if sids.shape[1]:
            with torch.no_grad():
                # no [P] here by construction: plain token embeddings
                out = self._body(inputs_embeds=self.input_embeddings(sids), attention_mask=sattn,
                                 position_ids=positions, use_cache=True, **{self._cache_arg: cache})
            cache = getattr(out, self._cache_arg)
            if mean:
                total = total + (out.last_hidden_state.float() * own.unsqueeze(-1)).sum(1)
        attn = torch.cat([sattn, dattn], dim=1)
        out = self._body(inputs_embeds=self.embed(dids, dpidx, prompts), attention_mask=attn,
                         position_ids=static_len + (dattn.cumsum(-1) - 1).clamp(min=0), use_cache=keep_cache,
                         **{self._cache_arg: cache})
        cache = getattr(out, self._cache_arg) if keep_cache else None
        hidden = out.last_hidden_state
        average = None
        if mean:
            total = total + (hidden.float() * dattn.unsqueeze(-1)).sum(1)
            count = own.sum(-1, keepdim=True) + dattn.sum(-1, keepdim=True) + (0 if shared is None else shared.count)
            average = total / count.clamp(min=1)
        return hidden[:, -1], average, cache, attn, static_len + dattn.sum(-1, True)

    def _continuations(self, rows: list[Encoded], prompts: torch.Tensor | None, word_ids: list[list[int]],
                       cache: Any, attn: torch.Tensor, prefix_len: torch.Tensor) -> torch.Tensor:
        """[B, W]: log P(rest of the word, then `after` | before, first token), every (row, word) pair a sequence
        on top of the prefix's cache; 0 for pairs with nothing past the first token (a one-token word ending the
        row), which run no pass: with one two-token word among ten, nine in ten pairs, and their cache copies, go.

        Pairs run in chunks of about `chunk_tokens` tokens, and the LM head only at the scored positions, a few at a
        time (`_target_logp`): nothing of size pairs × length × vocabulary ever exists. While training, each chunk's
        body is checkpointed, so backward keeps one chunk's activations at a time instead of the whole batch's,
        and the head keeps only the hidden states it read.
        """
        n_words = len(word_ids)
        cont, cont_p, scored, cell = [], [], [], []
        for r, row in enumerate(rows):
            for j, w in enumerate(word_ids):
                if len(w) == 1 and not row.after.ids:
                    continue  # nothing after the first token to score: the prefix's logits said it all
                cont.append(w + row.after.ids)
                cont_p.append([-1] * len(w) + row.after.prompt)
                scored.append([1] * len(w) + [0 if p >= 0 else 1 for p in row.after.prompt])
                cell.append(r * n_words + j)
        cids, cattn = self.to_tensor(cont, self.pad_id)
        cpidx, _ = self.to_tensor(cont_p, -1)
        cscored, _ = self.to_tensor(scored, 0)
        # Position j of a continuation predicts its token j + 1; its first token was scored from the prefix.
        weight = (cscored * cattn)[:, 1:].bool()
        layers = [(k, v) for k, v, *_ in cache]
        cells = torch.tensor(cell, device=self.device)
        pair_row = torch.div(cells, n_words, rounding_mode="floor")
        grad = torch.is_grad_enabled() and prompts is not None and prompts.requires_grad

        def chunk(idx: torch.Tensor) -> torch.Tensor:
            b = pair_row[idx]
            past = DynamicCache(ddp_cache_data=[(k[b], v[b]) for k, v in layers])
            with self.autocast():
                out = self._body(inputs_embeds=self.embed(cids[idx], cpidx[idx], prompts),
                                 attention_mask=torch.cat([attn[b], cattn[idx]], dim=1),
                                 position_ids=prefix_len[b] + torch.arange(cids.shape[1], device=self.device),
                                 use_cache=False, **{self._cache_arg: past})
            return out.last_hidden_state[:, :-1][weight[idx]]  # [scored positions, H]

        per_chunk = max(1, (self.train_chunk_tokens if grad else self.chunk_tokens) // max(1, cids.shape[1]))
        per_chunk = min(per_chunk, max(1, self.cache_bytes // _row_bytes(layers)))  # each pair copies the cache
        parts = []
        for start in range(0, cids.shape[0], per_chunk):
            idx = torch.arange(start, min(start + per_chunk, cids.shape[0]), device=self.device)
            hidden = checkpoint(chunk, idx, use_reentrant=False) if grad else chunk(idx)
            # The head runs outside the body's checkpoint: recomputing the body in backward then stops at the
            # hidden states instead of re-running the vocabulary projection as well.
            w = weight[idx]
            logp = self._target_logp(hidden, cids[idx][:, 1:][w])
            pair = torch.arange(len(idx), device=self.device).unsqueeze(1).expand_as(w)[w]
            parts.append(torch.zeros(len(idx), device=self.device, dtype=logp.dtype).index_add(0, pair, logp))
        logp = torch.cat(parts)
        return logp.new_zeros(len(rows) * n_words).index_add(0, cells, logp).view(len(rows), n_words)

    def _target_logp(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """log_softmax(head(hidden))[target] per position, `head_chunk` positions at a time."""
        return _TargetLogProb.apply(hidden, targets, self._head_logits, self.head_chunk)

    def _head_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return self._head(hidden).float()


class _TargetLogProb(torch.autograd.Function):
    """log_softmax(head(h))[t] without ever holding [positions × vocabulary] logits for backward.

    Forward keeps only `hidden`; backward recomputes each chunk's logits once and back-propagates
    onehot(t) − softmax through the head to `hidden` (the frozen head itself gets no gradient). That is one
    vocabulary projection fewer than checkpointing the chunks, and the head is a quarter of Qwen2-0.5B's FLOPs.
    """

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, targets: torch.Tensor, head: Any, chunk: int) -> torch.Tensor:
        ctx.save_for_backward(hidden, targets)
        ctx.head, ctx.chunk = head, chunk
        out = []
        with torch.no_grad():
            for s in range(0, hidden.shape[0], chunk):
                logits = head(hidden[s : s + chunk])
                t = targets[s : s + chunk].unsqueeze(-1)
                out.append(logits.gather(-1, t).squeeze(-1) - torch.logsumexp(logits, dim=-1))
        return torch.cat(out) if out else hidden.new_zeros(0, dtype=torch.float32)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        hidden, targets = ctx.saved_tensors
        grads = []
        for s in range(0, hidden.shape[0], ctx.chunk):
            with torch.enable_grad():
                h = hidden[s : s + ctx.chunk].detach().requires_grad_(True)
                logits = ctx.head(h)
                g = -torch.softmax(logits.detach(), dim=-1)
                rows = torch.arange(len(h), device=h.device)
                g[rows, targets[s : s + ctx.chunk]] += 1
                (gh,) = torch.autograd.grad(logits, h, g * grad[s : s + ctx.chunk].unsqueeze(-1))
            grads.append(gh)
        return (torch.cat(grads) if grads else torch.zeros_like(hidden)), None, None, None


# A row's pre-slot token ids and, per position, its prompt index (-1: a plain token).
_Sequence = tuple[list[int], list[int]]


@dataclass
class _Shared:
    """The first positions every row of a batch shares, run once: their KV cache per layer ([1, heads, S, d]), and
    of those that belong to the rows' mean state (the template's leading run, not the shared context) the sum of
    their last hidden states [H] and their count."""

    layers: list[tuple[torch.Tensor, torch.Tensor]]
    total: torch.Tensor | float = 0.0
    count: int = 0


def _same(kept: torch.Tensor | None, prompts: torch.Tensor | None) -> bool:
    if kept is None or prompts is None:
        return kept is None and prompts is None
    return kept.shape == prompts.shape and kept.device == prompts.device and bool(torch.equal(kept, prompts))


def _shared_context(rows: list[Encoded]) -> Context | None:
    context = rows[0].context if rows else None
    if any(row.context is not context for row in rows):
        raise ValueError("rows with different contexts in one batch: encode them with one classifier")
    return context


def _row_bytes(layers: list[tuple[torch.Tensor, torch.Tensor]]) -> int:
    """Bytes of one batch row of a KV cache."""
    return max(1, sum(k[0].numel() * k.element_size() + v[0].numel() * v.element_size() for k, v in layers))


def _check_split(backbone: CausalLM) -> None:
    """ptcli runs the body and the LM head separately (to apply the head only where read); refuse a model whose
    logits are not exactly head(body(x)), e.g. one that scales or soft-caps them after the head."""
    model, ids = backbone.model, torch.tensor([[backbone.start_id, backbone.start_id]], device=backbone.device)
    with torch.inference_mode():
        whole = model(input_ids=ids).logits[0, -1].float()
        split = backbone._head(backbone._body(input_ids=ids).last_hidden_state[0, -1]).float()
    if not torch.allclose(whole, split, rtol=1e-3, atol=1e-3 * float(whole.abs().max().clamp(min=1))):
        raise PtcliError(f"--model {backbone.info.name}: its {type(model).__name__} post-processes the LM head's "
                         "logits, which ptcli's scorer does not support; use another causal LM")
