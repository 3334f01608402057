"""The gate's repetition canary: a candidate may not loop phrases more than its baseline.

`evaluator.degenerate_reason` catches one token repeated many times and tiny character
loops, but a model that learned to say "I did a lot of things. I did a lot of things."
passes it: six distinct words, no long run of one token. A loop is a stretch of words that
repeats the words right before it: "things. I did a lot of things" repeats its own last 6
words. What the canary measures is the longest such stretch (`loop_length`); it counts as
a loop when it covers the unit at least twice over (a word said three times in a row, "we
go we go we go") or, for longer units, at least 5 words.

Why not the study's repeated word 3-grams (workers/repetition.py): a person's parallel
phrasing ("I'm a math teacher. I'm a math student.") repeats two 3-grams and 4 words of the
sentence before it, then says something new, and the 3-gram count refused 3 of the bound
run's 5 candidates on such answers, all better on their user's test set (bench/README.md,
"Issue #14's canary"). A sentence said again, or a loop cut off by the canary's token
limit ("I'm a helpful AI assistant named SmolLM. I'm a helpful AI"), repeats 5 or more.

The length is compared with the baseline's generation for the same canary prompt, because
a base model (or the served head) may already loop a little in a short greedy answer: only
what the candidate adds says something about the candidate.
"""

from __future__ import annotations

from collections.abc import Sequence

from tessera.workers.repetition import words

LONG_UNIT_LOOP = 5  # words a unit of 3+ words must be repeated over to count as a loop


def loop_length(text: str) -> int:
    """The most words of `text` (lowercase words, punctuation ignored) that repeat the
    words right before them, counted only where that is a loop (see the module doc): 6 for
    "I did a lot of things. I did a lot of things.", 0 for "I'm a math teacher. I'm a math
    student.", 2 for "the the the"."""
    tokens = words(text)
    longest = 0
    for period in range(1, len(tokens)):
        run = 0
        for i in range(period, len(tokens)):
            run = run + 1 if tokens[i] == tokens[i - period] else 0
            if run >= min(LONG_UNIT_LOOP, 2 * period):
                longest = max(longest, run)
    return longest


def repetition_failures(
    prompts: Sequence[str],
    candidate_outputs: Sequence[str],
    baseline_outputs: Sequence[str],
    *,
    max_extra: int,
    skip: frozenset[str] = frozenset(),
) -> list[str]:
    """One reason per canary whose candidate generation loops more than `max_extra` words
    longer than the baseline's generation for the same prompt. Prompts in `skip` (already
    reported as degenerate) are not reported twice. A baseline without generations
    (canaries off) counts as looping nothing."""
    reasons = []
    for i, output in enumerate(candidate_outputs):
        prompt = prompts[i] if i < len(prompts) else f"canary #{i + 1}"
        if prompt in skip:
            continue
        mine = loop_length(output)
        theirs = loop_length(baseline_outputs[i]) if i < len(baseline_outputs) else 0
        if mine - theirs > max_extra:
            reasons.append(
                f"repetitive canary {prompt!r}: a loop of {mine} words vs the baseline's "
                f"{theirs} (more than {max_extra} longer allowed) in {output[:60]!r}"
            )
    return reasons
