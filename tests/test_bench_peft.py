"""The bench's PEFT P-tuning baseline scores label words exactly as teacher forcing one word at a time would."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

pytest.importorskip("peft")

import peft_ptuning

from ptcli.loading import load_backbone
from ptcli.template import Template
from ptcli.verbalizer import Verbalizer


def _naive(pt: peft_ptuning.PeftPTuning, prefixes: list[list[int]]) -> torch.Tensor:
    """Each (row, word) as its own sequence: the virtual tokens, the prefix, the word; summed log-probabilities."""
    model = pt.model.get_base_model()
    prompts = pt.model.get_prompt(batch_size=1)  # [1, m, H]
    embed = model.get_input_embeddings()
    out = torch.zeros(len(prefixes), len(pt.verbalizer.labels))
    for r, prefix in enumerate(prefixes):
        per_word = []
        for w in pt.word_ids:
            ids = torch.tensor([prefix + w])
            logits = model(inputs_embeds=torch.cat([prompts, embed(ids)], dim=1)).logits[0].float()
            logp = logits.log_softmax(-1)
            start = pt.m + len(prefix) - 1
            per_word.append(sum(float(logp[start + t, tok]) for t, tok in enumerate(w)))
        for i in range(len(pt.verbalizer.labels)):
            mine = [s for s, o in zip(per_word, pt.owner, strict=True) if o == i]
            out[r, i] = torch.logsumexp(torch.tensor(mine), 0) - math.log(len(mine))
    return out


def test_peft_scores_equal_one_sequence_per_word(models: dict[str, Path]) -> None:
    bb = load_backbone(str(models["gpt2"]), device="cpu", precision="fp32")
    with torch.no_grad():  # a tiny random model predicts nearly uniformly: sharpen it so that positions differ
        for p in bb.model.parameters():
            p.mul_(6.0)
    tok = bb.tokenizer
    candidates = ["good", "bad", "terrible", "wonderful", "fine", "awful", "boring", "excellent", "dull", "great"]
    length = {w: len(tok(" " + w, add_special_tokens=False)["input_ids"]) for w in candidates}
    single = [w for w in candidates if length[w] == 1]
    multi = [w for w in candidates if length[w] > 1]
    # The case under test: one single-token word and two multi-token words, so the row's own sequence carries one
    # of them and the other runs as a sequence of its own.
    assert single and len(multi) >= 3, length
    # One word per label for the multi-token ones: a label's log-mean-exp would hide a misread word behind a likelier
    # one; the last label averages two words.
    verbalizer = Verbalizer(["a", "b", "c"], [[multi[0]], [multi[1]], [single[0], multi[2]]])
    pt = peft_ptuning.PeftPTuning(bb, Template.parse("<text> It was [MASK]"), verbalizer, n_virtual=3, seed=0)
    try:
        prefixes = pt.encode(["a film about a dog", "the acting was fine but the plot", "no"])
        pt.model.eval()
        with torch.no_grad():
            got = pt.logits(prefixes)
            want = _naive(pt, prefixes)
        # Precondition: the words' scores differ by far more than the tolerance, so a misread position shows.
        assert float((want[:, :1] - want[:, 1:]).abs().min()) > 0.1, want
        assert torch.allclose(got, want, atol=1e-4), (got, want)
    finally:
        pt.close()
