"""Tiny Hugging Face models and a local tokenizer, built without any hub download.

Used by the embedded default (``thr train`` with no arguments), the tests and the examples.
The tokenizer is byte-level (the 256 bytes, GPT-2's byte-to-unicode mapping, no merges) plus
``<|pad|>`` and ``<|endoftext|>``, so it encodes any text losslessly; token id ``b`` is byte ``b``.
Models are real ``Qwen2ForCausalLM`` / ``LlamaForCausalLM`` instances built from a config with a
seeded random init; they save and load with ``save_pretrained`` / ``from_pretrained`` like any
hub model.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

PAD_TOKEN = "<|pad|>"
EOS_TOKEN = "<|endoftext|>"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable unicode characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = {}
    extra = 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def build_tokenizer(model_max_length: int = 2048) -> Any:
    """Byte-level ``PreTrainedTokenizerFast`` with vocabulary size 258 (256 bytes + pad + eos)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: b for b, ch in _bytes_to_unicode().items()}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens([PAD_TOKEN, EOS_TOKEN])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD_TOKEN,
        eos_token=EOS_TOKEN,
        model_max_length=model_max_length,
    )
    tok.padding_side = "left"  # generation pads on the left
    return tok


def build_model(
    tokenizer: Any,
    *,
    arch: Literal["qwen2", "llama"] = "qwen2",
    hidden_size: int = 128,
    num_layers: int = 4,
    num_heads: int = 4,
    num_kv_heads: int | None = None,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 512,
    tie_word_embeddings: bool = False,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Any:
    """A randomly initialised causal LM of the given architecture sized for ``tokenizer``."""
    if arch not in ("qwen2", "llama"):
        raise ValueError(f"arch must be 'qwen2' or 'llama', got {arch!r}")
    if hidden_size % num_heads:
        raise ValueError(f"hidden_size={hidden_size} must be divisible by num_heads={num_heads}")
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads or num_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )
    if arch == "qwen2":
        from transformers import Qwen2Config, Qwen2ForCausalLM

        config, cls = Qwen2Config(**common), Qwen2ForCausalLM
    else:
        from transformers import LlamaConfig, LlamaForCausalLM

        config, cls = LlamaConfig(**common), LlamaForCausalLM
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model.to(dtype)
