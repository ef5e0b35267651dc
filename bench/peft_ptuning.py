"""PEFT's P-tuning as a user would set it up for few-shot classification with a causal LM, scored like ptcli.

- `peft.PromptEncoderConfig(encoder_reparameterization_type="LSTM")` with `num_virtual_tokens` = the number of [P]
  in ptcli's template and `encoder_hidden_size` = H/2, so the prompt encoder (2-layer BiLSTM, H/2 per direction,
  then a 2-layer MLP) has the same shape as ptcli's; PEFT prepends the virtual tokens to the whole input.
- The input is ptcli's template *without* [P] (the manual prompt), tokenized by the same `TemplateEncoder`, so both
  methods see the same token ids; PEFT puts its prompts in front of them, ptcli where the [P] stand.
- A label word is scored by teacher forcing at the slot: the sum of its tokens' log-probabilities after the prefix.
  Each row runs once with its first multi-token word appended (a causal LM's logits at the prefix do not see what
  follows, so every word's first token is read there too); each further multi-token word gets its own row.
- The backbone runs in ptcli's precision (its autocast, bf16 where `--precision auto` chose it), so the two methods
  compare at the same numerics and cost.
  A label with several words scores log-mean-exp over them, as ptcli does. Logits are computed only at the scored
  positions (`logits_to_keep` with a boolean mask), never over the whole sequence.
- Training copies ptcli's loop: the same stratified dev split and seed, AdamW (lr, weight decay), linear warmup and
  decay, gradient clipping, seeded data order, best epoch on dev accuracy (ties: lower dev loss), early stopping.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ptcli.backbone import Backbone
from ptcli.loop import LoopConfig, fit
from ptcli.template import Template, TemplateEncoder
from ptcli.train import TrainArgs, seed_everything, stratified_split
from ptcli.verbalizer import Verbalizer


@dataclass
class Hyper:
    """ptcli's training defaults (read from `TrainArgs`, so they follow ptcli if it changes them)."""

    epochs: int
    lr: float = TrainArgs.lr
    batch_size: int = TrainArgs.batch_size
    weight_decay: float = TrainArgs.weight_decay
    warmup: float = TrainArgs.warmup
    max_grad_norm: float = TrainArgs.max_grad_norm
    patience: int = TrainArgs.patience
    dev_fraction: float = TrainArgs.dev_fraction
    max_length: int = TrainArgs.max_length
    select: str = TrainArgs.select  # the best-epoch rule: dev-loss | dev-acc (kfold is train()'s, not the loop's)


class PeftPTuning:
    """A PEFT P-tuning model around a frozen backbone, with verbalizer scoring at the slot."""

    def __init__(self, backbone: Backbone, manual: Template, verbalizer: Verbalizer, n_virtual: int, seed: int,
                 max_length: int = TrainArgs.max_length) -> None:
        from peft import PromptEncoderConfig, TaskType, get_peft_model

        self.backbone = backbone
        self.verbalizer = verbalizer
        self.m = n_virtual
        words, self.owner = verbalizer.flat()
        tok = backbone.tokenizer
        self.word_ids = [list(tok((" " if manual.space_before_slot else "") + w, add_special_tokens=False)
                              ["input_ids"]) for w in words]
        # The virtual tokens count against the length budget, as ptcli's [P] do.
        self.encoder = TemplateEncoder(manual, tok, max_length - n_virtual, max(map(len, self.word_ids)), 0)
        seed_everything(seed)
        config = PromptEncoderConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=n_virtual,
                                     encoder_reparameterization_type="LSTM",
                                     encoder_hidden_size=backbone.hidden_size // 2)
        self.model = get_peft_model(backbone.model, config)
        self.params = [p for p in self.model.parameters() if p.requires_grad]

    def n_trainable(self) -> int:
        return sum(p.numel() for p in self.params)

    def encode(self, texts: list[str]) -> list[list[int]]:
        rows = self.encoder.encode(texts)
        if any(r.after.ids for r in rows):
            raise ValueError("the PEFT baseline scores templates whose slot is at the end only")
        start = self.backbone.start_id  # type: ignore[attr-defined]
        return [r.before.ids or [start] for r in rows]

    def logits(self, prefixes: list[list[int]]) -> torch.Tensor:
        """[B, n_labels] label log-scores; differentiable in the prompt encoder."""
        seqs: list[list[int]] = []
        reads: list[tuple[int, int, int, int, int]] = []  # (sequence, position, target token, row, word)
        multi = [j for j, w in enumerate(self.word_ids) if len(w) > 1]
        for r, prefix in enumerate(prefixes):
            base = len(seqs)
            seqs.append(prefix + (self.word_ids[multi[0]][:-1] if multi else []))
            for j, w in enumerate(self.word_ids):
                seq = base
                if len(w) > 1 and j != multi[0]:
                    seq = len(seqs)
                    seqs.append(prefix + w[:-1])
                for t, token in enumerate(w):
                    reads.append((seq, len(prefix) - 1 + t, token, r, j))
        ids, attn = self.backbone.to_tensor(seqs, self.backbone.pad_id)  # right-padded: PEFT ignores position_ids
        dev = self.backbone.device
        keep = torch.zeros((len(seqs), self.m + ids.shape[1]), dtype=torch.bool, device=dev)
        for s, p, _, _, _ in reads:
            keep[s, self.m + p] = True
        with self.backbone.autocast():
            out = self.model(input_ids=ids, attention_mask=attn, logits_to_keep=keep)
        flat = out.logits.float()  # [n kept, V], row-major over (sequence, position)
        kept = keep.nonzero().tolist()
        where = {(s, p): i for i, (s, p) in enumerate(kept)}
        rows_idx = torch.tensor([where[(s, self.m + p)] for s, p, _, _, _ in reads], device=dev)
        targets = torch.tensor([tok for _, _, tok, _, _ in reads], device=dev)
        picked = flat[rows_idx]
        logp = picked.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(picked, dim=-1)
        word_scores = torch.zeros(len(prefixes) * len(self.word_ids), dtype=logp.dtype, device=dev)
        slot = torch.tensor([r * len(self.word_ids) + j for _, _, _, r, j in reads], device=dev)
        word_scores = word_scores.index_add(0, slot, logp).view(len(prefixes), len(self.word_ids))
        owner = torch.tensor(self.owner, device=dev)
        cols = []
        for i in range(len(self.verbalizer.labels)):
            ws = word_scores[:, owner == i]
            cols.append(torch.logsumexp(ws, dim=1) - math.log(ws.shape[1]))
        return torch.stack(cols, dim=1)

    def predict_proba(self, prefixes: list[list[int]], batch_size: int) -> np.ndarray:
        order = sorted(range(len(prefixes)), key=lambda i: -len(prefixes[i]))  # longest-first, as ptcli does
        out = np.zeros((len(prefixes), len(self.verbalizer.labels)))
        self.model.eval()
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                out[idx] = torch.softmax(self.logits([prefixes[i] for i in idx]).double(), -1).cpu().numpy()
        return out

    def step(self, prefixes: list[list[int]], y: torch.Tensor, optimizer: torch.optim.Optimizer,
             max_grad_norm: float) -> float:
        self.model.train()
        self.backbone.model.eval()  # the frozen backbone stays in eval mode (no dropout), as in ptcli
        loss = F.cross_entropy(self.logits(prefixes), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.item())

    def optimizer(self, hp: Hyper) -> torch.optim.Optimizer:
        return torch.optim.AdamW([{"params": self.params, "lr": hp.lr, "weight_decay": hp.weight_decay}])

    def state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.prompt_encoder.state_dict().items()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.model.prompt_encoder.load_state_dict(state)

    def close(self) -> None:
        """Detach PEFT from the shared backbone so the next seed (and other methods) get it untouched."""
        base = self.model.get_base_model()
        for attr in ("peft_config", "_hf_peft_config_loaded"):
            if attr in base.__dict__:
                delattr(base, attr)
        self.backbone.model = base


def _dev_report(pt: PeftPTuning, prefixes: list[list[int]], y: list[int], batch_size: int) -> tuple[float, float]:
    probs = pt.predict_proba(prefixes, batch_size)
    acc = float(np.mean(probs.argmax(1) == np.array(y)))
    loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0))))
    return acc, loss


def train_and_test(backbone: Backbone, manual: Template, verbalizer: Verbalizer, n_virtual: int,
                   train: pd.DataFrame, test: pd.DataFrame, seed: int, hp: Hyper,
                   test_batch_size: int = 32) -> dict[str, Any]:
    """Train PEFT P-tuning on the K-shot rows (ptcli's protocol) and score the test rows with the best epoch."""
    t_wall = time.perf_counter()
    pt = PeftPTuning(backbone, manual, verbalizer, n_virtual, seed, hp.max_length)
    try:
        labels = verbalizer.labels
        index = {lab: i for i, lab in enumerate(labels)}
        tr_idx, dev_idx = stratified_split(train["label"].tolist(), hp.dev_fraction, seed)
        tr, dev = train.iloc[tr_idx], train.iloc[dev_idx]
        x_tr, x_dev = pt.encode(tr["text"].tolist()), pt.encode(dev["text"].tolist())
        y_tr = torch.tensor([index[v] for v in tr["label"]], device=backbone.device)
        y_dev = [index[v] for v in dev["label"]]

        optimizer = pt.optimizer(hp)

        def evaluate() -> dict[str, float]:
            acc, loss = _dev_report(pt, x_dev, y_dev, hp.batch_size)
            return {"accuracy": acc, "loss": loss, "n": len(y_dev)}

        # The same epoch loop, schedule, best-epoch rule and early stop as `ptcli train` (ptcli.loop.fit).
        fitted = fit(len(x_tr), lambda idx, _epoch: pt.step([x_tr[i] for i in idx], y_tr[idx], optimizer,
                                                             hp.max_grad_norm),
                     evaluate, pt.state, optimizer,
                     LoopConfig(epochs=hp.epochs, batch_size=hp.batch_size, patience=hp.patience, warmup=hp.warmup,
                                seed=seed, select=hp.select))
        history, best_epoch = fitted.history, fitted.best_epoch
        best_state, best_acc = fitted.best, fitted.best_report["accuracy"]
        epoch_seconds = float(sum(h["seconds"] for h in history))
        wall = time.perf_counter() - t_wall
        pt.load_state(best_state)
        t0 = time.perf_counter()
        probs = pt.predict_proba(pt.encode(test["text"].tolist()), test_batch_size)
        predict_seconds = time.perf_counter() - t0
        pred = [labels[i] for i in probs.argmax(1)]
        return {"pred": pred, "labels": labels, "probs": probs, "train_seconds": epoch_seconds,
                "train_wall_seconds": wall, "predict_seconds": predict_seconds, "n_train": len(x_tr),
                "n_dev": len(x_dev),
                "best_epoch": best_epoch, "epochs_run": len(history), "dev_accuracy": best_acc,
                "lr": hp.lr, "batch_size": hp.batch_size, "patience": hp.patience, "n_prompts": n_virtual,
                "encoder_hidden_size": backbone.hidden_size // 2, "trainable_params": pt.n_trainable(),
                "history": history}
    finally:
        pt.close()
