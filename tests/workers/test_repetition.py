"""The repeated word n-gram test on known strings."""

from __future__ import annotations

import math

import pytest

from tessera.workers.repetition import (
    repeated_word_ngrams,
    repeats_word_ngram,
    repetition_share,
    words,
)


@pytest.mark.parametrize(("text", "repeats"), [
    ("I think that I think that we should go.", True),
    ("see you at noon, See you at noon!", True),  # case and punctuation do not count
    ("a a a a", True),  # overlapping occurrences
    ("a a a", False),  # one 3-gram, once
    ("no way, I think we should go to the beach.", False),
    ("the cat and the dog and the cat", False),  # 2-grams repeat, no 3-gram does
    ("", False),
    ("hi", False),
])
def test_repeated_word_trigrams(text: str, repeats: bool) -> None:
    assert repeats_word_ngram(text) is repeats


def test_n_sets_the_gram_length() -> None:
    text = "the cat and the dog and the cat"
    assert repeats_word_ngram(text, n=2)  # "the cat", "and the"
    assert not repeats_word_ngram(text, n=3)
    assert repeats_word_ngram("go go", n=1)
    with pytest.raises(ValueError, match="at least 1"):
        repeats_word_ngram(text, n=0)


def test_share_of_replies() -> None:
    replies = ["yes yes yes yes", "fine, thanks", "we go we go we go", "sure"]
    assert repetition_share(replies) == 0.5
    assert math.isnan(repetition_share([]))
    assert words("Don't STOP-me") == ["don", "t", "stop", "me"]


def test_counting_repeated_ngrams() -> None:
    loop = "I did a lot of things. I did a lot of things."
    assert repeated_word_ngrams(loop) == 4
    assert repeated_word_ngrams(loop, 5) == 2
    assert repeated_word_ngrams("a a a a") == 1  # overlapping occurrences count
    with pytest.raises(ValueError, match="at least 1"):
        repeated_word_ngrams(loop, 0)
