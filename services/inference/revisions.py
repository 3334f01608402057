"""Which revision serves a user: personal head, else the tenant prior, else the base model.

The answer comes from the event store's projections (`events.projections.served_revision`)
and is cached per user; the revision follower overwrites entries as revisions are
promoted, rolled back or forgotten, and the TTL bounds staleness if a message is missed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Source = Literal["personal", "prior", "base"]


@dataclass(frozen=True)
class Served:
    """What answers a user's requests; `revision_id` and `adapter_digest` are None for base."""

    revision_id: str | None
    adapter_digest: str | None
    source: Source

    @property
    def name(self) -> str:
        """The revision id, or `base` when the base model answers."""
        return self.revision_id or "base"


BASE = Served(None, None, "base")

Lookup = Callable[[str, str], Served]
"""`lookup(tenant_id, user_id)`: the served revision as the projections say now."""

PinLookup = Callable[[str, str, str], Served | None]
"""`pin_lookup(tenant_id, user_id, revision_id)`: that revision, when it is the user's (in
that tenant) and may be served (it passed the gate once and was not forgotten); else None."""


class RevisionResolver:
    """Cached `lookup`, safe to share between request threads and the follower."""

    def __init__(
        self,
        lookup: Lookup,
        *,
        ttl_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        pin_lookup: PinLookup | None = None,
    ) -> None:
        self._lookup = lookup
        self._pin_lookup = pin_lookup
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], tuple[float, Served]] = {}
        # every adapter a user was served by this process, so forgetting can purge them all
        self._seen: dict[tuple[str, str], set[str]] = {}

    def get(self, tenant_id: str, user_id: str) -> Served:
        key = (tenant_id, user_id)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and self._clock() - hit[0] < self._ttl_s:
            return hit[1]
        served = self._lookup(tenant_id, user_id)
        with self._lock:
            self._cache[key] = (self._clock(), served)
            self._remember(key, served)
        return served

    def pinned(self, tenant_id: str, user_id: str, revision_id: str) -> Served | None:
        """One revision of the user's, as `user:<id>@<revision>` names it; None when it is
        not theirs or cannot be served. Without a pin lookup only the current answer can
        be pinned. Not cached: a pin is explicit, and its state can change (forget)."""
        if self._pin_lookup is not None:
            return self._pin_lookup(tenant_id, user_id, revision_id)
        served = self._lookup(tenant_id, user_id)
        return served if served.revision_id == revision_id else None

    def lookup(self, tenant_id: str, user_id: str) -> Served:
        """Ask the projections, bypassing the cache (the follower's re-resolve)."""
        return self._lookup(tenant_id, user_id)

    def put(self, tenant_id: str, user_id: str, served: Served) -> Served | None:
        """Swap in a new answer; returns the previous cached one, if any."""
        with self._lock:
            old = self._cache.get((tenant_id, user_id))
            self._cache[(tenant_id, user_id)] = (self._clock(), served)
            self._remember((tenant_id, user_id), served)
        return old[1] if old else None

    def forget(self, tenant_id: str, user_id: str) -> set[str]:
        """Drop what this process remembers of a user's adapters; returns their digests."""
        with self._lock:
            return self._seen.pop((tenant_id, user_id), set())

    def _remember(self, key: tuple[str, str], served: Served) -> None:
        if served.adapter_digest is not None and served.source == "personal":
            self._seen.setdefault(key, set()).add(served.adapter_digest)

    def knows(self, tenant_id: str, user_id: str) -> bool:
        """Whether this process has resolved the user before (fresh or not): behind the
        consistent-hash proxy, a user this replica answers."""
        with self._lock:
            return (tenant_id, user_id) in self._cache

    def cached_users(self, tenant_id: str) -> set[str]:
        """Users of `tenant_id` with a cached answer (re-resolved when the prior changes)."""
        with self._lock:
            return {u for (t, u) in self._cache if t == tenant_id}

    def served_digests(self) -> set[str]:
        """Adapter digests some cached user is served now (never purge those)."""
        with self._lock:
            return {s.adapter_digest for _, s in self._cache.values() if s.adapter_digest}

    def drop(self, tenant_id: str, user_id: str) -> Served | None:
        with self._lock:
            old = self._cache.pop((tenant_id, user_id), None)
        return old[1] if old else None

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
