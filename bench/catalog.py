"""The catalog at scale: N users' log, revisions and heads, then the service's queries on
them under concurrency (`tessera bench catalog`).

The fill is synthetic (events/bulk_fill.py: every row a function of the user's number),
so the right answer of every query is known and checked, not just timed:
- head lookup: the serving resolver's lookup (`projection_lookup`, what a cache miss in
  `RevisionResolver` asks), for a sample of users; every answer compared with the fill;
- lineage: `services.audit.queries.user_lineage`; each tree has the user's revisions;
- planning: the nightly scan `SchedulerState.users_due`; it finds exactly the users the
  fill gave enough new events;
- promotion: a candidate's trained and evaluated events appended first (not timed), then
  the promotion timed, through `EventStore.append` and the projections (the trainer's
  path); the head then names it;
- forget: `CorrectiveActions.forget` (the admin path, no broker announcement);
- rebuild: `rebuild_projections` over the whole log (optional), streamed stream by
  stream; the process's peak resident memory afterwards shows it stayed bounded.
Each timed call runs on `clients` threads at once, each with its own connection.
"""

from __future__ import annotations

import random
import resource
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from tessera.events import bulk_fill
from tessera.events.db import connect
from tessera.events.postgres_store import PostgresEventStore
from tessera.events.rebuild import rebuild_projections
from tessera.schemas.events import EventType
from tessera.schemas.revisions import RevisionEvaluated, RevisionPromoted, RevisionTrained
from tessera.services.audit.queries import user_lineage
from tessera.services.corrective import CorrectiveActions
from tessera.services.inference.component import projection_lookup
from tessera.workers.adapter_store import LocalAdapterStore
from tessera.workers.revision_events import revision_event, revision_id_for
from tessera.workers.scheduler import ScheduleConfig
from tessera.workers.scheduler_state import SchedulerState

T = TypeVar("T")
Progress = Callable[[str], None]

RESULT_KEYS: Final = (
    "users", "revisions", "events", "head_lookup_p50_ms", "head_lookup_p99_ms",
    "lineage_p99_ms", "planning_seconds", "promote_p99_ms", "forget_p99_ms",
    "rebuild_events_per_s", "bytes_per_user",
)


@dataclass(frozen=True)
class CatalogBenchConfig:
    users: int = 1_000_000
    tenants: int = 4
    clients: int = 8  # threads issuing the timed calls at once
    lookups: int = 20_000
    lineages: int = 2_000
    promotions: int = 400
    forgets: int = 200
    rebuild: bool = True
    seed: int = 7

    def __post_init__(self) -> None:
        if self.users < 2 or self.tenants < 1 or self.clients < 1:
            raise ValueError("need at least 2 users, 1 tenant and 1 client")
        if self.promotions + self.forgets > self.users:
            raise ValueError("promotions + forgets must not exceed users (distinct users)")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def timed_concurrently(
    call: Callable[[int], T], items: Sequence[int], clients: int
) -> tuple[list[float], list[T]]:
    """Run `call(item)` for every item on `clients` threads; milliseconds per call (in
    item order) and the results."""

    def one(item: int) -> tuple[float, T]:
        start = time.perf_counter()
        result = call(item)
        return (time.perf_counter() - start) * 1000, result

    with ThreadPoolExecutor(max_workers=clients, thread_name_prefix="bench-client") as pool:
        pairs = list(pool.map(one, items))
    return [ms for ms, _ in pairs], [r for _, r in pairs]


def _key(i: int, config: CatalogBenchConfig) -> tuple[str, str]:
    return bulk_fill.tenant_of(i, config.tenants), bulk_fill.user_of(i)


def fill(url: str, config: CatalogBenchConfig, progress: Progress) -> dict[str, Any]:
    """Fill the fresh database at `url`; the counts and the time it took."""
    start = time.perf_counter()

    def on_step(step: int, steps: int) -> None:
        progress(f"fill: log step {step}/{steps} ({time.perf_counter() - start:.0f} s)")

    with connect(url) as conn:
        report = bulk_fill.fill_catalog(
            conn, users=config.users, tenants=config.tenants, on_step=on_step
        )
    with connect(url, autocommit=True) as conn:
        bulk_fill.vacuum_analyze(conn)
    seconds = time.perf_counter() - start
    progress(f"fill: {report.events} events, {report.revisions} revisions in {seconds:.0f} s")
    return {"events": report.events, "revisions": report.revisions, "fill_seconds": seconds}


def measure_lookups(url: str, config: CatalogBenchConfig, sample: list[int]) -> dict[str, Any]:
    lookup = projection_lookup(url, pool_size=config.clients)

    def call(i: int) -> bool:
        served = lookup(*_key(i, config))
        return served.source == "personal" and served.revision_id == bulk_fill.head_of(i)

    ms, right = timed_concurrently(call, sample, config.clients)
    return {
        "head_lookup_p50_ms": percentile(ms, 50), "head_lookup_p99_ms": percentile(ms, 99),
        "head_lookups": len(ms), "head_mismatches": right.count(False),
    }


def measure_lineage(
    store: PostgresEventStore, config: CatalogBenchConfig, sample: list[int]
) -> dict[str, Any]:
    def call(i: int) -> bool:
        lineage = user_lineage(store, *_key(i, config))
        return (
            len(lineage.revisions) == bulk_fill.revisions_of(i)
            and lineage.served.revision_id == bulk_fill.head_of(i)
        )

    ms, right = timed_concurrently(call, sample, config.clients)
    return {
        "lineage_p50_ms": percentile(ms, 50), "lineage_p99_ms": percentile(ms, 99),
        "lineage_mismatches": right.count(False),
    }


def measure_planning(url: str, config: CatalogBenchConfig) -> dict[str, Any]:
    min_new = ScheduleConfig().min_new_events
    start = time.perf_counter()
    due = SchedulerState(url).users_due(min_new)
    seconds = time.perf_counter() - start
    expected = sum(1 for i in range(config.users) if bulk_fill.new_events_of(i) >= min_new)
    return {"planning_seconds": seconds, "planning_due": len(due), "planning_expected": expected}


def _candidate(store: PostgresEventStore, config: CatalogBenchConfig, i: int) -> str:
    """Append a trained and evaluated revision for user i (not timed); its id."""
    tenant, user = _key(i, config)
    row = store.get_user(tenant, user)
    up_to = row.last_position if row and row.last_position else 1
    rid = revision_id_for(tenant, user, up_to)
    trained = RevisionTrained(
        revision_id=rid, kind="personal", parent_revision_id=bulk_fill.head_of(i),
        base_model_id="bench", base_digest="0" * 64, adapter_digest=f"{i:064x}",
        adapter_bytes=1, rank=8, alpha=16.0, target_modules=["q_proj"], seed=i,
        dataset_from=up_to, dataset_to=up_to, dataset_digest="bench", code_version="bench",
        trigger="bench", train_seconds=0.0,
    )
    evaluated = RevisionEvaluated(revision_id=rid, metrics={"heldout_nll": 2.0})
    store.append([
        revision_event(EventType.REVISION_TRAINED, trained, tenant_id=tenant, user_id=user,
                       revision_id=rid),
        revision_event(EventType.REVISION_EVALUATED, evaluated, tenant_id=tenant,
                       user_id=user, revision_id=rid),
    ])
    return rid


def measure_promotions(
    store: PostgresEventStore, config: CatalogBenchConfig, sample: list[int]
) -> dict[str, Any]:
    candidates = dict(zip(sample, timed_concurrently(
        lambda i: _candidate(store, config, i), sample, config.clients)[1], strict=True))

    def call(i: int) -> int:
        tenant, user = _key(i, config)
        rid = candidates[i]
        promoted = RevisionPromoted(
            revision_id=rid, adapter_digest=f"{i:064x}",
            previous_revision_id=bulk_fill.head_of(i), reasons=["bench"],
        )
        return len(store.append([revision_event(
            EventType.REVISION_PROMOTED, promoted, tenant_id=tenant, user_id=user,
            revision_id=rid)]))

    ms, appended = timed_concurrently(call, sample, config.clients)
    wrong = sum(
        1 for i in sample
        if (head := store.get_head(*_key(i, config))) is None or head.revision_id != candidates[i]
    )
    return {
        "promote_p50_ms": percentile(ms, 50), "promote_p99_ms": percentile(ms, 99),
        "promote_mismatches": wrong + appended.count(0),
    }


def measure_forgets(
    store: PostgresEventStore, config: CatalogBenchConfig, sample: list[int]
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-catalog-") as blobs:
        actions = CorrectiveActions(store, LocalAdapterStore(Path(blobs)), None)

        def call(i: int) -> int:
            result = actions.forget(*_key(i, config), actor="bench", reason="bench")
            return len(result.forgotten_revision_ids)

        ms, forgotten = timed_concurrently(call, sample, config.clients)
    wrong = sum(
        1 for i, n in zip(sample, forgotten, strict=True)
        if n != bulk_fill.revisions_of(i) or store.get_head(*_key(i, config)) is not None
    )
    return {
        "forget_p50_ms": percentile(ms, 50), "forget_p99_ms": percentile(ms, 99),
        "forget_mismatches": wrong,
    }


def measure_rebuild(url: str) -> dict[str, Any]:
    start = time.perf_counter()
    report = rebuild_projections(url)
    seconds = time.perf_counter() - start
    return {
        "rebuild_events_per_s": report.events / seconds if seconds > 0 else 0.0,
        "rebuild_seconds": seconds, "rebuild_heads": report.heads,
        "rebuild_flushes": report.flushes,
        # The whole process's high-water mark (Linux: KiB); the fill and the timed calls
        # before it hold little, so this bounds the rebuild's own peak from above.
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_catalog_bench(
    url: str, config: CatalogBenchConfig, *, progress: Progress = lambda _: None
) -> dict[str, Any]:
    """Fill the fresh, migrated database at `url` and measure (see the module docstring).
    The result holds RESULT_KEYS plus details and the `*_mismatches` correctness counts."""
    result: dict[str, Any] = {"users": config.users, "tenants": config.tenants,
                              "clients": config.clients}
    result.update(fill(url, config, progress))
    rng = random.Random(config.seed)
    # Promoted and forgotten users are distinct, so every check knows its user's state.
    changed = rng.sample(range(config.users), config.promotions + config.forgets)
    to_promote, to_forget = changed[: config.promotions], changed[config.promotions:]
    result.update(measure_lookups(
        url, config, [rng.randrange(config.users) for _ in range(config.lookups)]))
    progress(f"head lookups: p99 {result['head_lookup_p99_ms']:.2f} ms")
    with PostgresEventStore(url, pool_size=config.clients) as store:
        result.update(measure_lineage(
            store, config, [rng.randrange(config.users) for _ in range(config.lineages)]))
        progress(f"lineage: p99 {result['lineage_p99_ms']:.2f} ms")
        result.update(measure_planning(url, config))
        progress(f"planning: {result['planning_seconds']:.1f} s")
        result.update(measure_promotions(store, config, to_promote))
        progress(f"promotion: p99 {result['promote_p99_ms']:.2f} ms")
        result.update(measure_forgets(store, config, to_forget))
        progress(f"forget: p99 {result['forget_p99_ms']:.2f} ms")
    with connect(url) as conn:
        result["bytes_per_user"] = bulk_fill.catalog_bytes(conn) / config.users
    if config.rebuild:
        result.update(measure_rebuild(url))
        progress(f"rebuild: {result['rebuild_events_per_s']:.0f} events/s")
    else:
        result["rebuild_events_per_s"] = None
    return result
