"""The two corrective actions on a user's adapters: rollback and forget.

Both write to the event log first (the source of truth: a `RevisionRolledBack` event,
or the store's forget transaction with its `UserForgotten` tombstone), and only after
the commit announce it on `tessera.revisions` keyed `tenant/user`. Serving processes
follow that topic and re-resolve the user from the projections; if an announcement is
lost, their cache TTL still bounds how long they serve the old answer. A failed
announcement is therefore reported in the result, never turned into a failed action.

Rollback semantics:
- `to_revision_id` given: the stream's head becomes that revision, which must be one of
  the user's revisions that was once served (promoted, superseded or rolled back).
  Rolling *forward* is the same call naming a later revision.
- none given: the head goes back to its parent in the lineage (the nearest ancestor of
  this user that may be served); when the head has no such ancestor (its parent is the
  tenant prior or the base model) the personal head is cleared, so the user falls back
  to the prior, else the base model.
Rejected, forgotten, undecided and other users' revisions are refused with the reason.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from tessera.events.audit_reads import audit_reads_for
from tessera.events.projections import ROLLBACK_TARGET_STATES, ProjectionError, RevisionRow
from tessera.events.store import EventStore, NotFoundError
from tessera.schemas.events import EventEnvelope, EventType, RevisionState, utcnow
from tessera.schemas.revisions import RevisionRolledBack
from tessera.workers.adapter_store import AdapterStore

log = logging.getLogger(__name__)

Publish = Callable[[EventEnvelope], None]
"""Announce an appended event on `tessera.revisions` (raises when the broker refuses)."""

class CorrectiveError(Exception):
    """A corrective action was refused; the message says why and what to do."""


class RollbackRefused(CorrectiveError):
    """The rollback target is not allowed (rejected, forgotten, another user's, ...)."""


class NothingToForget(CorrectiveError):
    """Nothing is recorded about the user: no events and no refused input."""


@dataclass(frozen=True, slots=True)
class RollbackResult:
    tenant_id: str
    user_id: str
    from_revision_id: str | None
    to_revision_id: str | None  # None: the personal head was cleared (prior/base serve)
    event_id: str
    position: int
    published: bool
    publish_error: str | None = None


@dataclass(frozen=True, slots=True)
class ForgetResult:
    tenant_id: str
    user_id: str
    tombstone_event_id: str
    position: int
    forgotten_revision_ids: list[str]
    deleted_digests: list[str]  # adapter blobs removed from the store
    kept_digests: list[str]  # also the adapter of another user's live revision: kept
    published: bool
    publish_error: str | None = None


class CorrectiveActions:
    """Rollback and forget over one event store, adapter store and publisher."""

    def __init__(
        self, store: EventStore, adapters: AdapterStore, publish: Publish | None
    ) -> None:
        self._store = store
        self._reads = audit_reads_for(store)
        self._adapters = adapters
        self._publish = publish

    # --- rollback --------------------------------------------------------------------

    def rollback(
        self,
        tenant_id: str,
        user_id: str,
        *,
        to_revision_id: str | None = None,
        reason: str,
        actor: str,
    ) -> RollbackResult:
        """Switch the user's served revision (see the module docstring). Raises
        RollbackRefused with the reason when the target is not allowed."""
        if not reason.strip():
            raise RollbackRefused("a rollback needs a reason (it is kept in the log)")
        head = self._store.get_head(tenant_id, user_id)
        current = head.revision_id if head else None
        if to_revision_id is None:
            if current is None:
                raise RollbackRefused(
                    f"{tenant_id}/{user_id} is not served a personal revision (it gets the "
                    "tenant prior or the base model): nothing to roll back; name a revision "
                    "with --to to restore one"
                )
            target = self._parent_target(tenant_id, user_id, current)
        else:
            target = self._check_target(tenant_id, user_id, to_revision_id, current)
        if target is not None and not self._adapters.exists(target.adapter_digest):
            raise RollbackRefused(
                f"cannot roll back to {target.revision_id!r}: its adapter "
                f"{target.adapter_digest} is missing from the adapter store"
            )
        payload = RevisionRolledBack(
            from_revision_id=current,
            to_revision_id=target.revision_id if target else None,
            to_adapter_digest=target.adapter_digest if target else None,
            reason=reason,
            actor=actor,
        )
        env = EventEnvelope(
            event_id=uuid.uuid4(),
            event_type=EventType.REVISION_ROLLED_BACK,
            tenant_id=tenant_id,
            user_id=user_id,
            occurred_at=utcnow(),
            data=payload.model_dump(mode="json"),
        )
        try:
            (stored,) = self._store.append([env])
        except ProjectionError as exc:
            # The projection re-checks under the log's lock: the head moved meanwhile.
            raise RollbackRefused(f"rollback refused: {exc}; look again and retry") from exc
        published, error = self._announce(stored.envelope)
        log.info(
            "rolled back %s/%s: %s -> %s by %s (%s)",
            tenant_id, user_id, current, payload.to_revision_id, actor, reason,
        )
        return RollbackResult(
            tenant_id=tenant_id,
            user_id=user_id,
            from_revision_id=current,
            to_revision_id=payload.to_revision_id,
            event_id=str(stored.envelope.event_id),
            position=stored.position,
            published=published,
            publish_error=error,
        )

    def _check_target(
        self, tenant_id: str, user_id: str, revision_id: str, current: str | None
    ) -> RevisionRow:
        row = self._store.get_revision(revision_id)
        if row is None or (row.tenant_id, row.user_id) != (tenant_id, user_id):
            raise RollbackRefused(
                f"cannot roll back to {revision_id!r}: it is not a revision of "
                f"{tenant_id}/{user_id} (see `tessera audit user {user_id}`)"
            )
        if revision_id == current:
            raise RollbackRefused(f"{revision_id!r} is already served to {tenant_id}/{user_id}")
        if row.state == RevisionState.REJECTED:
            why = "; ".join(row.reasons) or "no reason recorded"
            raise RollbackRefused(
                f"cannot roll back to {revision_id!r}: the gate rejected it ({why}); "
                "a rejected revision is never served"
            )
        if row.state == RevisionState.FORGOTTEN:
            raise RollbackRefused(
                f"cannot roll back to {revision_id!r}: it was forgotten with its user's data "
                "and its adapter is erased"
            )
        if row.state not in ROLLBACK_TARGET_STATES:
            raise RollbackRefused(
                f"cannot roll back to {revision_id!r}: it is {row.state} and was never "
                "promoted; only a revision that was once served can be restored"
            )
        return row

    def _parent_target(self, tenant_id: str, user_id: str, current: str) -> RevisionRow | None:
        """The nearest ancestor of `current` in this stream that may be served again."""
        seen = {current}
        row = self._store.get_revision(current)
        while row is not None and row.parent_revision_id is not None:
            parent = self._store.get_revision(row.parent_revision_id)
            if parent is None or (parent.tenant_id, parent.user_id) != (tenant_id, user_id):
                return None  # the parent is the tenant prior (or gone): clear the head
            if parent.revision_id in seen:
                return None  # defensive: a malformed lineage must not loop
            seen.add(parent.revision_id)
            if parent.state in ROLLBACK_TARGET_STATES:
                return parent
            row = parent
        return None

    # --- forget ----------------------------------------------------------------------

    def forget(self, tenant_id: str, user_id: str, *, actor: str, reason: str) -> ForgetResult:
        """Erase the user's content and adapters: the store's forget transaction (content
        redacted, rejected inputs and request log deleted, revisions marked forgotten,
        tombstone appended), then the adapter blobs no live revision uses, then the
        announcement that makes servers purge their caches."""
        if not reason.strip():
            raise CorrectiveError("forgetting needs a reason (it is kept in the tombstone)")
        try:
            digests = self._store.forget_user(tenant_id, user_id, actor=actor, reason=reason)
        except NotFoundError as exc:
            raise NothingToForget(str(exc)) from exc
        tombstone = self._store.read(
            tenant_id=tenant_id, user_id=user_id, event_types=[EventType.USER_FORGOTTEN]
        )[-1]
        kept = self._live_digests(digests)
        deleted = []
        for digest in digests:
            if digest in kept:
                continue
            try:
                if self._adapters.delete(digest):
                    deleted.append(digest)
            except ValueError:
                log.warning("revision adapter %r is not a digest the store can hold", digest)
        published, error = self._announce(tombstone.envelope)
        revision_ids = [str(r) for r in tombstone.envelope.data.get("forgotten_revision_ids", [])]
        log.info(
            "forgot %s/%s by %s (%s): %d revisions, %d blobs deleted",
            tenant_id, user_id, actor, reason, len(revision_ids), len(deleted),
        )
        return ForgetResult(
            tenant_id=tenant_id,
            user_id=user_id,
            tombstone_event_id=str(tombstone.envelope.event_id),
            position=tombstone.position,
            forgotten_revision_ids=revision_ids,
            deleted_digests=deleted,
            kept_digests=sorted(kept),
            published=published,
            publish_error=error,
        )

    def _live_digests(self, digests: list[str]) -> set[str]:
        """Of `digests`, those some revision that is not forgotten still names (content
        addressing lets two revisions share a blob)."""
        return self._reads.live_adapter_digests(digests)

    def _announce(self, env: EventEnvelope) -> tuple[bool, str | None]:
        if self._publish is None:
            return False, "no publisher configured: servers follow within their cache TTL"
        try:
            self._publish(env)
        except Exception as exc:  # the log has it already; servers' TTL bounds staleness
            log.warning("could not announce %s on the revisions topic: %s", env.event_type, exc)
            return False, str(exc)
        return True, None


class KafkaRevisionPublisher:
    """`Publish` to the revisions topic with a kafka-python producer; waits for the ack."""

    def __init__(self, bootstrap: str, topic: str, *, timeout_s: float = 10.0) -> None:
        from tessera.events.kafka import make_producer

        self._producer = make_producer(bootstrap, client_id="tessera-corrective")
        self._topic = topic
        self._timeout_s = timeout_s

    def __call__(self, env: EventEnvelope) -> None:
        from tessera.events.kafka import encode_envelope, stream_key

        future = self._producer.send(self._topic, key=stream_key(env), value=encode_envelope(env))
        future.get(timeout=self._timeout_s)

    def close(self) -> None:
        self._producer.close(timeout=self._timeout_s)
