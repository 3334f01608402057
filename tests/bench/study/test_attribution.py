"""The speaker classifier tells apart three synthetic speakers' held-out messages."""

from __future__ import annotations

import math
import random

import pytest

from tessera.bench.study.attribution import AttributionError, SpeakerClassifier

TOPICS = ["the game", "dinner", "work", "the weekend", "my sister", "the weather", "music",
          "the trip", "school", "the new phone"]


def _messages(style: str, rng: random.Random, n: int) -> list[str]:
    """Speakers with habits, not fixed sentences: every message has a random topic."""
    out = []
    for _ in range(n):
        topic = rng.choice(TOPICS)
        if style == "caps":
            out.append(f"OMG {topic.upper()} WAS AMAZING!!! lol")
        elif style == "formal":
            out.append(f"I believe that {topic} went rather well, thank you for asking.")
        else:
            out.append(f"hmm idk... {topic} was ok i guess :)")
    return out


def _split(seed: int) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    rng = random.Random(seed)
    styles = {"ann": "caps", "ben": "formal", "cat": "casual"}
    history = {s: _messages(style, rng, 20) for s, style in styles.items()}
    held_out = {s: _messages(style, rng, 10) for s, style in styles.items()}
    return history, held_out


def test_own_held_out_style_is_attributed_above_chance() -> None:
    history, held_out = _split(seed=3)
    clf = SpeakerClassifier.fit(history)
    assert clf.chance == pytest.approx(1 / 3)
    for speaker, texts in held_out.items():
        assert clf.attribution(speaker, texts) >= 0.9, speaker
        others = [t for s, ts in held_out.items() if s != speaker for t in ts]
        assert clf.attribution(speaker, others) <= 0.1, speaker


def test_mixed_replies_score_their_share() -> None:
    history, held_out = _split(seed=4)
    clf = SpeakerClassifier.fit(history)
    # Half of the "replies" in ann's style, half in ben's: ann gets about half.
    replies = held_out["ann"][:5] + held_out["ben"][:5]
    assert clf.attribution("ann", replies) == pytest.approx(0.5)
    assert clf.predict([]) == []
    assert math.isnan(clf.attribution("ann", []))


def test_needs_two_speakers_and_known_ids() -> None:
    with pytest.raises(AttributionError, match="at least 2 speakers"):
        SpeakerClassifier.fit({"ann": ["hello"], "ben": []})
    clf = SpeakerClassifier.fit({"ann": ["OMG YES"], "ben": ["I believe so."]})
    with pytest.raises(AttributionError, match="not one of"):
        clf.attribution("zed", ["hi"])
