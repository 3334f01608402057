"""Real conversations as per-user interaction histories, from the `chitchat-dataset` wheel.

The Chit Chat Challenge corpus holds ~7,000 two-person conversations, each a list of
*turns* (consecutive messages of one sender, with timestamps). We treat every sender as
a user of an app: each of their turns becomes one interaction —

- an **exchange** when someone spoke before them: `prompt` = the turn they answered,
  `response` = their turn, `context` = the turns before that (most recent last);
- a **text** (free text they authored) when they opened the conversation.

In `context`, the user's own earlier turns have role `user`, the other person's `other`.
Selection is deterministic: speakers with at least `min_messages` turns, ordered by a
seeded shuffle of their ids.
"""

from __future__ import annotations

import json
import random
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from importlib import resources
from typing import Any, Final, Literal

EVENT_ID_NAMESPACE: Final = uuid.UUID("7d0c2a4e-5f43-4c59-9a8e-3b7c1e0f9d21")

# Utterances of one turn are joined with a newline: they were sent as separate messages.
UTTERANCE_SEP: Final = "\n"


@dataclass(frozen=True, slots=True)
class ContextTurn:
    role: Literal["user", "other"]
    text: str


@dataclass(frozen=True, slots=True)
class SpeakerMessage:
    """One turn of a speaker, with the conversation before it."""

    conversation_id: str
    turn_index: int  # position of the turn in its conversation
    occurred_at: datetime
    text: str
    prompt: str | None  # the turn this one answers; None when the speaker opened
    context: tuple[ContextTurn, ...]  # turns before `prompt`, oldest first

    def event_id(self, user_id: str) -> uuid.UUID:
        """A stable id for this message as `user_id`'s event: sending it again (a second
        demo run) is a no-op in the log."""
        return uuid.uuid5(EVENT_ID_NAMESPACE, f"{self.conversation_id}/{self.turn_index}/{user_id}")

    def as_ingest_item(self, user_id: str) -> dict[str, Any]:
        """The item for `POST /v1/events` (an exchange, or a text when it opened)."""
        context = [{"role": t.role, "text": t.text} for t in self.context]
        common = {
            "event_id": str(self.event_id(user_id)),
            "user_id": user_id,
            "occurred_at": self.occurred_at.isoformat(),
        }
        if self.prompt is None:
            return {**common, "type": "text", "text": self.text, "context": context}
        return {
            **common,
            "type": "exchange",
            "prompt": self.prompt,
            "response": self.text,
            "context": context,
        }


@dataclass(frozen=True, slots=True)
class Speaker:
    speaker_id: str
    messages: tuple[SpeakerMessage, ...]  # in time order


@lru_cache(maxsize=1)
def _raw() -> dict[str, Any]:
    """The corpus (40 MB of JSON, read once per process)."""
    text = resources.files("chitchat_dataset").joinpath("dataset.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def _turns(conversation: dict[str, Any]) -> Iterator[tuple[str, datetime, str]]:
    """(sender, time of the turn's first message, text) for each non-empty turn."""
    for turn in conversation["messages"]:
        texts = [u["text"].strip() for u in turn if u.get("text", "").strip()]
        if texts:
            stamp = datetime.fromisoformat(turn[0]["timestamp"].replace("Z", "+00:00"))
            yield turn[0]["sender"], stamp, UTTERANCE_SEP.join(texts)


def load_speakers(
    *,
    min_messages: int = 20,
    limit: int | None = None,
    seed: int = 0,
    max_context_turns: int = 8,
    max_chars: int | None = None,
) -> list[Speaker]:
    """Speakers with at least `min_messages` turns, in a seeded order, at most `limit`.

    With `max_chars` (the server's text limit), a turn longer than that is neither a
    message nor a prompt nor context (a few turns in the corpus are pasted essays).
    """
    by_sender = _messages_by_sender(max_context_turns, max_chars)
    eligible = sorted(s for s, msgs in by_sender.items() if len(msgs) >= min_messages)
    random.Random(seed).shuffle(eligible)
    chosen = eligible if limit is None else eligible[:limit]
    return [Speaker(s, by_sender[s]) for s in chosen]


@lru_cache(maxsize=4)
def _messages_by_sender(
    max_context_turns: int, max_chars: int | None
) -> dict[str, tuple[SpeakerMessage, ...]]:
    """Every sender's messages in time order (built once per process and arguments)."""
    by_sender: dict[str, list[SpeakerMessage]] = defaultdict(list)
    for conv_id, conversation in _raw().items():
        turns = list(_turns(conversation))
        if max_chars is not None:
            turns = [t for t in turns if len(t[2]) <= max_chars]
        for i, (sender, stamp, text) in enumerate(turns):
            prompt = turns[i - 1][2] if i > 0 else None
            earlier = turns[max(0, i - 1 - max_context_turns) : max(0, i - 1)]
            context = tuple(
                ContextTurn("user" if s == sender else "other", t) for s, _, t in earlier
            )
            message = SpeakerMessage(conv_id, i, stamp, text, prompt, context)
            by_sender[sender].append(message)
    return {s: tuple(sorted(msgs, key=lambda m: m.occurred_at)) for s, msgs in by_sender.items()}
