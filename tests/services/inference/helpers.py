"""Test helpers: a tiny Llama with a byte-level tokenizer, and peft adapters as blobs."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from tessera.services.inference.tokens import HFTokenizer, as_hf_tokenizer

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def byte_tokenizer() -> HFTokenizer:
    """256 byte tokens + <eos>: every text round-trips exactly. Seen through the engine's
    `HFTokenizer` protocol, as the served tokenizer is."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    vocab["<eos>"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    # transformers leaves the tokenizer's __init__ unannotated
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>"
    )
    return as_hf_tokenizer(fast)


def tiny_model(seed: int = 0, vocab_size: int = 257) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
        tie_word_embeddings=False,
    )
    # transformers leaves the model's __init__ and eval() unannotated; eval() returns self
    model = LlamaForCausalLM(cfg)  # type: ignore[no-untyped-call]
    model.eval()  # type: ignore[no-untyped-call]
    return model


def make_peft(
    base: nn.Module, seed: int, *, r: int = 4, alpha: int = 8, targets: list[str] | None = None
) -> nn.Module:
    """A peft model over a copy of `base` with random (non-zero) A and B."""
    torch.manual_seed(seed)
    cfg = LoraConfig(
        r=r,
        lora_alpha=alpha,
        target_modules=targets or TARGETS,
        init_lora_weights=False,
        lora_dropout=0.0,
    )
    peft_model = get_peft_model(copy.deepcopy(base), cfg)
    with torch.no_grad():  # make the deltas large enough to change the argmax
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.mul_(3.0)
    return peft_model.eval()


def save_blob(
    peft_model: nn.Module,
    folder: Path,
    *,
    r: int,
    alpha: int,
    targets: list[str] | None = None,
    adapter_name: str = "default",
) -> tuple[Path, str]:
    """Write the peft state dict as a Tessera adapter blob; returns (path, sha256)."""
    raw = get_peft_model_state_dict(peft_model, adapter_name=adapter_name)
    state = {k: v.contiguous() for k, v in raw.items()}
    meta = {
        "r": r,
        "lora_alpha": alpha,
        "target_modules": targets or TARGETS,
        "base_digest": "test",
    }
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "tmp.safetensors"
    save_file(state, str(tmp), metadata={"tessera": json.dumps(meta)})
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    path = folder / f"{digest}.safetensors"
    tmp.rename(path)
    return path, digest


def load_blob_into(peft_model: nn.Module, path: Path) -> None:
    from safetensors.torch import load_file

    set_peft_model_state_dict(peft_model, load_file(str(path)))


class DirStore:
    """A minimal content-addressed store (blobs named `<sha256>.safetensors`) that
    verifies the digest on every read, as the real store does."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.reads = 0

    def path(self, digest: str) -> Path:
        path = self.root / f"{digest}.safetensors"
        if not path.exists():
            raise FileNotFoundError(f"no adapter blob {digest}")
        if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            raise ValueError(f"adapter blob {digest[:12]} is corrupt: digest mismatch")
        self.reads += 1
        return path
