"""Train one LoRA adapter revision on the frozen, shared base model.

Deterministic by construction: for the same base weights, examples, config, warm start and
seed, the adapter file (and so its digest) is byte-for-byte the same on a given machine
and thread count. What makes that so:
- `torch.manual_seed(seed)` right before the LoRA layers are created, so A's init and every
  dropout mask come from one seeded stream;
- the example order of each epoch is a `random.Random(seed + epoch)` shuffle of the
  examples in the order the dataset builder gives them (a user's: log order; the prior's:
  user by user, so partitions' interleaving does not change it; no DataLoader workers, no
  hash-ordered sets);
- `torch.use_deterministic_algorithms(True)` while training;
- the blob is written with sorted keys and a fixed metadata entry (`save_adapter_blob`).
CPU kernels may reduce in a different order with another thread count, so re-training
for an audit uses the thread count of the original run (recorded by the caller).
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tessera.workers.adapter_store import AdapterBlobConfig, load_adapter_blob, save_adapter_blob
from tessera.workers.dataset import (
    EncodedExample,
    Example,
    collate,
    encode_example,
    pad_token_id,
)
from tessera.workers.lora_attach import AdapterMismatch, lora_attached
from tessera.workers.lora_config import LoraTrainConfig
from tessera.workers.target_loss import target_nll

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

BLOB_NAME = "adapter.safetensors"


class EmptyDataset(ValueError):
    """There is nothing to train on (every example was held out or excluded)."""


@dataclass(frozen=True, slots=True)
class TrainResult:
    blob_path: Path
    state_dict: dict[str, torch.Tensor]
    train_loss: float  # mean loss over the last epoch's steps
    seconds: float
    steps: int
    n_examples: int
    n_target_tokens: int  # per epoch
    blob_config: AdapterBlobConfig


@contextmanager
def deterministic() -> Iterator[None]:
    """torch's deterministic algorithms for the block (the group trainer uses it too)."""
    import torch

    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def epoch_batches(
    encoded: Sequence[EncodedExample], *, batch_size: int, seed: int, epoch: int
) -> list[list[EncodedExample]]:
    """One epoch's batches: a seeded shuffle of `encoded` (the group trainer uses the same
    order, so a user trains on the same batches alone or in a group)."""
    order = list(range(len(encoded)))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return [[encoded[i] for i in order[s : s + batch_size]]
            for s in range(0, len(order), batch_size)]


def _proximal_anchors(
    params: Sequence[torch.Tensor], config: LoraTrainConfig, *, warm_started: bool
) -> list[torch.Tensor]:
    """Frozen copies of the warm-start weights the proximal term pulls toward (none when
    the term is off or there is no warm start: fresh LoRA init is nothing to stay near)."""
    if config.prox_weight == 0 or not warm_started:
        return []
    return [p.detach().clone() for p in params]


def _proximal_penalty(
    params: Sequence[torch.Tensor], anchors: Sequence[torch.Tensor]
) -> torch.Tensor:
    # Summed, not averaged, over weights: the pull on each weight does not shrink as the
    # adapter gets bigger (rank, targets), so one prox_weight means the same thing.
    total = (params[0] - anchors[0]).pow(2).sum()
    for param, anchor in zip(params[1:], anchors[1:], strict=True):
        total = total + (param - anchor).pow(2).sum()
    return total


def _loss(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], config: LoraTrainConfig,
    params: Sequence[torch.Tensor], anchors: Sequence[torch.Tensor],
) -> torch.Tensor:
    """One batch's training loss: mean NLL over its target tokens, plus the proximal pull
    toward the parent when there is one."""
    nll_sum, n_tokens = target_nll(model, batch)
    loss = nll_sum / max(1, n_tokens)
    if anchors:
        loss = loss + config.prox_weight * _proximal_penalty(params, anchors)
    return loss


def _write_blob(
    state: dict[str, torch.Tensor], config: LoraTrainConfig, base_digest: str,
    out_dir: Path | None,
) -> tuple[Path, AdapterBlobConfig]:
    """`out_dir/adapter.safetensors` (a fresh temp dir by default) and its config."""
    blob_cfg = AdapterBlobConfig(config.rank, config.alpha, config.target_modules, base_digest)
    folder = out_dir or Path(tempfile.mkdtemp(prefix="tessera-adapter-"))
    folder.mkdir(parents=True, exist_ok=True)
    blob = folder / BLOB_NAME
    save_adapter_blob(state, blob_cfg, blob)
    return blob, blob_cfg


def check_warm_start(init: AdapterBlobConfig, config: LoraTrainConfig, base_digest: str) -> None:
    """A warm start must have the same shape of adapter and come from the same base."""
    if init.r != config.rank or tuple(init.target_modules) != tuple(config.target_modules):
        raise AdapterMismatch(
            f"warm-start adapter has rank {init.r} targets {list(init.target_modules)}; this "
            f"training uses rank {config.rank} targets {list(config.target_modules)}"
        )
    if init.base_digest and base_digest and init.base_digest != base_digest:
        raise AdapterMismatch(
            f"warm-start adapter was trained on base {init.base_digest[:12]}, "
            f"not on the loaded base {base_digest[:12]}"
        )


def train_adapter(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    *,
    config: LoraTrainConfig,
    base_digest: str,
    init_adapter: Path | None = None,
    seed: int | None = None,
    out_dir: Path | None = None,
    progress: bool = False,
) -> TrainResult:
    """Train a LoRA on `examples` (warm-started from `init_adapter` when given) and write it
    to `out_dir/adapter.safetensors` (a fresh temp dir by default). The base model is left
    exactly as it was. `seed` defaults to `config.seed`."""
    import torch
    from peft import get_peft_model_state_dict
    from tqdm import tqdm

    if not examples:
        raise EmptyDataset("no training examples: nothing to train")
    seed = config.seed if seed is None else seed
    started = time.perf_counter()
    encoded = [encode_example(tokenizer, e, max_length=config.max_length) for e in examples]
    init_state: dict[str, torch.Tensor] | None = None
    if init_adapter is not None:
        init_state, init_cfg = load_adapter_blob(init_adapter)
        check_warm_start(init_cfg, config, base_digest)
    pad_id = pad_token_id(tokenizer)

    batches_per_epoch = math.ceil(len(encoded) / config.batch_size)
    total = batches_per_epoch * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    torch.manual_seed(seed)
    steps = 0
    last_epoch_losses: list[float] = []
    with deterministic(), lora_attached(
        model, rank=config.rank, alpha=config.alpha, target_modules=config.target_modules,
        dropout=config.dropout, state_dict=init_state,
    ) as peft_model:
        params = [p for p in peft_model.parameters() if p.requires_grad]
        anchors = _proximal_anchors(params, config, warm_started=init_state is not None)
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        peft_model.train()
        bar = tqdm(total=total, desc="train", unit="step", disable=not progress, leave=False)
        for epoch in range(config.epochs):
            last_epoch_losses = []
            for batch in epoch_batches(encoded, batch_size=config.batch_size, seed=seed,
                                       epoch=epoch):
                if steps >= total:
                    break
                loss = _loss(peft_model, collate(batch, pad_id=pad_id), config, params, anchors)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"training loss became {loss.item()} at step {steps}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                steps += 1
                last_epoch_losses.append(float(loss.item()))
                bar.update(1)
                bar.set_postfix(loss=f"{last_epoch_losses[-1]:.3f}")
        bar.close()
        state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(peft_model).items()}

    blob, blob_cfg = _write_blob(state, config, base_digest, out_dir)
    return TrainResult(
        blob_path=blob,
        state_dict=state,
        train_loss=sum(last_epoch_losses) / max(1, len(last_epoch_losses)),
        seconds=time.perf_counter() - started,
        steps=steps,
        n_examples=len(encoded),
        n_target_tokens=sum(e.n_target_tokens for e in encoded),
        blob_config=blob_cfg,
    )
