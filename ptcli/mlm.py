"""Masked-LM backbones (BERT, RoBERTa, ALBERT, ERNIE, MacBERT…): the slot is k [MASK] tokens, read in one pass."""

from __future__ import annotations

from typing import Any

import torch

from ptcli.backbone import Backbone
from ptcli.errors import PtcliError
from ptcli.template import Encoded


class MaskedLM(Backbone):
    kind = "mlm"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.tokenizer.mask_token_id is None:
            raise PtcliError(f"--model {self.info.name}: its tokenizer has no mask token; a masked LM needs one")
        self.mask_id = int(self.tokenizer.mask_token_id)
        self._head = _mlm_head(self.model)

    def slot_length(self, mask_count: int, word_ids: list[list[int]]) -> int:
        return mask_count

    def check_words(self, words: list[str], word_ids: list[list[int]], mask_count: int, where: str) -> None:
        super().check_words(words, word_ids, mask_count, where)
        for word, ids in zip(words, word_ids, strict=True):
            if len(ids) != mask_count:
                tokens = self.tokenizer.convert_ids_to_tokens(ids)
                raise PtcliError(
                    f"{where}: label word {word!r} is {len(ids)} token(s) {tokens} but the template's slot has "
                    f"{mask_count} [MASK]; use {len(ids)} [MASK] in the template or label words of {mask_count} "
                    "token(s)"
                )

    def score_and_state(self, rows: list[Encoded], prompts: torch.Tensor | None, word_ids: list[list[int]]
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        k = len(word_ids[0])
        seqs, pidx, slot_start = [], [], []
        for row in rows:
            # demonstrations, with their [P]
            shared, shared_p = (row.context.ids, row.context.prompt) if row.context is not None else ([], [])
            head = self.prefix_special + shared + row.before.ids
            seqs.append(head + [self.mask_id] * k + row.after.ids + self.suffix_special)
            pidx.append([-1] * len(self.prefix_special) + shared_p + row.before.prompt + [-1] * k
                        + row.after.prompt + [-1] * len(self.suffix_special))
            slot_start.append(len(head))
        ids, attn = self.to_tensor(seqs, self.pad_id)
        prompt_idx, _ = self.to_tensor(pidx, -1)
        positions = torch.tensor(slot_start, device=self.device).unsqueeze(1) + torch.arange(k, device=self.device)
        with self.autocast():
            embeds = self.embed(ids, prompt_idx, prompts)
            logits, states = self._slot_logits(embeds, attn, positions)  # [B, k, V], [B, 2, H]
        logp = torch.log_softmax(logits.float(), dim=-1)
        targets = torch.tensor(word_ids, device=self.device)  # [W, k]
        # logp[b, j, targets[w, j]] summed over j → [B, W]
        picked = logp[:, torch.arange(k, device=self.device).unsqueeze(0), targets]  # [B, W, k]
        return picked.sum(-1), states.float()

    def _slot_logits(self, embeds: torch.Tensor, attn: torch.Tensor, positions: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits at the mask positions, and head.STATES: the last hidden state at the first mask and the mean of
        the last hidden states over the row's positions."""
        rows = torch.arange(embeds.shape[0], device=self.device).unsqueeze(1)
        if self._head is not None:
            # Run the vocabulary projection only at the mask positions: it is ~20% of BERT-base's compute.
            base = getattr(self.model, self.model.base_model_prefix)
            hidden = base(inputs_embeds=embeds, attention_mask=attn).last_hidden_state
            logits = self._head(hidden[rows, positions])
        else:
            out = self.model(inputs_embeds=embeds, attention_mask=attn, output_hidden_states=True)
            logits, hidden = out.logits[rows, positions], out.hidden_states[-1]
        m = attn.unsqueeze(-1).float()
        mean = (hidden.float() * m).sum(1) / m.sum(1).clamp(min=1)
        return logits, torch.stack([hidden[rows[:, 0], positions[:, 0]].float(), mean], dim=1)


def _mlm_head(model: Any) -> Any:
    """The MLM head module when the model is exactly `base model + one head` (BERT, RoBERTa, ALBERT…), else None."""
    children = [m for name, m in model.named_children() if name != model.base_model_prefix]
    has_base = hasattr(model, model.base_model_prefix)
    return children[0] if has_base and len(children) == 1 else None
