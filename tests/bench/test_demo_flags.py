"""The demo's side-by-side flags identical personal answers and answers that loop."""

from __future__ import annotations

from tessera.bench.demo_flags import Answer, side_by_side_warnings

LOOP = "I did a lot of things. I did a lot of things."


def test_the_issue_14_transcript_is_flagged_twice_over() -> None:
    """What `make demo` printed before issue #14: both users, the same looping answer."""
    answers = [
        Answer("base model", "base", "I went hiking with friends.", personal=False),
        Answer("alice", "rev-a2", LOOP, personal=True),
        Answer("bob", "rev-b1", f"  {LOOP}\n", personal=True),
    ]
    assert side_by_side_warnings(answers) == [
        f"warning: alice, bob gave the same answer: {LOOP!r}",
        "warning: alice's answer repeats the words 'i did a'",
        "warning: bob's answer repeats the words 'i did a'",
    ]


def test_distinct_answers_that_do_not_loop_pass() -> None:
    answers = [
        Answer("base model", "base", "I went hiking.", personal=False),
        Answer("alice", "rev-a2", "Baked bread and read a book.", personal=True),
        Answer("bob", "rev-b1", "Watched the match, then slept.", personal=True),
        # the same 3 words apart from case and punctuation are still one 3-gram twice
        Answer("cyd", "rev-c1", "See you soon. see you, soon!", personal=True),
    ]
    assert side_by_side_warnings(answers) == [
        "warning: cyd's answer repeats the words 'see you soon'"
    ]


def test_the_base_model_is_not_a_user_and_a_shared_revision_is_named() -> None:
    answers = [
        Answer("base model", "base", "Nothing much.", personal=False),
        Answer("alice", "rev-prior-3", "Nothing much.", personal=True),  # same as base: fine
        Answer("bob", "rev-prior-3", "Went out.", personal=True),
        Answer("cyd", "rev-prior-3", "Went out.", personal=True),
        Answer("dan", "rev-d1", "Went out. ", personal=True),
    ]
    assert side_by_side_warnings(answers) == [
        "warning: bob, cyd, dan gave the same answer: 'Went out.'"
    ]
    two = [a for a in answers if a.label in ("bob", "cyd")]
    assert side_by_side_warnings(two) == [
        "warning: bob, cyd gave the same answer (all served rev-prior-3): 'Went out.'"
    ]
