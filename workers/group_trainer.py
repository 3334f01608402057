"""Train K users' adapter revisions in the same forward/backward passes over the frozen base.

Each user (a `GroupMember`) keeps everything `train_adapter` gives them alone: their own
warm start (a blob, else peft's fresh init from their seed), examples, epochs, learning
rate, clipping, proximal pull, AdamW state and seeded per-epoch shuffles. Group step s
holds step s of every user who still has one: their batches' rows go through the model
together (each row routed to its user's LoRA slot, `group_lora`), in length-sorted chunks
under a token cap, with each user's loss the mean over their own target tokens (as alone),
so the gradient a user's weights get is the one they would get alone up to float rounding.
Then every active user clips and steps on their own. Users with fewer steps stop
contributing; a user whose loss is not finite stops with an error, the others go on.

Output per user: the same blob `train_adapter` writes (`save_adapter_blob`, peft's keys).
Same members, order and seeds give the same blobs (deterministic algorithms; the dropout
masks come from one generator seeded by the members' seeds, so with dropout > 0 a user's
masks depend on the group: only with dropout 0 does a user train exactly as alone).
"""

from __future__ import annotations

import hashlib
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from peft import get_peft_model_state_dict

from tessera.workers.adapter_store import AdapterBlobConfig, load_adapter_blob, save_adapter_blob
from tessera.workers.dataset import EncodedExample, Example, collate, encode_example, pad_token_id
from tessera.workers.group_lora import GroupLora, group_lora_attached, length_chunks, row_target_nll
from tessera.workers.lora_attach import lora_attached
from tessera.workers.lora_config import SHAPE_FIELDS, LoraTrainConfig
from tessera.workers.trainer import (
    BLOB_NAME,
    TrainResult,
    check_warm_start,
    deterministic,
    epoch_batches,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# Padded tokens per chunk of a group step: the size of one alone step at the default
# batch (8 x 256); activations of a 135M model stay near a couple of GB.
DEFAULT_CHUNK_TOKENS = 2048


@dataclass(frozen=True, slots=True)
class GroupMember:
    """One user's training job within a group."""

    user_id: str
    examples: Sequence[Example]
    config: LoraTrainConfig
    init_adapter: Path | None = None
    seed: int | None = None  # defaults to config.seed

    @property
    def effective_seed(self) -> int:
        return self.config.seed if self.seed is None else self.seed


@dataclass(frozen=True, slots=True)
class MemberOutcome:
    """A member's adapter (as `train_adapter` returns it), or why there is none."""

    user_id: str
    result: TrainResult | None
    error: str | None = None


@dataclass
class _Run:
    """A member's training state while the group trains."""

    slot: int
    member: GroupMember
    encoded: list[EncodedExample]
    schedule: list[tuple[int, list[EncodedExample]]]  # (epoch, batch) per optimizer step
    params: list[torch.nn.Parameter]
    anchors: list[torch.Tensor]  # warm-start weights the proximal term pulls toward
    optimizer: torch.optim.Optimizer
    losses: list[tuple[int, float]] = field(default_factory=list)  # (epoch, loss) per step
    error: str | None = None


def check_group(members: Sequence[GroupMember]) -> LoraTrainConfig:
    """The shared shape of a group's adapters; ValueError when the members cannot share one
    set of layers (rank, alpha, targets and dropout must agree)."""
    if not members:
        raise ValueError("a group needs at least one member")
    first = members[0].config
    for member in members[1:]:
        differ = first.shape_mismatch(member.config)
        if member.config.dropout != first.dropout:
            differ.append("dropout")
        if differ:
            raise ValueError(f"user {member.user_id!r} differs from {members[0].user_id!r} "
                             f"in {differ}; group users with the same {list(SHAPE_FIELDS)}")
    return first


def initial_state(model: PreTrainedModel, member: GroupMember,
                  base_digest: str) -> dict[str, torch.Tensor]:
    """The weights `train_adapter` would start from: the warm-start blob, else peft's fresh
    init drawn right after `torch.manual_seed(seed)` (made by peft itself, so it is the
    very same A; B is zero)."""
    cfg = member.config
    if member.init_adapter is not None:
        warm: dict[str, torch.Tensor]
        warm, blob_cfg = load_adapter_blob(member.init_adapter)
        check_warm_start(blob_cfg, cfg, base_digest)
        return warm
    torch.manual_seed(member.effective_seed)
    with lora_attached(model, rank=cfg.rank, alpha=cfg.alpha, target_modules=cfg.target_modules,
                       dropout=cfg.dropout) as peft_model:
        fresh: dict[str, torch.Tensor] = get_peft_model_state_dict(peft_model)
        return {k: v.detach().clone() for k, v in fresh.items()}


def _schedule(member: GroupMember, encoded: Sequence[EncodedExample]
              ) -> list[tuple[int, list[EncodedExample]]]:
    """Every optimizer step's (epoch, batch), cut at max_steps, in `train_adapter`'s order."""
    cfg = member.config
    steps = [(epoch, batch) for epoch in range(cfg.epochs)
             for batch in epoch_batches(encoded, batch_size=cfg.batch_size,
                                        seed=member.effective_seed, epoch=epoch)]
    return steps if cfg.max_steps is None else steps[: cfg.max_steps]


def _group_generator(members: Sequence[GroupMember]) -> torch.Generator:
    key = ",".join(f"{m.user_id}:{m.effective_seed}" for m in members).encode()
    return torch.Generator().manual_seed(int(hashlib.sha256(key).hexdigest()[:15], 16))


def _forward_backward(model: torch.nn.Module, group: GroupLora, runs: Sequence[_Run],
                      step: int, *, pad_id: int, chunk_tokens: int) -> dict[int, float]:
    """Accumulate every run's step gradient; return each run's mean target NLL."""
    rows = [(run.slot, enc) for run in runs for enc in run.schedule[step][1]]
    n_targets = torch.zeros(group.n_slots)
    for slot, enc in rows:
        n_targets[slot] += enc.n_target_tokens
    weights = 1.0 / n_targets.clamp(min=1)  # each user's loss: mean over their targets
    sums = torch.zeros(group.n_slots, dtype=torch.float64)
    for chunk in length_chunks(rows, max_tokens=chunk_tokens):
        slots = torch.tensor([slot for slot, _ in chunk])
        with group.routing.rows(slots.tolist()):
            row_nll, _ = row_target_nll(model, collate([e for _, e in chunk], pad_id=pad_id))
        (row_nll * weights[slots]).sum().backward()
        sums.index_add_(0, slots, row_nll.detach().double())
    return {run.slot: float(sums[run.slot] * weights[run.slot]) for run in runs}


def _step(run: _Run, loss: float) -> None:
    """Add the proximal pull, check the loss, clip and step one user's adapter."""
    cfg = run.member.config
    if run.anchors:
        # summed over weights, as train_adapter's term
        penalty = (run.params[0] - run.anchors[0]).pow(2).sum()
        for param, anchor in zip(run.params[1:], run.anchors[1:], strict=True):
            penalty = penalty + (param - anchor).pow(2).sum()
        (cfg.prox_weight * penalty).backward()
        loss += cfg.prox_weight * float(penalty.detach())
    if not math.isfinite(loss):
        run.error = f"training loss became {loss} at step {len(run.losses)}"
        return
    torch.nn.utils.clip_grad_norm_(run.params, cfg.max_grad_norm)
    run.optimizer.step()
    run.losses.append((run.schedule[len(run.losses)][0], loss))


def _runs(group: GroupLora, members: Sequence[GroupMember],
          encoded: Sequence[list[EncodedExample]]) -> list[_Run]:
    runs = []
    for slot, (member, enc) in enumerate(zip(members, encoded, strict=True)):
        cfg = member.config
        params = group.slot_parameters(slot)
        warm = member.init_adapter is not None
        anchors = [p.detach().clone() for p in params] if cfg.prox_weight and warm else []
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        run = _Run(slot, member, enc, _schedule(member, enc), params, anchors, optimizer)
        if not enc:
            run.error = "no training examples: nothing to train"
        runs.append(run)
    return runs


def _outcome(run: _Run, group: GroupLora, blob_cfg: AdapterBlobConfig, folder: Path,
             seconds: float) -> MemberOutcome:
    if run.error is not None:
        return MemberOutcome(run.member.user_id, None, run.error)
    state = group.slot_state_dict(run.slot)
    folder.mkdir(parents=True, exist_ok=True)
    blob = folder / BLOB_NAME
    save_adapter_blob(state, blob_cfg, blob)
    last_epoch = run.member.config.epochs - 1  # as alone: a run cut short reports 0
    last = [loss for epoch, loss in run.losses if epoch == last_epoch]
    return MemberOutcome(run.member.user_id, TrainResult(
        blob_path=blob, state_dict=state, train_loss=sum(last) / max(1, len(last)),
        seconds=seconds, steps=len(run.losses), n_examples=len(run.encoded),
        n_target_tokens=sum(e.n_target_tokens for e in run.encoded), blob_config=blob_cfg))


def train_group(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    members: Sequence[GroupMember],
    *,
    base_digest: str,
    out_dir: Path | None = None,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
) -> list[MemberOutcome]:
    """Train every member's adapter in one group; outcomes in member order, blobs under
    `out_dir/<index>/adapter.safetensors`. `seconds` of each result is the group's time."""
    started = time.perf_counter()
    shape = check_group(members)
    pad_id = pad_token_id(tokenizer)
    encoded = [[encode_example(tokenizer, e, max_length=m.config.max_length)
                for e in m.examples] for m in members]
    states = [initial_state(model, member, base_digest) for member in members]
    folder = out_dir or Path(tempfile.mkdtemp(prefix="tessera-group-"))
    blob_cfg = AdapterBlobConfig(shape.rank, shape.alpha, shape.target_modules, base_digest)
    with deterministic(), group_lora_attached(
        model, states, scale=shape.scaling, targets=shape.target_modules,
        dropout=shape.dropout, generator=_group_generator(members),
    ) as group:
        runs = _runs(group, members, encoded)
        model.train()
        try:
            for step in range(max((len(r.schedule) for r in runs), default=0)):
                active = [r for r in runs if r.error is None and step < len(r.schedule)]
                for run in active:
                    run.optimizer.zero_grad(set_to_none=True)
                losses = _forward_backward(model, group, active, step, pad_id=pad_id,
                                           chunk_tokens=chunk_tokens)
                for run in active:
                    _step(run, losses[run.slot])
        finally:
            model.eval()  # type: ignore[no-untyped-call]
        seconds = time.perf_counter() - started
        return [_outcome(run, group, blob_cfg, folder / f"{run.slot:04d}", seconds)
                for run in runs]
