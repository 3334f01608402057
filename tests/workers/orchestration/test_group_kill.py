"""`kill -9` of a trainer while it trains a night's group: the restarted trainer gets the
uncommitted group again and every user of the group ends with exactly one decided
revision (none lost, none twice)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tessera.events.postgres_store import PostgresEventStore
from tessera.schemas.events import EventType
from tessera.workers.scheduler import ScheduleConfig, TrainingScheduler
from tessera.workers.scheduler_state import SchedulerState
from tessera.workers.train_worker import send_requests
from tessera.workers.training_request import TrainingGroup, TrainingRequest

from .conftest import TENANT, exchanges
from .test_train_worker import Worker, _wait
from .test_train_worker import worker_env as worker_env  # the same trainer settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

USERS = ("alice", "bob", "carol")


def _send_night(env: dict[str, str], database_url: str) -> TrainingGroup:
    """The real nightly job with K = 3, sending to the trainers' topic."""
    bootstrap, topic = env["TESSERA_KAFKA_BOOTSTRAP"], env["TESSERA_TOPIC_TRAINING_REQUESTS"]
    groups: list[TrainingGroup] = []

    def send_groups(sent: list[TrainingGroup]) -> None:
        send_requests(bootstrap, topic, sent)
        groups.extend(sent)

    def send_singles(sent: list[TrainingRequest]) -> None:
        raise AssertionError(f"expected one group, not single requests: {sent}")

    config = ScheduleConfig(min_new_events=20, prior_min_new_events=1_000_000, prior_wait_s=0,
                            group_size=3)
    TrainingScheduler(SchedulerState(database_url), send_singles, config,
                      send_groups=send_groups).nightly(tenant_id=TENANT)
    (group,) = groups
    return group


@pytest.mark.timeout(1800)
def test_trainer_killed_mid_group_gives_each_user_exactly_one_outcome(
    worker_env: dict[str, str], database_url: str, tmp_path: Path,
) -> None:
    with PostgresEventStore(database_url) as store:
        for user in USERS:
            store.append(exchanges(user, 30))
    first = Worker("first", worker_env, tmp_path)
    restarted: Worker | None = None
    try:
        _wait(lambda: first.owns_partition(), 300, "the trainer to join")
        group = _send_night(worker_env, database_url)
        assert [m.user_id for m in group.members] == list(USERS)
        _wait(lambda: first.saw("group training started"), 300, "the group to start training")
        time.sleep(1.0)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
        with PostgresEventStore(database_url) as store:
            assert all(store.list_revisions(TENANT, u) == [] for u in USERS)  # mid-training

        restarted = Worker("restarted", worker_env, tmp_path)
        restarted.proc.wait(900)  # --max-requests 1: exits once it handled the group
        assert restarted.proc.returncode == 0, restarted.log_path.read_text()[-3000:]
        assert restarted.saw("group training started")
    finally:
        for w in (first, restarted):
            if w is not None:
                w.stop()

    with PostgresEventStore(database_url) as store:
        for slot, user in enumerate(USERS):
            revisions = store.list_revisions(TENANT, user)
            trained = store.read(tenant_id=TENANT, user_id=user,
                                 event_types=[EventType.REVISION_TRAINED])
            decisions = store.read(tenant_id=TENANT, user_id=user,
                                   event_types=[EventType.REVISION_PROMOTED,
                                                EventType.REVISION_REJECTED])
            assert len(revisions) == len(trained) == len(decisions) == 1, user
            (row,) = revisions
            assert row.state in ("promoted", "rejected") and row.reasons
            assert row.dataset_to == group.members[slot].up_to_position
            recorded = row.provenance["hyperparameters"]["group"]
            assert (recorded["group_id"], recorded["slot"]) == (group.group_id, slot)
