"""Causal-LM backbones (GPT-2, Qwen, Llama…): the slot is scored left to right by teacher forcing.

For a row split at the slot into `before` and `after`, the score of label word w is

    log P(w | before) + log P(after | before, w)

The first term is the usual answer likelihood. The second term is zero when nothing follows the slot and, when text
does follow it (`[MASK]` in the middle of the template), it lets the rest of the row vote too, the way a masked LM
sees both sides. Every candidate sees the same `after`, so the scores stay comparable across labels; words of
different token lengths are summed, not averaged, so padding adds no bias.

One forward pass over the (left-padded) prefix builds the KV cache; all candidates of all rows then run together
as a second batch of B × W short continuations on top of that cache.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from ptcli.backbone import Backbone
from ptcli.template import Encoded, Template


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
        params = inspect.signature(self.model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    def slot_length(self, mask_count: int, word_ids: list[list[int]]) -> int:
        return max(len(w) for w in word_ids)

    def template_warnings(self, template: Template) -> list[str]:
        warnings = []
        kinds = [s.kind for s in template.segments]
        if kinds.index("slot") < kinds.index("text"):
            warnings.append(
                f"{template.path}: the label slot comes before <text>; a causal LM reads left to right, so it must "
                "guess the label before seeing the text (only the text's likelihood given the label helps). "
                "Put [MASK] after <text>, e.g. '<text> 这条评论是[MASK]的'"
            )
        if template.mask_count > 1:
            warnings.append(
                f"{template.path}: {template.mask_count} [MASK] in a row; for a causal LM the slot takes each label "
                "word whole, whatever its token count, so one [MASK] is enough"
            )
        return warnings

    def score(self, rows: list[Encoded], prompts: torch.Tensor | None, word_ids: list[list[int]]) -> torch.Tensor:
        n_rows, n_words = len(rows), len(word_ids)
        # The prefix runs in two parts. Tokens before the first [P] cannot see the prompts (attention is causal),
        # so they run without autograd: training then back-propagates only through the short tail, ~2.5× cheaper
        # for templates of the form "<text> … [P][P] … [MASK]". Both parts are left-padded so every row's prefix
        # ends in the last column; pad holes in the middle are masked out and positions are explicit.
        static, dynamic, dynamic_p = [], [], []
        for row in rows:
            head = self.prefix_special or ([] if row.before.ids else [self.start_id])
            ids, prompt = head + row.before.ids, [-1] * len(head) + row.before.prompt
            split = min(next((i for i, p in enumerate(prompt) if p >= 0), len(ids)), len(ids) - 1)
            static.append(ids[:split])
            dynamic.append(ids[split:])
            dynamic_p.append(prompt[split:])
        sids, sattn = self.to_tensor(static, self.pad_id, left=True)
        dids, dattn = self.to_tensor(dynamic, self.pad_id, left=True)
        dpidx, _ = self.to_tensor(dynamic_p, -1, left=True)
        static_len = sattn.sum(-1, keepdim=True)
        prefix_len = static_len + dattn.sum(-1, keepdim=True)

        # Continuations: every candidate word followed by the row's `after`, for every row: B*W rows, row-major.
        cont, cont_p, scored = [], [], []
        for row in rows:
            for w in word_ids:
                cont.append(w + row.after.ids)
                cont_p.append([-1] * len(w) + row.after.prompt)
                scored.append([1] * len(w) + [0 if p >= 0 else 1 for p in row.after.prompt])
        cids, cattn = self.to_tensor(cont, self.pad_id)
        cpidx, _ = self.to_tensor(cont_p, -1)
        cscored, _ = self.to_tensor(scored, 0)

        with self.autocast():
            cache = None
            if sids.shape[1]:
                with torch.no_grad():
                    # no [P] here by construction: plain token embeddings
                    out = self.model(inputs_embeds=self.input_embeddings(sids), attention_mask=sattn,
                                     position_ids=(sattn.cumsum(-1) - 1).clamp(min=0), use_cache=True,
                                     logits_to_keep=1)
                cache = getattr(out, self._cache_arg)
            attn = torch.cat([sattn, dattn], dim=1)
            out = self.model(inputs_embeds=self.embed(dids, dpidx, prompts), attention_mask=attn,
                             position_ids=static_len + (dattn.cumsum(-1) - 1).clamp(min=0), use_cache=True,
                             logits_to_keep=1, **{self._cache_arg: cache})
            cache = getattr(out, self._cache_arg)
            cache.batch_repeat_interleave(n_words)
            cont_out = self.model(
                inputs_embeds=self.embed(cids, cpidx, prompts),
                attention_mask=torch.cat([attn.repeat_interleave(n_words, 0), cattn], dim=1),
                position_ids=prefix_len.repeat_interleave(n_words, 0) + torch.arange(cids.shape[1], device=self.device),
                use_cache=False, **{self._cache_arg: cache})
        first = out.logits[:, -1:].repeat_interleave(n_words, 0)  # predicts each continuation's first token
        logits = torch.cat([first, cont_out.logits[:, :-1]], dim=1).float()
        target_logit = logits.gather(-1, cids.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        logp = target_logit - torch.logsumexp(logits, dim=-1)
        weight = (cscored * cattn).to(logp.dtype)
        return (logp * weight).sum(-1).view(n_rows, n_words)
