"""From a user's interaction events to deterministic training and held-out examples.

Rules (ARCHITECTURE.md, issue 3 item 2):
- exchange -> the conversation (context turns, then the prompt) is the prompt; the response
  the user accepted or wrote is the target (chat roles: see `_role`);
- text -> the preceding context turns are the prompt; the user's text is the target;
- feedback -> applied to the exchange it names, in log order, the latest word winning: an
  edited response replaces the target (and clears an earlier low rating); a rating <= 2
  excludes the exchange. Feedback on an exchange outside the events given is ignored;
- the most recent `holdout_k` examples (by log position) are held out for evaluation;
- the digest is the sha256 of the canonical JSON of both splits, so the same events always
  give the same digest, and any change to what the model sees changes it.

Examples hold text, not tokens: the digest does not depend on a tokenizer. `encode_example`
renders one with the tokenizer's chat template and masks the prompt (labels -100), so the
loss covers the target tokens (and the end-of-turn token) only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from tessera.events.store import StoredEvent
from tessera.schemas.events import EventType, ExchangeData, FeedbackData, TextData, Turn

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

DATASET_FORMAT = "tessera.dataset.v1"
LOW_RATING = 2  # ratings at or below this exclude the exchange
IGNORE_INDEX = -100  # label value the loss skips


@dataclass(frozen=True, slots=True)
class Example:
    """One training example: chat messages before the target, and the target text."""

    messages: tuple[tuple[str, str], ...]  # (role, content), role in {system,user,assistant}
    target: str
    position: int  # log position of the event the example comes from
    kind: str  # "exchange" | "text"

    def canonical(self) -> dict[str, Any]:
        return {"messages": [list(m) for m in self.messages], "target": self.target,
                "position": self.position, "kind": self.kind}


@dataclass(frozen=True, slots=True)
class DatasetSplit:
    """Train and held-out examples for the events in `(from_position, to_position]`."""

    train: tuple[Example, ...]
    heldout: tuple[Example, ...]
    digest: str
    from_position: int
    to_position: int
    excluded: int = 0  # exchanges dropped by low ratings
    skipped: int = 0  # events whose payload did not validate (never crash a worker)
    holdout_k: int = 0
    event_ids: tuple[str, ...] = field(default=(), repr=False)


def _role(turn: Turn) -> str:
    """Speaker-centric chat roles: the adapter learns to speak AS the user, so the user's
    words (every target, and their own earlier turns, `Turn.role == "user"`) take the
    template's "assistant" slot, and everyone they talk to ("other", or an AI "assistant"
    whose turns they answer) takes the "user" slot. This matches the chitchat loader, where
    `user` marks the speaker's own earlier turns and `other` the person they talk to."""
    return "assistant" if turn.role == "user" else "user"


@dataclass
class _Pending:
    messages: tuple[tuple[str, str], ...]
    target: str
    position: int
    kind: str
    excluded: bool = False


def build_dataset(
    events: Sequence[StoredEvent],
    *,
    holdout_k: int,
    from_position: int | None = None,
    to_position: int | None = None,
) -> DatasetSplit:
    """Deterministic examples from `events` (any order; non-interaction events ignored).

    `from_position`/`to_position` default to the span of `events`; events outside
    `(from_position, to_position]` are ignored, so callers may pass a superset.
    """
    if holdout_k < 0:
        raise ValueError(f"holdout_k must be >= 0, got {holdout_k}")
    ordered = sorted(events, key=lambda e: e.position)
    lo = from_position if from_position is not None else (ordered[0].position - 1 if ordered else 0)
    hi = to_position if to_position is not None else (ordered[-1].position if ordered else lo)
    window = [e for e in ordered if lo < e.position <= hi]

    pending: dict[str, _Pending] = {}  # event_id -> example being built, in log order
    skipped = 0
    for stored in window:
        env = stored.envelope
        try:
            if env.event_type == EventType.EXCHANGE:
                ex = ExchangeData.model_validate(env.data)
                msgs = (*((_role(t), t.text) for t in ex.context), ("user", ex.prompt))
                pending[str(env.event_id)] = _Pending(
                    msgs, ex.response, stored.position, "exchange")
            elif env.event_type == EventType.TEXT:
                tx = TextData.model_validate(env.data)
                msgs = tuple((_role(t), t.text) for t in tx.context)
                pending[str(env.event_id)] = _Pending(msgs, tx.text, stored.position, "text")
            elif env.event_type == EventType.FEEDBACK:
                fb = FeedbackData.model_validate(env.data)
                target = pending.get(str(fb.target_event_id))
                if target is None or target.kind != "exchange":
                    continue  # feedback on something we are not training on
                if fb.edited_response is not None:
                    target.target = fb.edited_response
                    target.excluded = False
                if fb.rating is not None:
                    target.excluded = fb.rating <= LOW_RATING
        except ValidationError:
            skipped += 1

    kept = [p for p in pending.values() if not p.excluded]
    examples = [Example(p.messages, p.target, p.position, p.kind) for p in kept]
    examples.sort(key=lambda e: e.position)
    cut = max(0, len(examples) - holdout_k)
    train, heldout = tuple(examples[:cut]), tuple(examples[cut:])
    return DatasetSplit(
        train=train,
        heldout=heldout,
        digest=dataset_digest(train, heldout, holdout_k=holdout_k),
        from_position=lo,
        to_position=hi,
        excluded=len(pending) - len(kept),
        skipped=skipped,
        holdout_k=holdout_k,
        event_ids=tuple(str(e.envelope.event_id) for e in window),
    )


def dataset_digest(
    train: Iterable[Example], heldout: Iterable[Example], *, holdout_k: int
) -> str:
    doc = {"format": DATASET_FORMAT, "holdout_k": holdout_k,
           "train": [e.canonical() for e in train], "heldout": [e.canonical() for e in heldout]}
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class EncodedExample:
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]  # IGNORE_INDEX on prompt tokens

    @property
    def n_target_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def token_ids(encoded: Any) -> list[int]:
    # apply_chat_template(tokenize=True) returns a list or a BatchEncoding across versions.
    ids = encoded["input_ids"] if not isinstance(encoded, list) else encoded
    return [int(i) for i in ids]


def encode_example(
    tokenizer: PreTrainedTokenizerBase, example: Example, *, max_length: int
) -> EncodedExample:
    """Prompt (chat template + generation prompt) then target + EOS; loss on the target.

    Prompt and target are tokenized separately so the boundary is exact. Over `max_length`
    the prompt loses its oldest tokens first (keeping at least one, which predicts the
    target's first token); a target longer than the cap is cut at its end.
    """
    # Chat templates refuse an empty conversation; text written unprompted answers an empty
    # turn from the other side.
    messages = [{"role": r, "content": c} for r, c in example.messages] or [
        {"role": "user", "content": ""}]
    prompt = token_ids(tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True))
    target = [int(i) for i in tokenizer(example.target, add_special_tokens=False)["input_ids"]]
    eos = tokenizer.eos_token_id
    if isinstance(eos, int):
        target.append(eos)
    target = target[: max_length - 1]
    prompt = prompt[-(max_length - len(target)):]
    return EncodedExample(tuple(prompt + target),
                          tuple([IGNORE_INDEX] * len(prompt) + target))


def pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id used for padding: the pad token, else EOS (padding is masked out anyway)."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if isinstance(candidate, int):
            return candidate
    raise ValueError("the tokenizer has neither a pad nor an EOS token")


def collate(batch: Sequence[EncodedExample], *, pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded `input_ids`, `attention_mask`, `labels` tensors for one batch."""
    import torch

    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, enc in enumerate(batch):
        n = len(enc.input_ids)
        ids[row, :n] = torch.tensor(enc.input_ids)
        labels[row, :n] = torch.tensor(enc.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
