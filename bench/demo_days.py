"""The demo's continual-training act: real speakers' histories replayed as days.

Each speaker of `chitchat-dataset` becomes a user; their turns, in time order, are cut
into `days` equal slices. For each day: that day's events go into the log, then the
nightly job runs (the real `TrainingScheduler.nightly`: the tenant prior first when
enough new events arrived, then every user with enough new events), its requests handled
in this process by the real revision pipeline, and each user's revisions are printed
with the gate's decision, metrics and reasons.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from tessera.bench.chitchat import Speaker, SpeakerMessage, load_speakers
from tessera.schemas.events import PRIOR_USER_ID, EventEnvelope, EventType
from tessera.workers.pipeline import RevisionOutcome, RevisionPipeline
from tessera.workers.scheduler import ScheduleConfig, TrainingScheduler
from tessera.workers.scheduler_state import SchedulerState
from tessera.workers.training_request import TrainingRequest

_NAMESPACE: Final = uuid.UUID("0c1d5a5e-7d3a-4c4e-8f7e-6465616d6f00")
Echo = Callable[[str], None]
# Sends a day's events and returns once the log has committed them, with how many the log
# newly stored (a replayed event id is a no-op: it is not new, and not printed as new).
Ingest = Callable[[list[EventEnvelope]], int]


@dataclass
class DayReport:
    day: int
    events: int  # sent
    new_events: int  # newly stored by the log
    outcomes: list[RevisionOutcome] = field(default_factory=list)


def user_id_of(speaker: Speaker) -> str:
    return f"speaker-{speaker.speaker_id[:8]}"


def message_envelope(tenant_id: str, user_id: str, message: SpeakerMessage) -> EventEnvelope:
    """One chitchat turn as an interaction event; the id is derived from the turn, so a
    replay of the same history is idempotent."""
    event_id = uuid.uuid5(
        _NAMESPACE, f"{tenant_id}/{user_id}/{message.conversation_id}/{message.occurred_at}"
    )
    context = [{"role": t.role, "text": t.text} for t in message.context]
    if message.prompt is None:
        event_type, data = EventType.TEXT, {"text": message.text, "context": context}
    else:
        event_type = EventType.EXCHANGE
        data = {"prompt": message.prompt, "response": message.text, "context": context}
    return EventEnvelope(event_id=event_id, event_type=event_type, tenant_id=tenant_id,
                         user_id=user_id, occurred_at=message.occurred_at, data=data)


def split_days(speakers: Sequence[Speaker], *, days: int, messages_per_user: int,
               tenant_id: str) -> list[list[EventEnvelope]]:
    """Day d holds slice d of every speaker's first `messages_per_user` turns."""
    out: list[list[EventEnvelope]] = [[] for _ in range(days)]
    for speaker in speakers:
        messages = speaker.messages[:messages_per_user]
        per_day = max(1, len(messages) // days)
        for d in range(days):
            end = len(messages) if d == days - 1 else (d + 1) * per_day
            out[d].extend(message_envelope(tenant_id, user_id_of(speaker), m)
                          for m in messages[d * per_day:end])
    for day in out:
        day.sort(key=lambda e: e.occurred_at)
    return out


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def describe(outcome: RevisionOutcome) -> list[str]:
    """Lines for one revision: who, what, decision, figures, reasons."""
    who = "tenant prior" if outcome.user_id == PRIOR_USER_ID else outcome.user_id
    if outcome.outcome == "skipped":
        return [f"  {who:<18} skipped: {outcome.reasons[0]}"]
    cand, base = outcome.metrics, outcome.baseline_metrics
    lines = [
        f"  {who:<18} {outcome.revision_id}  parent={outcome.parent_revision_id or 'base'}  "
        f"-> {outcome.outcome.upper()}",
        f"  {'':<18} held-out NLL {_fmt(cand.get('user_nll'))} vs served "
        f"{_fmt(base.get('user_nll'))} ({outcome.baseline_revision_id or 'base'}); "
        f"regression {_fmt(cand.get('regression_nll'))} vs {_fmt(base.get('regression_nll'))}",
    ]
    lines += [f"  {'':<18} reason: {reason}" for reason in outcome.reasons]
    return lines


def describe_config(pipeline: RevisionPipeline) -> str:
    """One line with what decides tonight's revisions: the gate and the training recipes."""
    cfg = pipeline.config
    gate = cfg.gate
    prior, personal = cfg.train_config("prior"), cfg.train_config("personal")
    return (f"gate: gain >= {gate.min_gain:.1%} on >= {gate.min_heldout_examples} held-out "
            f"examples, regression <= {gate.max_regression:.0%}, norm <= "
            f"{gate.max_adapter_norm:g}, canaries; held out {cfg.holdout_k} per user; "
            f"prior lr {prior.lr:g} x {prior.epochs} epoch(s), personal lr {personal.lr:g} x "
            f"{personal.epochs}, rank {prior.rank}, max {prior.max_length} tokens")


def run_demo_days(
    pipeline: RevisionPipeline,
    database_url: str,
    *,
    tenant_id: str = "demo",
    users: int = 3,
    days: int = 3,
    messages_per_user: int = 60,
    schedule: ScheduleConfig | None = None,
    speakers: Sequence[Speaker] | None = None,
    ingest: Ingest | None = None,
    echo: Echo = print,
    seed: int = 0,
) -> list[DayReport]:
    """Replay `users` speakers over `days` days, run the nightly job after each, print
    every revision with the gate's decision. `ingest` sends a day's events (default:
    append them to the log directly); it must return once they are committed, with how
    many the log newly stored."""
    chosen = list(speakers) if speakers is not None else load_speakers(
        min_messages=messages_per_user, limit=users, seed=seed)
    plan = split_days(chosen, days=days, messages_per_user=messages_per_user,
                      tenant_id=tenant_id)
    schedule = schedule or ScheduleConfig(
        min_new_events=max(4, messages_per_user // days // 2),
        prior_min_new_events=max(8, messages_per_user * len(chosen) // days // 2),
        prior_wait_s=0,  # requests are handled synchronously here: nothing to wait for
    )

    def append(events: list[EventEnvelope]) -> int:
        return len(pipeline.store.append(events))

    add = ingest or append
    reports: list[DayReport] = []
    for day, events in enumerate(plan, start=1):
        new = add(events)
        report = DayReport(day, len(events), new)

        def dispatch(requests: list[TrainingRequest], report: DayReport = report) -> None:
            for request in requests:
                report.outcomes.append(pipeline.run(request.model_copy(update={"trigger": "demo"})))

        known = f" ({len(events) - new} already in the log)" if new < len(events) else ""
        echo(f"day {day}: {new} new events from {len(chosen)} users{known}; nightly job")
        TrainingScheduler(SchedulerState(database_url), dispatch, schedule).nightly(
            tenant_id=tenant_id)
        if not report.outcomes:
            echo("  nobody has enough new events tonight")
        for outcome in report.outcomes:
            for line in describe(outcome):
                echo(line)
        reports.append(report)
    promoted = sum(o.outcome == "promoted" for r in reports for o in r.outcomes)
    rejected = sum(o.outcome == "rejected" for r in reports for o in r.outcomes)
    echo(f"{days} days: {promoted} revisions promoted, {rejected} rejected")
    return reports


def run_demo_days_from_settings(
    database_url: str,
    *,
    kafka_bootstrap: str | None = None,
    tenant_id: str = "demo",
    users: int = 3,
    days: int = 3,
    messages_per_user: int = 60,
    ingest: Ingest | None = None,
    echo: Echo = print,
    train_overrides: Mapping[str, Any] | None = None,
    personal_overrides: Mapping[str, Any] | None = None,
) -> list[DayReport]:
    """`run_demo_days` with the pipeline of the process settings (base model, adapter
    store, `TESSERA_TRAIN_OVERRIDES`, ...), `train_overrides` and `personal_overrides`
    applied on top (a demo on two CPU cores may want shorter examples). With
    `kafka_bootstrap`, promotions are also published on `tessera.revisions`, so a running
    inference server hot-swaps them."""
    from tessera.schemas.settings import get_settings
    from tessera.workers.runtime import open_pipeline

    settings = get_settings()
    if train_overrides:
        merged = {**settings.train_overrides, **train_overrides}
        settings = settings.model_copy(update={"train_overrides": merged})
    if personal_overrides:
        merged = {**settings.personal_train_overrides, **personal_overrides}
        settings = settings.model_copy(update={"personal_train_overrides": merged})
    echo(f"loading the base model ({settings.base_model or 'SmolLM2-135M-Instruct'})")
    with open_pipeline(settings, database_url=database_url, bootstrap=kafka_bootstrap,
                       progress=True) as pipeline:
        echo(describe_config(pipeline))
        return run_demo_days(pipeline, database_url, tenant_id=tenant_id, users=users,
                             days=days, messages_per_user=messages_per_user, ingest=ingest,
                             echo=echo)
