"""Does a generated reply repeat itself? A word n-gram that occurs twice in one reply.

Small models stuck in a loop ("I think that I think that ...") repeat word 3-grams long
before they repeat one token six times in a row (what the gate's canary catches), so the
study reports the share of replies with a repeated 3-gram, and a gate may use the same
test. Words are lowercase runs of letters and digits: punctuation and case do not make two
3-grams different ("See you." vs "see you").
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """Lowercase word tokens of `text` (runs of letters, digits and '_')."""
    return _WORD.findall(text.lower())


def repeated_ngrams(text: str, n: int = 3) -> Iterator[tuple[str, ...]]:
    """Each word `n`-gram of `text` that already occurred earlier in it, in order
    (overlapping occurrences count: "a a a a" yields ("a", "a", "a") once)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    tokens = words(text)
    seen: set[tuple[str, ...]] = set()
    for i in range(len(tokens) - n + 1):
        gram = tuple(tokens[i:i + n])
        if gram in seen:
            yield gram
        seen.add(gram)


def repeated_word_ngrams(text: str, n: int = 3) -> int:
    """How many of `text`'s word `n`-grams already occurred earlier in it (overlapping
    occurrences count: "a a a a" has one repeated 3-gram, "a a a")."""
    return sum(1 for _ in repeated_ngrams(text, n))


def repeats_word_ngram(text: str, n: int = 3) -> bool:
    """True when some run of `n` consecutive words occurs at least twice in `text`."""
    return repeated_word_ngrams(text, n) > 0


def repetition_share(texts: Iterable[str], n: int = 3) -> float:
    """Share (0..1) of `texts` that repeat a word `n`-gram; NaN when there are none."""
    flags = [repeats_word_ngram(t, n) for t in texts]
    return sum(flags) / len(flags) if flags else math.nan
