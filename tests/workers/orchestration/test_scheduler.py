"""The nightly job runs once per slot: missed slots coalesce, restarts never repeat."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from tessera.workers.scheduler import NIGHTLY_JOB, ScheduleConfig, TrainingScheduler
from tessera.workers.scheduler_state import SchedulerState
from tessera.workers.training_request import TrainingRequest

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 22, 21, 0, tzinfo=UTC)


class CountingScheduler(TrainingScheduler):
    """Counts nightly runs; everything else (claims, slots, APScheduler) is real."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.runs = 0
        self._lock = threading.Lock()

    def nightly(self, *, tenant_id: str | None = None) -> list[TrainingRequest]:
        with self._lock:
            self.runs += 1
        time.sleep(0.2)  # widen the window in which a second claimer could slip in
        return []


def _scheduler(url: str, tz: str = "Europe/Paris") -> CountingScheduler:
    config = ScheduleConfig(cron="0 2 * * *", timezone=tz)
    return CountingScheduler(SchedulerState(url), lambda _: None, config, clock=lambda: NOW)


def test_missed_slots_since_last_run_are_coalesced_into_one(database_url: str) -> None:
    state = SchedulerState(database_url)
    state.init_job(NIGHTLY_JOB, NOW - timedelta(days=3))  # down for three nights
    sched = _scheduler(database_url)
    background = BackgroundScheduler(timezone="UTC")
    sched.install(background)
    background.start()
    try:
        deadline = time.monotonic() + 10
        while sched.runs == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        background.shutdown(wait=True)
    assert sched.runs == 1
    # The claimed slot is the latest missed one: 02:00 Paris time today = 01:00 UTC.
    assert state.last_slot(NIGHTLY_JOB) == datetime(2026, 11, 22, 1, 0, tzinfo=UTC)
    # A restart (a fresh scheduler, same clock) finds nothing due.
    again = _scheduler(database_url)
    assert again.run_nightly_if_due() is False
    assert again.runs == 0


def test_two_schedulers_racing_for_a_missed_slot_run_it_once(database_url: str) -> None:
    SchedulerState(database_url).init_job(NIGHTLY_JOB, NOW - timedelta(days=1))
    a, b = _scheduler(database_url), _scheduler(database_url)
    results: list[bool] = []
    threads = [
        threading.Thread(target=lambda s=s: results.append(s.run_nightly_if_due())) for s in (a, b)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(results) == [False, True]
    assert a.runs + b.runs == 1


def test_first_start_does_not_invent_a_missed_run(database_url: str) -> None:
    sched = _scheduler(database_url)
    assert sched.run_nightly_if_due() is False
    assert SchedulerState(database_url).last_slot(NIGHTLY_JOB) == NOW


def test_slots_follow_the_time_zone(database_url: str) -> None:
    sched = _scheduler(database_url, tz="America/New_York")
    slot = sched.latest_due_slot(NOW - timedelta(days=1), NOW)
    # 02:00 in New York (EST, UTC-5) on Nov 22 is 07:00 UTC.
    assert slot == datetime(2026, 11, 22, 7, 0, tzinfo=UTC)
