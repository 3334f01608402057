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

Each server instance reads every partition itself (no consumer group: every replica must
see every message, and group joins on the local broker take seconds). It reads from the
beginning but skips messages stamped well before it started (a fresh server resolves from
the projections anyway); it does not seek to the end because the local broker's end
offsets can be wrong, which would skip messages.
"""

from __future__ import annotations

import json
import logging
import threading
import time

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from prometheus_client import Counter

from tessera.events.kafka_no_autocreate import NO_AUTO_CREATE
from tessera.schemas.events import PRIOR_USER_ID, EventType
from tessera.services.inference.residency import AdapterResidency
from tessera.services.inference.revisions import RevisionResolver

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


def parse_key(key: bytes | None) -> tuple[str, str] | None:
    """`b"tenant/user"` -> (tenant, user); None for a key that is not one."""
    if not key:
        return None
    tenant, sep, user = key.decode("utf-8", "replace").partition("/")
    return (tenant, user) if sep and tenant and user else None


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


class KafkaRevisionFollower:
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
        self.follower = follower
        self._bootstrap = bootstrap
        self._topic = topic
        self._poll_ms = poll_ms
        # messages older than this were published before we started: already reflected
        self._since_ms = int((time.time() - skew_s) * 1000)
        self._stop = threading.Event()
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="revision-follower", daemon=True)

    def start(self, *, wait_s: float = 30.0) -> KafkaRevisionFollower:
        """Start and wait until every partition is assigned (messages after this are seen)."""
        self._thread.start()
        if not self.ready.wait(wait_s):
            raise RuntimeError(
                f"revision follower: no partitions of {self._topic} within {wait_s}s"
            )
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10.0)

    def _consumer(self) -> KafkaConsumer:
        consumer = KafkaConsumer(
            **NO_AUTO_CREATE,
            bootstrap_servers=self._bootstrap,
            group_id=None,
            enable_auto_commit=False,
            client_id="tessera-inference",
        )
        deadline = time.monotonic() + 30.0
        partitions = consumer.partitions_for_topic(self._topic)
        while not partitions and time.monotonic() < deadline and not self._stop.is_set():
            time.sleep(0.2)
            partitions = consumer.partitions_for_topic(self._topic)
        if not partitions:
            consumer.close()
            raise KafkaError(f"topic {self._topic} has no partitions")
        tps = [TopicPartition(self._topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        return consumer

    def _run(self) -> None:
        consumer: KafkaConsumer | None = None
        while not self._stop.is_set():
            try:
                if consumer is None:
                    consumer = self._consumer()
                    self.ready.set()
                batches = consumer.poll(timeout_ms=self._poll_ms)
                for records in batches.values():
                    for record in records:
                        if record.timestamp >= self._since_ms:
                            self._handle(record.key, record.value)
            except KafkaError as exc:
                log.warning("revision follower: %s; reconnecting", exc)
                if consumer is not None:
                    consumer.close()
                consumer = None
                self._stop.wait(1.0)
        if consumer is not None:
            consumer.close()

    def _handle(self, key: bytes | None, value: bytes | None) -> None:
        parsed = parse_key(key)
        if parsed is None:
            log.warning("revision follower: ignoring a message with key %r", key)
            return
        try:
            self.follower.apply(*parsed, parse_event_type(value))
        except Exception:  # a projection outage must not stop the follower
            log.exception("revision follower: cannot apply a message for %s/%s", *parsed)
