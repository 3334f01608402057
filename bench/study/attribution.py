"""Whose reply is this? A speaker classifier for the study's generation figures.

A reply "sounds like" its person when a classifier trained only on the chosen speakers'
history messages attributes it to them. Features are TF-IDF word 1-2-grams (what they
talk about, their phrases) and character 2-5-grams within word bounds (spelling,
punctuation, emoticons, casing habits), sublinear and L2-normalised; the model is a
multinomial logistic regression. The same classifier on the speakers' real test messages
gives the ceiling (`attribution_real`): generated replies are not expected to beat it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline, make_union


class AttributionError(ValueError):
    """The training messages cannot make a classifier; the message says why."""


def _pipeline(seed: int) -> Any:
    features = make_union(
        TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True,
                        lowercase=True, token_pattern=r"(?u)\b\w+\b|[^\w\s]"),
        # Case is kept here: "LOL" and "lol" are different habits.
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True,
                        lowercase=False),
    )
    # C=1 (the default): on 4 chitchat speakers (seeds 0 and 1, 24 or 300 history messages
    # each) C=10 scored the real test messages within 0.03 of it, and fit up to 4x slower.
    return make_pipeline(features, LogisticRegression(C=1.0, max_iter=2000,
                                                      random_state=seed))


@dataclass(frozen=True)
class SpeakerClassifier:
    """A fitted classifier over `speakers` (at least two)."""

    speakers: tuple[str, ...]
    _model: Any

    @classmethod
    def fit(cls, messages: Mapping[str, Sequence[str]], *, seed: int = 0) -> SpeakerClassifier:
        """Train on each speaker's messages (`{speaker_id: texts}`)."""
        speakers = tuple(s for s, texts in messages.items() if texts)
        if len(speakers) < 2:
            raise AttributionError(
                f"a speaker classifier needs messages of at least 2 speakers, got {speakers}")
        texts = [t for s in speakers for t in messages[s]]
        labels = [s for s in speakers for _ in messages[s]]
        model = _pipeline(seed)
        model.fit(texts, labels)
        return cls(speakers, model)

    def predict(self, texts: Sequence[str]) -> list[str]:
        """The most likely speaker of each text."""
        if not texts:
            return []
        return [str(label) for label in self._model.predict(list(texts))]

    def attribution(self, speaker_id: str, texts: Sequence[str]) -> float:
        """Share (0..1) of `texts` attributed to `speaker_id`; NaN when there are none."""
        if speaker_id not in self.speakers:
            raise AttributionError(f"{speaker_id!r} is not one of {self.speakers}")
        predicted = self.predict(texts)
        if not predicted:
            return math.nan
        return sum(p == speaker_id for p in predicted) / len(predicted)

    @property
    def chance(self) -> float:
        """What a classifier guessing uniformly would score."""
        return 1.0 / len(self.speakers)
