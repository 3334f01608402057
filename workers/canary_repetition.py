"""The gate's repetition canary: a candidate may not loop phrases more than its baseline.

`evaluator.degenerate_reason` catches one token repeated and tiny character loops, but a
model that learned to say "I did a lot of things. I did a lot of things." passes it: six
distinct words, no run of one token. Repeated word 3-grams catch that loop (the study's
measure, workers/repetition.py, flags the same replies). The count is compared with the
baseline's generation for the same canary prompt, because a base model (or the served
head) may already repeat a little in a short greedy answer: only what the candidate adds
says something about the candidate.
"""

from __future__ import annotations

from collections.abc import Sequence

from tessera.workers.repetition import repeated_word_ngrams


def repeated_trigrams(text: str) -> int:
    """How many of `text`'s word 3-grams (lowercased) already occurred earlier in it:
    "I did a lot of things. I did a lot of things." has 4 (the study's count, so the gate
    and the study flag the same replies)."""
    return repeated_word_ngrams(text, 3)


def repetition_failures(
    prompts: Sequence[str],
    candidate_outputs: Sequence[str],
    baseline_outputs: Sequence[str],
    *,
    max_extra: int,
    skip: frozenset[str] = frozenset(),
) -> list[str]:
    """One reason per canary whose candidate generation repeats more than `max_extra`
    word 3-grams beyond the baseline's generation for the same prompt. Prompts in `skip`
    (already reported as degenerate) are not reported twice. A baseline without
    generations (canaries off) counts as repeating nothing."""
    reasons = []
    for i, output in enumerate(candidate_outputs):
        prompt = prompts[i] if i < len(prompts) else f"canary #{i + 1}"
        if prompt in skip:
            continue
        mine = repeated_trigrams(output)
        theirs = repeated_trigrams(baseline_outputs[i]) if i < len(baseline_outputs) else 0
        if mine - theirs > max_extra:
            reasons.append(
                f"repetitive canary {prompt!r}: {mine} repeated word 3-grams vs baseline "
                f"{theirs} (more than {max_extra} extra allowed) in {output[:60]!r}"
            )
    return reasons
