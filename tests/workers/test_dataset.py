"""Dataset rules: exchange/text/feedback, holdout, digest, target-only loss masking."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tessera.events.store import StoredEvent
from tessera.workers.dataset import IGNORE_INDEX, Example, build_dataset, collate, encode_example

from .event_specs import exchange, feedback, text

Make = Callable[..., list[StoredEvent]]


def test_exchange_and_text_become_prompt_target_pairs(make_events: Make) -> None:
    events = make_events([
        exchange("How was your day?", "Great, I went climbing.",
                 context=[{"role": "other", "text": "Hi!"}, {"role": "user", "text": "Hey"}]),
        text("Note to self: buy chalk.", context=[{"role": "other", "text": "Anything else?"},
                                                   {"role": "assistant", "text": "AI says"}]),
        text("Standalone thought."),
    ])
    split = build_dataset(events, holdout_k=0)
    assert split.heldout == ()
    first, second, third = split.train
    assert first == Example(
        messages=(("user", "Hi!"), ("assistant", "Hey"), ("user", "How was your day?")),
        target="Great, I went climbing.", position=1, kind="exchange")
    # speaker-centric roles: the user's own words take the template's "assistant" slot
    assert second == Example((("user", "Anything else?"), ("user", "AI says")),
                             "Note to self: buy chalk.", 2, "text")
    assert third == Example((), "Standalone thought.", 3, "text")
    assert (split.from_position, split.to_position) == (0, 3)


def test_feedback_edit_replaces_target_and_low_rating_excludes(make_events: Make) -> None:
    ids = [uuid.uuid4() for _ in range(7)]
    events = make_events([
        exchange("q1", "draft answer"),                      # edited below
        exchange("q2", "bad answer"),                        # rated 1 below
        exchange("q3", "fine answer"),                       # rated 4
        exchange("q4", "meh"),                               # rated 2, then edited
        feedback(ids[0], edited_response="my own answer"),
        feedback(ids[1], rating=1),
        feedback(ids[2], rating=4),
    ], ids=ids)
    events += make_events([
        feedback(ids[3], rating=2),
        feedback(ids[3], edited_response="what I meant"),  # latest word wins: included
        feedback(uuid.uuid4(), rating=1),  # about an event we do not have: ignored
    ], start=7)
    split = build_dataset(events, holdout_k=0)
    targets = {e.messages[-1][1]: e.target for e in split.train}
    assert targets == {"q1": "my own answer", "q3": "fine answer", "q4": "what I meant"}
    assert split.excluded == 1


def test_most_recent_k_are_held_out_and_window_is_respected(make_events: Make) -> None:
    events = make_events([exchange(f"q{i}", f"a{i}") for i in range(10)], start=100)
    split = build_dataset(events, holdout_k=3)
    assert [e.position for e in split.train] == list(range(101, 108))
    assert [e.position for e in split.heldout] == [108, 109, 110]

    window = build_dataset(events, holdout_k=2, from_position=103, to_position=107)
    assert [e.position for e in window.train] == [104, 105]
    assert [e.position for e in window.heldout] == [106, 107]
    assert (window.from_position, window.to_position) == (103, 107)

    with pytest.raises(ValueError, match="holdout_k"):
        build_dataset(events, holdout_k=-1)


def test_digest_is_deterministic_and_sensitive(make_events: Make) -> None:
    events = make_events([exchange(f"q{i}", f"a{i}") for i in range(6)])
    shuffled = events[:]
    random.Random(7).shuffle(shuffled)
    a = build_dataset(events, holdout_k=2)
    b = build_dataset(shuffled, holdout_k=2)
    assert a.digest == b.digest
    assert a.train == b.train
    assert build_dataset(events, holdout_k=3).digest != a.digest
    changed = make_events([exchange(f"q{i}", f"a{i}" if i != 2 else "A2") for i in range(6)])
    assert build_dataset(changed, holdout_k=2).digest != a.digest


def test_malformed_and_non_interaction_events_are_skipped(make_events: Make) -> None:
    events = make_events([
        exchange("ok", "fine"),
        ("interaction.exchange", {"prompt": "", "response": "x"}),  # fails validation
        ("revision.trained", {"anything": 1}),
    ])
    split = build_dataset(events, holdout_k=0)
    assert [e.target for e in split.train] == ["fine"]
    assert split.skipped == 1


def test_loss_covers_only_target_tokens(tiny: tuple[Any, Any]) -> None:
    _, tokenizer = tiny
    ex = Example((("user", "Hello there"),), "I am fine, thanks.", 1, "exchange")
    enc = encode_example(tokenizer, ex, max_length=256)
    target_ids = tokenizer("I am fine, thanks.", add_special_tokens=False)["input_ids"]
    supervised = [t for t in enc.labels if t != IGNORE_INDEX]
    assert supervised == [*target_ids, tokenizer.eos_token_id]
    prompt_len = len(enc.input_ids) - len(supervised)
    assert list(enc.input_ids[prompt_len:]) == supervised
    assert tokenizer.decode(enc.input_ids[:prompt_len]).endswith("assistant\n")

    capped = encode_example(tokenizer, ex, max_length=12)
    assert len(capped.input_ids) == 12
    assert capped.labels[0] == IGNORE_INDEX  # at least one prompt token predicts the target
    assert [t for t in capped.labels if t != IGNORE_INDEX] == supervised[:11]

    batch = collate([enc, capped], pad_id=tokenizer.pad_token_id)
    assert batch["input_ids"].shape == (2, len(enc.input_ids))
    assert int(batch["attention_mask"][1].sum()) == 12
    assert (batch["labels"][1, 12:] == IGNORE_INDEX).all()
