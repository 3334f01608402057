"""Audit queries over the event log and its projections, independent of any transport.

Three questions, each answered from one snapshot of the store (events/audit_reads.py:
one read-only transaction on PostgreSQL), so the parts of an answer never disagree:

- `user_lineage`: a user's revisions as a tree (parent -> children), each with state,
  dataset positions, metrics, gate reasons, trigger and times, plus what the user is
  served now and the stream's revision history (promotions, rollbacks, forgets);
- `revision_provenance`: one revision's full provenance (base, parent, dataset events,
  hyperparameters, code version, adapter digest) and every log event that named it;
- `request_audit`: which revision answered an inference request.

Every query takes `scope`: the tenant the caller may see, or None for an admin (every
tenant). Something outside the scope is reported exactly like something that does not
exist (`AuditNotFound`), so a tenant key cannot probe other tenants' ids.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from pydantic import BaseModel, ConfigDict

from tessera.events.audit_reads import audit_reads_for
from tessera.events.projections import RevisionRow
from tessera.events.store import EventStore, StoredEvent

# The most dataset event ids a provenance answer lists (the count is always exact).
MAX_DATASET_IDS: Final = 500


class AuditNotFound(LookupError):
    """The user, revision or request does not exist, or lies outside the caller's tenant."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class ServedNow(_Model):
    """What answers the user's requests now: personal head, else tenant prior, else base."""

    revision_id: str | None
    adapter_digest: str | None
    source: str  # personal | prior | base


class RevisionNode(_Model):
    """One revision as the catalog holds it, with its place in the tree."""

    revision_id: str
    tenant_id: str
    user_id: str
    kind: str
    parent_revision_id: str | None
    children: list[str]
    state: str
    served: bool  # the stream's head now
    adapter_digest: str
    base_model_id: str
    base_digest: str
    dataset_from: int
    dataset_to: int
    dataset_digest: str
    metrics: dict[str, float]
    baseline_revision_id: str | None
    baseline_metrics: dict[str, float]
    reasons: list[str]
    trigger: str
    code_version: str
    trained_at: datetime
    evaluated_at: datetime | None
    decided_at: datetime | None
    updated_at: datetime


class LogEntry(_Model):
    """One revision or forget event of the log, as an audit line."""

    position: int
    event_id: str
    event_type: str
    recorded_at: datetime | None
    revision_id: str | None  # the revision it concerns (the target, for a rollback)
    actor: str | None  # who did it, for rollbacks and forgets
    reason: str | None
    data: dict[str, Any]


class UserLineage(_Model):
    tenant_id: str
    user_id: str
    interactions: int  # since the last forget
    first_position: int | None
    last_position: int | None
    forgotten_at: datetime | None
    forgotten_position: int | None
    served: ServedNow
    roots: list[str]  # revisions whose parent is not one of this user's (prior or base)
    revisions: list[RevisionNode]  # in training order
    history: list[LogEntry]


class DatasetEvents(_Model):
    """The interaction events a revision was trained and evaluated on."""

    from_position: int
    to_position: int
    digest: str
    count: int  # interaction events now in the range (forgotten ones included, redacted)
    redacted: int  # of those, how many had their content erased by a forget
    event_ids: list[str]  # in position order, at most MAX_DATASET_IDS
    truncated: bool


class RevisionProvenance(_Model):
    revision: RevisionNode
    parent: RevisionNode | None
    provenance: dict[str, Any]  # the RevisionTrained payload: hyperparameters, seed, ...
    dataset: DatasetEvents
    events: list[LogEntry]  # every log event that named this revision


class RequestAudit(_Model):
    request_id: str
    tenant_id: str
    user_id: str
    source: str
    revision_id: str | None
    adapter_digest: str | None
    at: datetime
    revision: RevisionNode | None  # as the catalog holds it now (None for the base model)


# --- queries ---------------------------------------------------------------------------


def _in_scope(tenant_id: str, scope: str | None) -> bool:
    return scope is None or scope == tenant_id


def _storable(*ids: str) -> bool:
    """PostgreSQL text cannot hold NUL, so no stored id contains one: such an id names
    nothing (answered as not found, rather than a driver error)."""
    return not any("\x00" in i for i in ids)


def user_lineage(
    store: EventStore, tenant_id: str, user_id: str, *, scope: str | None = None
) -> UserLineage:
    """The user's revision tree and history. AuditNotFound when the user has no events
    (or is outside `scope`)."""
    if not _in_scope(tenant_id, scope) or not _storable(tenant_id, user_id):
        raise AuditNotFound(f"no user {tenant_id!r}/{user_id!r}")
    found = audit_reads_for(store).user_audit(tenant_id, user_id)
    user, rows, served, head = found.user, found.revisions, found.served, found.head
    if user is None and not rows:
        raise AuditNotFound(f"no user {tenant_id}/{user_id}: nothing has been recorded")
    history = _log_entries(found.history)
    nodes = _nodes(rows, head.revision_id if head else None)
    ids = {n.revision_id for n in nodes}
    return UserLineage(
        tenant_id=tenant_id,
        user_id=user_id,
        interactions=user.interactions if user else 0,
        first_position=user.first_position if user else None,
        last_position=user.last_position if user else None,
        forgotten_at=user.forgotten_at if user else None,
        forgotten_position=user.forgotten_position if user else None,
        served=ServedNow(
            revision_id=served.revision_id,
            adapter_digest=served.adapter_digest,
            source=served.source,
        ),
        roots=[n.revision_id for n in nodes if n.parent_revision_id not in ids],
        revisions=nodes,
        history=history,
    )


def revision_provenance(
    store: EventStore, revision_id: str, *, scope: str | None = None
) -> RevisionProvenance:
    """One revision's full provenance. AuditNotFound when unknown (or outside `scope`)."""
    if not _storable(revision_id):
        raise AuditNotFound(f"no revision {revision_id!r}")
    found = audit_reads_for(store).revision_audit(revision_id, max_ids=MAX_DATASET_IDS)
    if found is None or not _in_scope(found.revision.tenant_id, scope):
        raise AuditNotFound(f"no revision {revision_id!r}")
    row, stream, parent_row, head = found.revision, found.stream, found.parent, found.head
    dataset = DatasetEvents(
        from_position=row.dataset_from,
        to_position=row.dataset_to,
        digest=row.dataset_digest,
        count=found.dataset.count,
        redacted=found.dataset.redacted,
        event_ids=found.dataset.event_ids,
        truncated=found.dataset.count > len(found.dataset.event_ids),
    )
    events = [e for e in _log_entries(found.history) if revision_id in _named_revisions(e)]
    head_id = head.revision_id if head else None
    by_id = {n.revision_id: n for n in _nodes(stream, head_id)}
    parent = None
    if parent_row is not None:
        parent = by_id.get(parent_row.revision_id) or _nodes([parent_row], None)[0]
    return RevisionProvenance(
        revision=by_id[revision_id],
        parent=parent,
        provenance=dict(row.provenance),
        dataset=dataset,
        events=events,
    )


def request_audit(
    store: EventStore, request_id: str, *, scope: str | None = None
) -> RequestAudit:
    """Which revision answered `request_id`. AuditNotFound when the request was not
    recorded (request logging may sample), was forgotten, or is outside `scope`."""
    record = store.get_request(request_id) if _storable(request_id) else None
    if record is None or not _in_scope(record.tenant_id, scope):
        raise AuditNotFound(
            f"no request {request_id!r} in the request log (it may not have been sampled)"
        )
    revision = None
    if record.revision_id is not None:
        row = store.get_revision(record.revision_id)
        if row is not None:
            revision = _nodes([row], None)[0]
    return RequestAudit(
        request_id=record.request_id,
        tenant_id=record.tenant_id,
        user_id=record.user_id,
        source=record.source,
        revision_id=record.revision_id,
        adapter_digest=record.adapter_digest,
        at=record.at,
        revision=revision,
    )


# --- helpers ---------------------------------------------------------------------------


def _nodes(rows: list[RevisionRow], head_id: str | None) -> list[RevisionNode]:
    children: dict[str, list[str]] = {}
    for r in rows:
        if r.parent_revision_id is not None:
            children.setdefault(r.parent_revision_id, []).append(r.revision_id)
    return [
        RevisionNode(
            revision_id=r.revision_id,
            tenant_id=r.tenant_id,
            user_id=r.user_id,
            kind=r.kind,
            parent_revision_id=r.parent_revision_id,
            children=children.get(r.revision_id, []),
            state=r.state,
            served=r.revision_id == head_id,
            adapter_digest=r.adapter_digest,
            base_model_id=r.base_model_id,
            base_digest=r.base_digest,
            dataset_from=r.dataset_from,
            dataset_to=r.dataset_to,
            dataset_digest=r.dataset_digest,
            metrics=dict(r.metrics),
            baseline_revision_id=r.baseline_revision_id,
            baseline_metrics=dict(r.baseline_metrics),
            reasons=list(r.reasons),
            trigger=str(r.provenance.get("trigger", "")),
            code_version=str(r.provenance.get("code_version", "")),
            trained_at=r.trained_at,
            evaluated_at=r.evaluated_at,
            decided_at=r.decided_at,
            updated_at=r.updated_at,
        )
        for r in rows
    ]


def _log_entries(events: list[StoredEvent]) -> list[LogEntry]:
    entries = []
    for ev in events:
        data = ev.envelope.data
        revision = data.get("revision_id") or data.get("to_revision_id")
        entries.append(
            LogEntry(
                position=ev.position,
                event_id=str(ev.envelope.event_id),
                event_type=str(ev.envelope.event_type),
                recorded_at=ev.envelope.recorded_at,
                revision_id=revision,
                actor=data.get("actor"),
                reason=data.get("reason"),
                data=data,
            )
        )
    return entries


def _named_revisions(entry: LogEntry) -> set[str]:
    keys = (
        "revision_id",
        "from_revision_id",
        "to_revision_id",
        "previous_revision_id",
        "baseline_revision_id",
    )
    named = {str(entry.data[k]) for k in keys if entry.data.get(k)}
    named.update(str(r) for r in entry.data.get("forgotten_revision_ids", []))
    return named


__all__ = [
    "AuditNotFound",
    "DatasetEvents",
    "LogEntry",
    "RequestAudit",
    "RevisionNode",
    "RevisionProvenance",
    "ServedNow",
    "UserLineage",
    "request_audit",
    "revision_provenance",
    "user_lineage",
]
