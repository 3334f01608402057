"""Who is studied and how each history is cut: speakers, time split, nights, general set.

Per speaker, messages are in time order. The most recent `n_test` of them
(`min(max_test, max(1, round(test_fraction * n)))`) are the test set: they are never sent
to the system, so no revision can train on them. The `max_train` messages before them
are the history; it is cut into `days` consecutive chunks of (almost) equal size, one
chunk per simulated day, each followed by a night of training.

The general set (for drift) is a fixed sample of messages of *other* speakers: neither the
tenant prior nor any personal revision sees them.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tessera.bench.chitchat import Speaker, SpeakerMessage, load_speakers
from tessera.events.store import StoredEvent
from tessera.schemas.events import EventEnvelope, EventType
from tessera.workers.dataset import Example, build_dataset

# Fixed namespace: the same speaker, tenant and message index give the same event id, so a
# re-sent batch is a no-op in the log (ingest is idempotent on event_id).
_EVENT_NS = uuid.UUID("6f1d3c52-7a0e-4c1b-9a51-3f2e8d5b7c10")


class StudyDesignError(ValueError):
    """The requested speakers or split cannot make a study; the message says why."""


@dataclass(frozen=True, slots=True)
class StudySpeaker:
    """One speaker's history, cut into days, and their test set."""

    speaker_id: str
    days: tuple[tuple[SpeakerMessage, ...], ...]  # oldest day first
    test: tuple[SpeakerMessage, ...]
    n_messages: int  # in the corpus, before any cap

    @property
    def history(self) -> tuple[SpeakerMessage, ...]:
        return tuple(m for day in self.days for m in day)

    def ingest_items(self, tenant_id: str, day: int) -> list[dict[str, Any]]:
        """API items of day `day`'s messages, with deterministic event ids."""
        offset = sum(len(d) for d in self.days[:day])
        items = []
        for i, message in enumerate(self.days[day], start=offset):
            item = message.as_ingest_item(self.speaker_id)
            item["event_id"] = str(uuid.uuid5(_EVENT_NS, f"{tenant_id}/{self.speaker_id}/{i}"))
            items.append(item)
        return items


@dataclass(frozen=True, slots=True)
class StudyDesign:
    speakers: tuple[StudySpeaker, ...]
    general: tuple[SpeakerMessage, ...]  # other speakers' messages (drift)
    days: int
    max_train: int
    max_test: int
    test_fraction: float

    def params(self) -> dict[str, Any]:
        """The design as recorded in the study's JSON."""
        return {"days": self.days, "max_train": self.max_train, "max_test": self.max_test,
                "test_fraction": self.test_fraction, "general_examples": len(self.general),
                "speakers": [s.speaker_id for s in self.speakers]}


def split_speaker(
    speaker: Speaker, *, days: int, max_train: int, max_test: int, test_fraction: float
) -> StudySpeaker:
    """Cut one speaker's messages by time (see the module docstring)."""
    messages = speaker.messages
    n_test = min(max_test, max(1, round(test_fraction * len(messages))))
    history = messages[: len(messages) - n_test][-max_train:]
    if len(history) < days:
        raise StudyDesignError(
            f"speaker {speaker.speaker_id} has {len(history)} history messages after the "
            f"{n_test} test messages: too few for {days} days"
        )
    # Equal chunks, the first ones one longer when it does not divide (np.array_split).
    size, extra = divmod(len(history), days)
    chunks, start = [], 0
    for day in range(days):
        end = start + size + (1 if day < extra else 0)
        chunks.append(tuple(history[start:end]))
        start = end
    return StudySpeaker(speaker.speaker_id, tuple(chunks), messages[len(messages) - n_test:],
                        len(messages))


def build_design(
    speakers: Sequence[Speaker],
    general: Sequence[SpeakerMessage],
    *,
    days: int,
    max_train: int,
    max_test: int,
    test_fraction: float = 0.2,
) -> StudyDesign:
    if days < 1:
        raise StudyDesignError(f"--days must be at least 1, got {days}")
    if not speakers:
        raise StudyDesignError("no speakers to study")
    split = tuple(split_speaker(s, days=days, max_train=max_train, max_test=max_test,
                                test_fraction=test_fraction) for s in speakers)
    return StudyDesign(split, tuple(general), days, max_train, max_test, test_fraction)


def choose_speakers(
    *,
    speaker_ids: Sequence[str] | None,
    n_speakers: int,
    min_messages: int,
    seed: int,
    max_chars: int | None,
    exclude_choices: Sequence[tuple[int, int]] = (),
) -> list[Speaker]:
    """The speakers named (in that order), else the first `n_speakers` with at least
    `min_messages` messages in the seeded order of `load_speakers`, skipping every speaker
    an earlier run chose: each (seed, n) of `exclude_choices` is the first n of that seed's
    order (so a report can run on speakers disjoint from the tuning and earlier sets)."""
    if speaker_ids:
        corpus = load_speakers(min_messages=1, max_chars=max_chars)
        everyone: dict[str, Speaker] = {s.speaker_id: s for s in corpus}
        missing = [s for s in speaker_ids if s not in everyone]
        if missing:
            raise StudyDesignError(f"unknown speaker ids in chitchat-dataset: {missing}")
        return [everyone[s] for s in speaker_ids]
    excluded = {s.speaker_id for other_seed, n in exclude_choices
                for s in load_speakers(min_messages=min_messages, limit=n, seed=other_seed,
                                       max_chars=max_chars)}
    eligible = [s for s in load_speakers(min_messages=min_messages, seed=seed,
                                         max_chars=max_chars)
                if s.speaker_id not in excluded]
    chosen = eligible[:n_speakers]
    if len(chosen) < n_speakers:
        raise StudyDesignError(
            f"only {len(eligible)} speakers have >= {min_messages} messages and were not "
            f"excluded (asked for {n_speakers})"
        )
    return chosen


def general_messages(
    exclude: Sequence[str], *, n_speakers: int = 8, per_speaker: int = 8, seed: int = 1,
    max_chars: int | None = None,
) -> list[SpeakerMessage]:
    """A fixed sample of other speakers' messages: `per_speaker` evenly spaced messages of
    each of the first `n_speakers` (seeded order, >= 40 messages) not in `exclude`."""
    skip = set(exclude)
    out: list[SpeakerMessage] = []
    taken = 0
    for speaker in load_speakers(min_messages=40, seed=seed, max_chars=max_chars):
        if speaker.speaker_id in skip:
            continue
        step = len(speaker.messages) // per_speaker
        out.extend(speaker.messages[i * step] for i in range(per_speaker))
        taken += 1
        if taken == n_speakers:
            break
    return out


def examples_of(messages: Sequence[SpeakerMessage], user_id: str = "study") -> tuple[Example, ...]:
    """The training-format examples of `messages`, built by the pipeline's own dataset
    builder (so test examples are rendered exactly as training examples are)."""
    stored = []
    for i, message in enumerate(messages):
        item = message.as_ingest_item(user_id)
        kind = EventType.TEXT if item["type"] == "text" else EventType.EXCHANGE
        envelope_fields = ("type", "user_id", "occurred_at", "event_id")
        data = {k: v for k, v in item.items() if k not in envelope_fields}
        envelope = EventEnvelope(
            event_id=uuid.uuid5(_EVENT_NS, f"example/{user_id}/{i}"), event_type=kind,
            tenant_id="study", user_id=user_id,
            occurred_at=datetime.fromisoformat(item["occurred_at"]).astimezone(UTC), data=data,
        )
        stored.append(StoredEvent(position=i + 1, stream_version=i + 1, envelope=envelope))
    split = build_dataset(stored, holdout_k=0)
    if split.skipped:
        raise StudyDesignError(f"{split.skipped} messages of {user_id} are not valid events")
    train: tuple[Example, ...] = split.train
    return train
