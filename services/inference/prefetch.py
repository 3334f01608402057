"""Prefetch from the interaction stream: warm a user's adapter when their events arrive.

A user who just wrote, rated or edited something in an app is likely to ask the model
soon. Every serving replica tails `tessera.interactions` (`TopicTail`: all partitions,
its own reader, keys `tenant/user`) and, for each event, resolves the user's served
revision (the resolver's cache, else the projections) and hands its adapter digest to
the `AdapterLoader` as a prefetch hint: read into the CPU cache off the decode thread if
it is not there (bounded queue, dropped when full, `tessera_adapter_prefetch_total`),
or just marked recently used if it is. The request that follows then finds the adapter
in memory and waits for a CPU -> slot copy instead of a store read.

Scope (`TESSERA_INFERENCE_PREFETCH`): `all` warms every user with events (one replica,
or a few); `seen` only users this replica has answered before, which behind the
consistent-hash proxy are the users routed to it, so N replicas do not each warm every
user; `off` disables the consumer.
"""

from __future__ import annotations

import logging
from typing import Literal

from tessera.schemas.events import PRIOR_USER_ID
from tessera.services.inference.adapter_loader import AdapterLoader
from tessera.services.inference.revisions import RevisionResolver
from tessera.services.inference.topic_tail import TopicTail, parse_key

log = logging.getLogger(__name__)

PrefetchScope = Literal["off", "all", "seen"]


class Prefetcher:
    """Turns `(tenant, user)` interaction events into adapter prefetch hints."""

    def __init__(
        self, resolver: RevisionResolver, loader: AdapterLoader, *, scope: PrefetchScope = "all"
    ) -> None:
        self.resolver = resolver
        self.loader = loader
        self.scope = scope
        self.events = self.hinted = 0

    def on_event(self, tenant_id: str, user_id: str) -> bool:
        """One interaction event of the user; True when a store read was queued."""
        self.events += 1
        if self.scope == "off" or user_id == PRIOR_USER_ID:
            return False
        if self.scope == "seen" and not self.resolver.knows(tenant_id, user_id):
            return False
        digest = self.resolver.get(tenant_id, user_id).adapter_digest
        if digest is None:  # served the base model: nothing to warm
            return False
        self.hinted += 1
        return self.loader.prefetch(digest)


class KafkaPrefetcher(TopicTail):
    """A thread that tails the interactions topic and feeds a `Prefetcher`."""

    def __init__(self, prefetcher: Prefetcher, *, bootstrap: str, topic: str) -> None:
        super().__init__(self._apply, bootstrap=bootstrap, topic=topic, name="adapter-prefetch")
        self.prefetcher = prefetcher

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        parsed = parse_key(key)
        if parsed is None:
            return  # malformed keys go to the DLQ through ingest; not ours to report
        try:
            self.prefetcher.on_event(*parsed)
        except Exception:  # a projection outage must not stop the consumer: hints only
            log.exception("prefetch: cannot resolve %s/%s", *parsed)
