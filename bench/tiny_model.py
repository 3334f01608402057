"""A tiny random Llama with a real (small) tokenizer and chat template, for fast tests.

It has the same architecture family and module names as SmolLM2 (q_proj, v_proj, ...), so
everything that works on it works on the real base model, only in milliseconds. The
tokenizer is a byte-level BPE trained offline on a fixed text, so the folder is the same
on every machine (pass `tokenizer_from` to reuse a real model's tokenizer instead).
"""

from __future__ import annotations

import json
from pathlib import Path

# ChatML, as SmolLM2-Instruct uses; the system line differs so nobody mistakes the two.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny test model.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VOCAB_SIZE = 512

# A fixed training text: common English words, punctuation and the chat roles.
_CORPUS = """\
The quick brown fox jumps over the lazy dog. Hello, how are you today? I am fine, thanks.
What is the capital of France? Paris is the capital of France. Let's meet at noon tomorrow.
system user assistant other. I think that we should go to the beach this weekend.
Can you help me write an email to my manager about the project deadline? Sure, here it is.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2024. Yes! No? Maybe... (really) "quoted" 'single'.
My favourite food is pizza, and I love reading books about history and science.
The weather is nice; it's sunny and warm. We walked the dog, cooked dinner, and watched a film.
"""


def _train_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS.splitlines() * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(folder)


def _copy_tokenizer(source: Path, folder: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(source)
    tok.save_pretrained(folder)


def build_tiny_model(
    folder: Path,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    tokenizer_from: Path | None = None,
) -> Path:
    """Write a random `LlamaForCausalLM` + tokenizer to `folder` (idempotent) and return it."""
    marker = folder / "tessera-tiny.json"
    spec = {"seed": seed, "hidden_size": hidden_size, "num_layers": num_layers,
            "num_heads": num_heads, "tokenizer_from": str(tokenizer_from or "")}
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        return folder
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    if tokenizer_from is not None:
        _copy_tokenizer(tokenizer_from, folder)
    else:
        _train_tokenizer(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=max(1, num_heads // 2),  # grouped-query, like SmolLM2
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)  # type: ignore[no-untyped-call]
    model.save_pretrained(folder)
    marker.write_text(json.dumps(spec))
    return folder
