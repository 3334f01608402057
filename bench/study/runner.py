"""Drive the real system through the study's simulated days and nights.

Each day, every speaker's messages of that day go through the ingest API (`Ingest`, given
by the caller: the HTTP client lives in `services`); the runner waits until PostgreSQL has
committed them, then runs the scheduler's nightly job (`TrainingScheduler.nightly`): the
tenant prior first, then every speaker with new events, each request handled by the
revision pipeline (train warm-started from head/prior, gate, promote or reject). After
each night it records what every speaker is served (`served_revision`, the function
serving uses) and the tenant prior's head.

One tenant per configuration (e.g. per rank of the sweep), named uniquely per run, so a
study never sees another run's events in a shared database.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tessera.bench.study.design import StudyDesign
from tessera.events.catalog import ServedRevision, served_revision
from tessera.events.log_reads import PostgresLogReads
from tessera.schemas.events import INTERACTION_TYPES, PRIOR_USER_ID
from tessera.workers.pipeline import RevisionOutcome, RevisionPipeline
from tessera.workers.scheduler import ScheduleConfig, TrainingScheduler
from tessera.workers.scheduler_state import SchedulerState
from tessera.workers.training_request import TrainingRequest

log = logging.getLogger(__name__)

_INTERACTIONS = sorted(str(t) for t in INTERACTION_TYPES)
# After a night, every speaker with new events is requested: the study's nights are the
# product's nights, only with the thresholds at their floor.
STUDY_SCHEDULE = ScheduleConfig(min_new_events=1, prior_min_new_events=1, prior_wait_s=0.0)


class Ingest(Protocol):
    """Sends API items of one tenant through the real ingest path; returns how many the
    server accepted."""

    def send(self, tenant_id: str, items: list[dict[str, Any]]) -> int: ...


class CommitTimeout(RuntimeError):
    """The event log did not commit what the API accepted in time (is the worker up?)."""


@dataclass
class NightRecord:
    """What one night did and what everyone is served afterwards."""

    night: int  # 1-based
    outcomes: list[RevisionOutcome] = field(default_factory=list)
    served: dict[str, ServedRevision] = field(default_factory=dict)  # speaker -> model
    prior: ServedRevision = field(default_factory=lambda: ServedRevision(None, None, "base"))
    seconds: float = 0.0

    def outcomes_of(self, user_id: str) -> list[RevisionOutcome]:
        return [o for o in self.outcomes if o.user_id == user_id]


@dataclass
class Replay:
    tenant_id: str
    nights: list[NightRecord]
    ingest_seconds: float = 0.0


def count_interactions(database_url: str, tenant_id: str) -> int:
    """Interaction events of `tenant_id` committed in the log."""
    with PostgresLogReads(database_url) as reads:
        return reads.count_events(tenant_id, event_types=_INTERACTIONS)


def wait_committed(database_url: str, tenant_id: str, expected: int, *,
                   timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    committed = 0
    while time.monotonic() < deadline:
        committed = count_interactions(database_url, tenant_id)
        if committed >= expected:
            return
        time.sleep(0.3)
    raise CommitTimeout(f"{committed} of {expected} events of {tenant_id} committed after "
                        f"{timeout_s:.0f} s; is `tessera worker ingest` running?")


def replay(
    design: StudyDesign,
    *,
    tenant_id: str,
    ingest: Ingest,
    pipeline: RevisionPipeline,
    database_url: str,
    schedule: ScheduleConfig = STUDY_SCHEDULE,
    on_night: Callable[[NightRecord], None] | None = None,
    batch_size: int = 250,
) -> Replay:
    """Send each day's messages, then run the nightly job; one `NightRecord` per night."""
    state = SchedulerState(database_url)
    result = Replay(tenant_id, [])
    sent = 0
    for day in range(design.days):
        started = time.perf_counter()
        items = [item for s in design.speakers for item in s.ingest_items(tenant_id, day)]
        for i in range(0, len(items), batch_size):
            accepted = ingest.send(tenant_id, items[i : i + batch_size])
            if accepted != len(items[i : i + batch_size]):
                raise RuntimeError(f"the ingest API accepted {accepted} of "
                                   f"{len(items[i : i + batch_size])} events of {tenant_id}")
        sent += len(items)
        wait_committed(database_url, tenant_id, sent)
        result.ingest_seconds += time.perf_counter() - started

        record = NightRecord(day + 1)
        started = time.perf_counter()

        def dispatch(requests: list[TrainingRequest], record: NightRecord = record) -> None:
            # In-process dispatch (as the demo does): each request is decided before the
            # next is sent, so the prior is promoted before personal revisions start.
            record.outcomes.extend(pipeline.run(r) for r in requests)

        TrainingScheduler(state, dispatch, schedule).nightly(tenant_id=tenant_id)
        record.seconds = time.perf_counter() - started
        record.served = {s.speaker_id: served_revision(pipeline.store, tenant_id, s.speaker_id)
                         for s in design.speakers}
        record.prior = served_revision(pipeline.store, tenant_id, PRIOR_USER_ID)
        log.info("night %d of %s: %s", record.night, tenant_id,
                 _outcome_counts(record.outcomes))
        result.nights.append(record)
        if on_night is not None:
            on_night(record)
    return result


def _outcome_counts(outcomes: Sequence[RevisionOutcome]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.outcome] = counts.get(o.outcome, 0) + 1
    return counts
