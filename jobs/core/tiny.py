"""Tiny causal LMs built on the spot, for offline sweeps and tests.

No weights can be downloaded here or in CI, so the smoke sweep and the tests use a GPT-NeoX or
Llama with hidden size 64 and 2 layers, built from a config with a seeded initialisation, and a
byte-level BPE trained in well under a second on the task's own text. The build is deterministic:
the train job and the infer job each build the same base model from the same data folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from switchpoint.core.contract import JobError

EOS = "<|endoftext|>"
PAD = "<|pad|>"


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048):
    """A byte-level BPE (any Unicode text is encodable) wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS, PAD],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD, bos_token=EOS)


def tiny_config(family: str, vocab_size: int, context_length: int, hidden: int = 64, layers: int = 2, heads: int = 4):
    from transformers import GPTNeoXConfig, LlamaConfig

    common = dict(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                  max_position_embeddings=context_length, tie_word_embeddings=False, bos_token_id=0, eos_token_id=0,
                  pad_token_id=1)
    if family == "gpt_neox":
        return GPTNeoXConfig(intermediate_size=hidden * 4, rotary_pct=1.0, **common)
    if family == "llama":
        return LlamaConfig(intermediate_size=hidden * 3, num_key_value_heads=heads, **common)
    raise JobError(f"no tiny config for family {family!r}; use gpt_neox or llama")


def build_tiny(family: str, texts: Iterable[str], *, seed: int = 0, context_length: int = 4096, vocab_size: int = 2048):
    """(model, tokenizer): a seeded random model of ``family`` with a BPE trained on ``texts``."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = train_tokenizer(texts, vocab_size)
    config = tiny_config(family, len(tokenizer), context_length)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    finally:
        torch.random.set_rng_state(generator_state)  # leave the caller's random stream untouched
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, tokenizer


def save_tiny(model, tokenizer, out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
