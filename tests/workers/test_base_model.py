"""Base model resolution: a named local folder (fast) and the real GGUF conversion."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import cast

import pytest

from tessera.schemas.settings import Settings
from tessera.workers.base_model import (
    DEFAULT_MODEL_ID,
    DIGEST_FILE,
    BaseModelError,
    gguf_source,
    load_base_model,
    resolve_base_model,
)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_named_folder_digest_is_recorded_and_refreshed(tiny_model_dir: Path,
                                                       tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, base_model=tiny_model_dir)
    info = resolve_base_model(settings)
    weights = tiny_model_dir / "model.safetensors"
    assert info.path == tiny_model_dir.resolve()
    assert info.digest == _sha(weights)
    assert info.n_bytes == weights.stat().st_size
    (record,) = (tmp_path / "models" / "digests").iterdir()
    # The record is trusted while the files' size and mtime match ...
    saved = json.loads(record.read_text())
    record.write_text(json.dumps({**saved, "digest": "recorded"}))
    assert resolve_base_model(settings).digest == "recorded"
    # ... and recomputed once they change.
    os.utime(weights, ns=(saved["files"][0][2] + 1, saved["files"][0][2] + 1))
    assert resolve_base_model(settings).digest == _sha(weights)


def test_a_folder_that_is_not_a_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BaseModelError, match=r"no config\.json"):
        resolve_base_model(Settings(state_dir=tmp_path, base_model=tmp_path))


def test_load_gives_a_frozen_eval_model_with_a_pad_token(tiny_model_dir: Path,
                                                        tmp_path: Path) -> None:
    info = resolve_base_model(Settings(state_dir=tmp_path, base_model=tiny_model_dir))
    model, tokenizer = load_base_model(info)
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert tokenizer.pad_token_id is not None


@pytest.mark.integration
@pytest.mark.slow
def test_real_gguf_converts_once_and_answers(tmp_path: Path) -> None:
    """The bundled SmolLM2 GGUF -> safetensors folder; about 270 MB of work, once."""
    import torch
    from transformers import BatchEncoding

    assert gguf_source().name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    settings = Settings(state_dir=tmp_path)
    info = resolve_base_model(settings)
    assert info.model_id == DEFAULT_MODEL_ID
    assert info.path == (tmp_path / "models" / DEFAULT_MODEL_ID).resolve()
    weights = info.path / "model.safetensors"
    assert info.digest == _sha(weights)
    assert info.n_bytes == weights.stat().st_size > 500_000_000  # 135M float32 parameters
    assert json.loads((info.path / DIGEST_FILE).read_text())["digest"] == info.digest
    assert "quantization_config" not in json.loads((info.path / "config.json").read_text())
    assert not any(p.name.startswith(".") and "tmp" in p.name for p in info.path.parent.iterdir())
    mtime = weights.stat().st_mtime_ns
    assert resolve_base_model(settings) == info  # second call: no conversion, same digest
    assert weights.stat().st_mtime_ns == mtime

    model, tokenizer = load_base_model(info)
    assert tokenizer.eos_token == "<|im_end|>"
    # tokenize=True, return_dict=True, return_tensors="pt": a BatchEncoding of tensors
    prompt = cast("BatchEncoding[torch.Tensor]", tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"))
    with torch.inference_mode():
        # PreTrainedModel does not declare generate(), so nn.Module.__getattr__ types it as
        # Tensor | Module; the loaded causal LM (a GenerationMixin) has it.
        out = model.generate(**prompt, max_new_tokens=12, do_sample=False,  # type: ignore[operator]
                             eos_token_id=tokenizer.eos_token_id)
    answer = tokenizer.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer


@pytest.mark.integration
@pytest.mark.slow
def test_real_model_training_is_deterministic(tmp_path: Path) -> None:
    """Two one-step trainings of the real base with one seed give one adapter digest."""
    from tessera.workers.adapter_store import sha256_file
    from tessera.workers.dataset import Example
    from tessera.workers.lora_config import LoraTrainConfig
    from tessera.workers.trainer import train_adapter

    info = resolve_base_model(Settings())  # the shared default cache: converted once
    model, tokenizer = load_base_model(info)
    examples = [Example((("user", "Where shall we eat?"),), "Pizza at Luigi's, obviously.", 1,
                        "exchange"),
                Example((), "Climbing again tomorrow, can't wait.", 2, "text")]
    config = LoraTrainConfig(max_steps=1, max_length=48, lr=1e-3)
    digests = {
        sha256_file(train_adapter(model, tokenizer, examples, config=config,
                                  base_digest=info.digest, out_dir=tmp_path / str(run),
                                  seed=7).blob_path)
        for run in range(2)
    }
    assert len(digests) == 1
