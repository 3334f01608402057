"""Hot swap: follow `tessera.revisions` and re-point users at their new served revision.

Messages are keyed `tenant/user`; their content is not trusted for what to serve. On any
message the follower asks the projections again (`RevisionResolver.lookup`) — so a
promotion, a rollback and a re-promotion all come out right even if messages are
duplicated or reordered — then:

1. loads the new adapter into the CPU cache, which verifies its digest and checks it
   against the model, *before* anything changes; a blob that fails keeps the user on
   what they had (and is logged);
2. swaps the user's cache entry: requests submitted from now on use the new revision,
   running ones finish on the adapter they pinned;
3. on `user.forgotten`, purges the user's adapters from the CPU cache and device slots.

A message for the tenant prior (`~prior`) re-resolves every cached user of the tenant,
since those without a personal head are served the prior.

Each server instance reads every partition itself (`TopicTail`: no consumer group, and
messages stamped before it started are skipped: a fresh server resolves from the
projections anyway).
"""

from __future__ import annotations

import json
import logging

from prometheus_client import Counter

from tessera.schemas.events import PRIOR_USER_ID, EventType
from tessera.services.inference.residency import AdapterResidency
from tessera.services.inference.revisions import RevisionResolver
from tessera.services.inference.topic_tail import TopicTail, parse_key

__all__ = ["KafkaRevisionFollower", "RevisionFollower", "parse_event_type", "parse_key"]

log = logging.getLogger(__name__)

SWAPS = Counter("tessera_revision_swaps", "Served-revision changes applied.", ["outcome"])


class RevisionFollower:
    """Applies revision messages to the resolver and residency of one engine."""

    def __init__(self, resolver: RevisionResolver, residency: AdapterResidency) -> None:
        self.resolver = resolver
        self.residency = residency
        self.applied = 0

    def apply(self, tenant_id: str, user_id: str, event_type: str | None = None) -> None:
        """Re-resolve one user (or, for the prior, every cached user of the tenant)."""
        users = [user_id]
        if user_id == PRIOR_USER_ID:
            users = sorted(self.resolver.cached_users(tenant_id) | {PRIOR_USER_ID})
        for user in users:
            self._refresh(
                tenant_id,
                user,
                forgotten=event_type == EventType.USER_FORGOTTEN and user == user_id,
            )
        self.applied += 1

    def _refresh(self, tenant_id: str, user_id: str, *, forgotten: bool) -> None:
        new = self.resolver.lookup(tenant_id, user_id)
        if new.adapter_digest is not None:
            try:
                self.residency.load_cpu(new.adapter_digest)  # verify before swapping
            except Exception:
                SWAPS.labels("failed").inc()
                log.exception(
                    "revision %s for %s/%s cannot be loaded; keeping the old one",
                    new.revision_id,
                    tenant_id,
                    user_id,
                )
                return
        self.resolver.put(tenant_id, user_id, new)
        SWAPS.labels("applied").inc()
        if forgotten:
            # every personal adapter this process served the user, unless (oddly) still served
            gone = self.resolver.forget(tenant_id, user_id) - self.resolver.served_digests()
            self.residency.purge(gone)


def parse_event_type(value: bytes | None) -> str | None:
    """The `event_type` of a JSON envelope value, if it has one."""
    if not value:
        return None
    try:
        doc = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return None
    kind = doc.get("event_type") if isinstance(doc, dict) else None
    return kind if isinstance(kind, str) else None


class KafkaRevisionFollower(TopicTail):
    """A thread that polls `topic` and hands each message to a `RevisionFollower`."""

    def __init__(
        self,
        follower: RevisionFollower,
        *,
        bootstrap: str,
        topic: str,
        poll_ms: int = 100,
        skew_s: float = 5.0,
    ) -> None:
        super().__init__(
            self._apply,
            bootstrap=bootstrap,
            topic=topic,
            name="revision-follower",
            poll_ms=poll_ms,
            skew_s=skew_s,
        )
        self.follower = follower

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        parsed = parse_key(key)
        if parsed is None:
            log.warning("revision follower: ignoring a message with key %r", key)
            return
        try:
            self.follower.apply(*parsed, parse_event_type(value))
        except Exception:  # a projection outage must not stop the follower
            log.exception("revision follower: cannot apply a message for %s/%s", *parsed)
