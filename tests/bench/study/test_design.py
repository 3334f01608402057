"""The study's time split: the test set is the most recent messages and never sent."""

from __future__ import annotations

import pytest

from tessera.bench.study.design import (
    StudyDesignError,
    build_design,
    choose_speakers,
    examples_of,
    split_speaker,
)

from .conftest import STYLES, general_set, synthetic_speaker


def test_split_holds_out_the_most_recent_messages_and_cuts_days_in_order() -> None:
    speaker = synthetic_speaker("alice", 50)
    split = split_speaker(speaker, days=3, max_train=30, max_test=6, test_fraction=0.2)
    assert split.test == speaker.messages[-6:]  # min(6, 20% of 50 = 10)
    assert split.history == speaker.messages[-36:-6]  # the 30 just before the test
    assert [len(d) for d in split.days] == [10, 10, 10]
    assert max(m.occurred_at for m in split.history) < min(m.occurred_at for m in split.test)


def test_uneven_days_and_ingest_items_are_deterministic() -> None:
    split = split_speaker(synthetic_speaker("bob", 12), days=3, max_train=100, max_test=2,
                          test_fraction=0.2)
    assert [len(d) for d in split.days] == [4, 3, 3]
    first = split.ingest_items("t1", 1)
    assert first == split.ingest_items("t1", 1)
    assert first[0]["event_id"] != split.ingest_items("t2", 1)[0]["event_id"]
    assert {i["user_id"] for i in first} == {"bob"} and first[0]["response"] == STYLES["bob"]


def test_too_short_history_is_a_clear_error() -> None:
    with pytest.raises(StudyDesignError, match="too few for 5 days"):
        build_design([synthetic_speaker("alice", 4)], general_set(), days=5, max_train=10,
                     max_test=1)


def test_examples_render_like_the_pipeline() -> None:
    examples = examples_of(synthetic_speaker("alice", 4).messages, "alice")
    assert [e.target for e in examples] == [STYLES["alice"]] * 4
    assert examples[1].messages[0] == ("user", "Hello there.")  # the other person's turn
    assert examples[1].messages[-1][0] == "user"  # the prompt they answered


def test_earlier_runs_speakers_can_be_excluded_from_a_choice() -> None:
    # chitchat-dataset's real speakers: the seed-2 choice, minus those seeds 0 and 1 chose
    def ids(seed: int, n: int, exclude: tuple[tuple[int, int], ...] = ()) -> list[str]:
        return [s.speaker_id for s in choose_speakers(
            speaker_ids=None, n_speakers=n, min_messages=400, seed=seed, max_chars=None,
            exclude_choices=exclude)]

    earlier = set(ids(0, 4)) | set(ids(1, 8))
    fresh = ids(2, 8, ((0, 4), (1, 8)))
    assert len(set(fresh)) == 8 and not earlier & set(fresh)
    # the same order as seed 2's own choice, with the earlier speakers skipped
    seed2 = ids(2, 20)
    assert fresh == [s for s in seed2 if s not in earlier][:8]
    with pytest.raises(StudyDesignError, match="not excluded"):
        ids(2, 50, ((0, 4), (1, 8)))
