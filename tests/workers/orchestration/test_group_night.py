"""A night in groups on the tiny model: the scheduler plans and sends a group of K users,
the trainer trains them in one pass and gates each alone, with each revision's own
provenance plus its group; a crash mid-group resumes to exactly one outcome per user, and
re-training the group reproduces a member's digest."""

from __future__ import annotations

import pytest

from tessera.events.catalog import served_revision
from tessera.events.postgres_store import PostgresEventStore
from tessera.schemas.events import EventType
from tessera.workers import group_night
from tessera.workers.group_night import handle_message, run_group
from tessera.workers.group_trainer import train_group
from tessera.workers.pipeline import RevisionOutcome, RevisionPipeline
from tessera.workers.reproduce import reproduce_revision
from tessera.workers.scheduler import ScheduleConfig, TrainingScheduler
from tessera.workers.scheduler_state import SchedulerState
from tessera.workers.training_request import TrainingGroup, TrainingRequest

from .conftest import TENANT, exchanges

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GROUP = ("alice", "bob")


def _night(store: PostgresEventStore, database_url: str
           ) -> tuple[list[TrainingRequest], list[TrainingGroup]]:
    """Three users with new events, one without enough; the nightly job with K = 2."""
    store.append(exchanges("alice", 20) + exchanges("bob", 20) + exchanges("carol", 16)
                 + exchanges("dave", 5))
    singles: list[TrainingRequest] = []
    groups: list[TrainingGroup] = []
    config = ScheduleConfig(min_new_events=10, prior_min_new_events=10_000, prior_wait_s=0,
                            group_size=2)
    TrainingScheduler(SchedulerState(database_url), singles.extend, config,
                      send_groups=groups.extend).nightly()
    return singles, groups


@pytest.mark.timeout(1800)  # two group trainings and a reproduction, on 2 busy cores
def test_a_night_in_groups_crash_resumed_provenance_reproduced(
    pg_store: PostgresEventStore, pipeline: RevisionPipeline, database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    singles, groups = _night(pg_store, database_url)
    # dave (5 < 10 new events) is skipped; alice and bob (most events) share a group,
    # carol is left alone and sent as a plain request.
    assert [r.user_id for r in singles] == ["carol"]
    (group,) = groups
    assert [m.user_id for m in group.members] == list(GROUP)
    assert all(m.trigger == "nightly" for m in group.members)

    # The trainer dies after deciding the first member: the other is recorded, undecided.
    real_decide = pipeline.decide
    decided: list[str] = []

    def decide_then_crash(*args: object, **kwargs: object) -> RevisionOutcome:
        if decided:
            raise RuntimeError("trainer lost mid-group")
        outcome = real_decide(*args, **kwargs)  # type: ignore[arg-type]
        decided.append(outcome.user_id)
        return outcome

    monkeypatch.setattr(pipeline, "decide", decide_then_crash)
    with pytest.raises(RuntimeError, match="mid-group"):
        handle_message(pipeline, group)
    assert {u: [r.state for r in pg_store.list_revisions(TENANT, u)] for u in GROUP} == \
        {"alice": ["promoted"], "bob": ["trained"]}

    # Redelivered: alice is skipped, bob's recorded candidate decided without retraining.
    monkeypatch.setattr(pipeline, "decide", real_decide)

    def no_training(*_: object, **__: object) -> None:
        raise AssertionError("recorded candidates must be resumed, not retrained")

    monkeypatch.setattr(group_night, "train_group", no_training)
    assert [o.outcome for o in run_group(pipeline, group)] == ["skipped", "promoted"]
    monkeypatch.setattr(group_night, "train_group", train_group)

    for slot, member in enumerate(group.members):
        (row,) = pg_store.list_revisions(TENANT, member.user_id)
        assert row.state == "promoted" and row.dataset_to == member.up_to_position
        served = served_revision(pg_store, TENANT, member.user_id)
        assert (served.source, served.revision_id) == ("personal", row.revision_id)
        for kinds in ([EventType.REVISION_TRAINED],
                      [EventType.REVISION_PROMOTED, EventType.REVISION_REJECTED]):
            assert len(pg_store.read(tenant_id=TENANT, user_id=member.user_id,
                                     event_types=kinds)) == 1
        hyper = row.provenance["hyperparameters"]
        assert hyper["dataset"]["user_id"] == member.user_id  # its own data and seed
        assert row.provenance["seed"] == pipeline.config.seed
        recorded = hyper["group"]
        assert (recorded["group_id"], recorded["size"], recorded["slot"]) == \
            (group.group_id, 2, slot)
        assert [m["user_id"] for m in recorded["members"]] == list(GROUP)
        assert recorded["members"][slot]["dataset_digest"] == row.dataset_digest
    assert pg_store.list_revisions(TENANT, "dave") == []

    # Delivered once more: nothing is trained or appended again.
    position = pg_store.head_position()
    assert [o.outcome for o in run_group(pipeline, group)] == ["skipped", "skipped"]
    assert pg_store.head_position() == position

    # A group-trained revision is reproduced by re-training its group from provenance.
    bob = pg_store.list_revisions(TENANT, "bob")[0]
    reproduced = reproduce_revision(pipeline, bob.revision_id)
    assert reproduced.dataset_matches and reproduced.adapter_matches
