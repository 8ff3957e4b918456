"""A tiny random-initialised causal LM with a tokenizer trained on the fly.

Used by the ``smoke`` profile and the tests: real transformers/peft code paths (Llama
architecture, byte-level BPE tokenizer with BOS/EOS/PAD) at a size that trains in seconds on a
CPU. Nothing is downloaded.
"""

from __future__ import annotations

from typing import Iterable

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from usersim.data_prep.prompt_format import (ASSISTANT_MARKER, CONVERSATION_HEADER, END_OF_CONVERSATION, HEADER,
                                             USER_MARKER)

SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>", "<unk>"]


def train_tiny_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on ``texts`` (plus the prompt-format markers), with BOS/EOS/PAD."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    markers = [HEADER, CONVERSATION_HEADER, USER_MARKER, ASSISTANT_MARKER, END_OF_CONVERSATION] * 20

    def corpus():
        yield from markers
        yield from texts

    tok.train_from_iterator(corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>")


def build_tiny_model(tokenizer: PreTrainedTokenizerFast, hidden_size: int = 64, num_layers: int = 2,
                     num_heads: int = 4, max_position_embeddings: int = 2048, seed: int = 0,
                     initializer_range: float = 0.02) -> LlamaForCausalLM:
    """A 2-layer Llama with random weights sized to the tokenizer.

    ``initializer_range`` is the std of the random weights. With the default 0.02 the tied
    embedding/LM head is so small that the logits stay near uniform whatever LoRA does (the head
    and final norm are frozen), so a LoRA smoke run barely learns; train/ uses a larger value.
    """
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
        initializer_range=initializer_range,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model
