"""`tessera worker schedule`: when to ask for new revisions.

Two triggers, both sending `TrainingRequest`s through a `Dispatch` (Kafka in production,
in-process in the demo):
- nightly (cron, time-zone aware): first a new tenant prior for every tenant with enough
  new events, or whose served prior learned from a user forgotten since (and a bounded
  wait for it to be decided, so first personal revisions start from it), then the night's
  plan (workers/night_schedule.py): users with at least N new events since their last
  revision, ordered, within the night's budget fairly across tenants, sent alone or in
  groups of K (`TrainingGroup`, through `send_groups`);
- threshold (polled): a user passing M new events is requested at once.

A nightly slot runs once. Slots are claimed in PostgreSQL with a conditional UPDATE
(`SchedulerState.claim_slot`), so after downtime every missed slot collapses into one
run at start (coalesced), a restart never repeats a slot, and two schedulers never both
run it. APScheduler only supplies the wake-ups; correctness lives in the claim.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from tessera.schemas.settings import Settings
from tessera.workers.night_plan import PlanConfig
from tessera.workers.night_schedule import config_key, plan_requests
from tessera.workers.scheduler_state import Due, SchedulerState
from tessera.workers.training_request import TrainingGroup, TrainingRequest, Trigger

log = logging.getLogger(__name__)

NIGHTLY_JOB = "nightly"
Dispatch = Callable[[list[TrainingRequest]], None]
GroupDispatch = Callable[[list[TrainingGroup]], None]
_MAX_SLOTS_SCANNED = 100_000  # bounds the catch-up scan after very long downtime


@dataclass(frozen=True)
class ScheduleConfig:
    cron: str = "0 2 * * *"
    timezone: str = "UTC"
    min_new_events: int = 20  # N
    threshold_new_events: int = 200  # M
    threshold_check_every_s: float = 60.0
    prior_min_new_events: int = 200
    prior_wait_s: float = 3600.0
    prior_poll_s: float = 2.0
    # the night's plan: K, budget (None: none), cost estimate, which training config
    group_size: int = 1
    max_users: int | None = None
    max_seconds: float | None = None
    seconds_per_user: float = 30.0
    seconds_per_event: float = 0.5
    config_key: str = "default"

    @property
    def plan(self) -> PlanConfig:
        """The planner's config (N, K, budget) for the nightly users."""
        return PlanConfig(
            min_new_events=self.min_new_events, max_users=self.max_users,
            max_seconds=self.max_seconds, seconds_per_user=self.seconds_per_user,
            seconds_per_event=self.seconds_per_event, group_size=self.group_size)

    @classmethod
    def from_settings(cls, settings: Settings) -> ScheduleConfig:
        return cls(
            cron=settings.nightly_cron,
            timezone=settings.scheduler_timezone,
            min_new_events=settings.nightly_min_new_events,
            threshold_new_events=settings.threshold_new_events,
            threshold_check_every_s=settings.threshold_check_every_s,
            prior_min_new_events=settings.prior_min_new_events,
            prior_wait_s=settings.prior_wait_s,
            group_size=settings.night_group_size,
            max_users=settings.night_max_users,
            max_seconds=settings.night_max_seconds,
            seconds_per_user=settings.night_seconds_per_user,
            seconds_per_event=settings.night_seconds_per_event,
            config_key=config_key(settings.train_overrides, settings.personal_train_overrides),
        )

    def trigger(self) -> CronTrigger:
        """The nightly cron in its time zone; raises ValueError naming a bad field."""
        return CronTrigger.from_crontab(self.cron, timezone=ZoneInfo(self.timezone))


def _requests(due: list[Due], trigger: Trigger) -> list[TrainingRequest]:
    return [
        TrainingRequest(
            tenant_id=d.tenant_id, user_id=d.user_id, up_to_position=d.up_to_position,
            trigger=trigger,
        )
        for d in due
    ]


class TrainingScheduler:
    """Decides what to train and when; `dispatch` sends the requests, `send_groups` the
    night's groups (needed when `config.group_size` > 1)."""

    def __init__(
        self,
        state: SchedulerState,
        dispatch: Dispatch,
        config: ScheduleConfig,
        *,
        send_groups: GroupDispatch | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if config.group_size > 1 and send_groups is None:
            raise ValueError(f"group_size {config.group_size} needs send_groups to send groups")
        self._state = state
        self._dispatch = dispatch
        self._send_groups = send_groups
        self._config = config
        self._trigger = config.trigger()
        self._clock = clock
        self._stop = threading.Event()

    # --- the nightly job --------------------------------------------------------------

    def latest_due_slot(self, last_slot: datetime, now: datetime) -> datetime | None:
        """The latest cron slot in `(last_slot, now]`, or None when none fell due."""
        due: datetime | None = None
        cursor = last_slot
        for _ in range(_MAX_SLOTS_SCANNED):
            nxt = self._trigger.get_next_fire_time(cursor, cursor + timedelta(microseconds=1))
            if nxt is None or nxt > now:
                break
            due, cursor = nxt, nxt
        return due

    def run_nightly_if_due(self) -> bool:
        """Run the nightly job once if a slot fell due since the last claimed one (any
        number of missed slots count as one). True when this call ran it."""
        now = self._clock()
        # First start ever: nothing was missed, start counting from now.
        last = self._state.init_job(NIGHTLY_JOB, now)
        slot = self.latest_due_slot(last, now)
        if slot is None or not self._state.claim_slot(NIGHTLY_JOB, slot):
            return False
        log.info("nightly run for slot %s (last run slot %s)", slot.isoformat(), last.isoformat())
        sent = self.nightly()
        self._state.finish(NIGHTLY_JOB, len(sent))
        return True

    def nightly(self, *, tenant_id: str | None = None) -> list[TrainingRequest]:
        """Request priors that have enough new events, wait (bounded) for them to be
        decided, then the users of tonight's plan (at least N new events, within budget),
        alone or in groups of K."""
        priors = _requests(
            self._state.priors_due(self._config.prior_min_new_events, tenant_id=tenant_id),
            "nightly",
        )
        self._send(priors)
        self._wait_for(priors)
        night = plan_requests(self._state, self._config.plan, key=self._config.config_key,
                              trigger="nightly", tenant_id=tenant_id)
        self._send(night.singles)
        if night.groups and self._send_groups is not None:
            self._send_groups(night.groups)
            # As `_send`: recorded after the send, a re-send is a no-op per member.
            self._record([m for g in night.groups for m in g.members])
        return priors + night.requests

    def _wait_for(self, requests: list[TrainingRequest]) -> None:
        deadline = time.monotonic() + self._config.prior_wait_s
        pending = list(requests)
        while pending:
            pending = [
                r for r in pending
                if not self._state.decided(r.tenant_id, r.user_id, r.up_to_position)
            ]
            if not pending:
                return
            if time.monotonic() >= deadline or self._stop.wait(self._config.prior_poll_s):
                log.warning(
                    "priors not decided in time, training users anyway: %s",
                    [r.tenant_id for r in pending],
                )
                return

    # --- the threshold trigger --------------------------------------------------------

    def threshold_check(self) -> list[TrainingRequest]:
        """Request every user with at least M new events since their last revision or
        request (a user is requested once per batch of M new events)."""
        requests = _requests(self._state.users_due(self._config.threshold_new_events), "threshold")
        self._send(requests)
        return requests

    # --- plumbing ---------------------------------------------------------------------

    def _send(self, requests: list[TrainingRequest]) -> None:
        if not requests:
            return
        self._dispatch(requests)
        # Recorded after the send: a crash in between re-sends, which is harmless because
        # the pipeline skips a (user, position) that already has a revision.
        self._record(requests)

    def _record(self, requests: list[TrainingRequest]) -> None:
        self._state.record_requests(requests)
        for r in requests:
            log.info(
                "requested training up to %d (%s)", r.up_to_position, r.trigger,
                extra={"tenant_id": r.tenant_id, "user_id": r.user_id},
            )

    def stop(self) -> None:
        self._stop.set()

    def install(self, scheduler: BaseScheduler) -> None:
        """Add the nightly cron and the threshold poll to an APScheduler scheduler. The
        cron job only wakes `run_nightly_if_due`; the claim decides whether it runs."""
        scheduler.add_job(
            self.run_nightly_if_due, self._trigger, id=NIGHTLY_JOB, coalesce=True,
            max_instances=1, misfire_grace_time=None, replace_existing=True,
        )
        scheduler.add_job(
            self.threshold_check,
            IntervalTrigger(seconds=self._config.threshold_check_every_s),
            id="threshold", coalesce=True, max_instances=1, replace_existing=True,
        )
        # Catch up at once on a slot missed while down (runs once, in the pool).
        scheduler.add_job(self.run_nightly_if_due, id="catch-up", max_instances=1)
