"""Warnings the demo's side-by-side prints about its own answers (issue #14).

Personal models are meant to answer each in their user's way; two users whose personal
answers are word for word the same, or an answer stuck in a loop ("I did a lot of things.
I did a lot of things."), say the demo is not showing that, so it says so instead of
letting the transcript pass for a success.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from tessera.workers.repetition import repeated_ngrams


@dataclass(frozen=True)
class Answer:
    label: str  # who answered, as the demo prints it
    revision: str  # the revision that answered ("base" for the base model)
    text: str
    personal: bool  # a demo user's answer (not the base model's)


def side_by_side_warnings(answers: Sequence[Answer]) -> list[str]:
    """One line per problem: users whose personal answers are identical (compared after
    trimming whitespace), then answers that repeat a word 3-gram."""
    lines: list[str] = []
    same: dict[str, list[Answer]] = defaultdict(list)
    for a in answers:
        if a.personal:
            same[a.text.strip()].append(a)
    for text, group in same.items():
        if len(group) < 2:
            continue
        who = ", ".join(a.label for a in group)
        revisions = {a.revision for a in group}
        why = f" (all served {revisions.pop()})" if len(revisions) == 1 else ""
        lines.append(f"warning: {who} gave the same answer{why}: {text!r}")
    for a in answers:
        gram = next(repeated_ngrams(a.text, 3), None)
        if gram is not None:
            lines.append(f"warning: {a.label}'s answer repeats the words {' '.join(gram)!r}")
    return lines
