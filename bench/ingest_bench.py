"""`tessera bench ingest`: events over HTTP until committed in PostgreSQL, and the bare
rates of what the pipeline sits on, in one run.

Set-up, so that a run measures only itself: a fresh database (migrated, dropped after),
fresh topics and consumer group, a tenant and key, then `tessera worker ingest` and
`tessera serve` as child processes. A warm-up batch waits out the worker's group join.

Measured: the client posts pre-encoded batches of real chitchat messages (spread over
`users` users) on many connections as fast as the server accepts them; a poller tails
the log (`position > last`, every `poll_s`) and notes when each event id appears.
- `events_per_s`: events / (last commit seen - first request sent);
- `p50_ms`, `p99_ms`: per event, commit seen - its batch's `202` received (the poll
  interval bounds the error; an event seen before its 202 arrived counts as 0);
- `lost`: accepted ids never seen; `duplicated`: rows of the run beyond one per id.
Then, with the pipeline stopped: bare produce / consume / COPY of the same records.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil

from tessera.bench.bare_rates import bare_consume, bare_copy, bare_produce, create_topic
from tessera.bench.ingest_client import IngestClient, encode_batch
from tessera.bench.subprocesses import TesseraProcess
from tessera.events.kafka import encode_envelope, ensure_topics, stream_key
from tessera.events.log_reads import PostgresLogReads
from tessera.events.migrate import scratch_database as migrated_scratch_database
from tessera.infra.stack import StackInfo, free_port
from tessera.schemas.api import limited_request_model
from tessera.schemas.settings import Settings
from tessera.services.ingest.service import to_envelopes
from tessera.services.tenant_admin import ensure_tenant_with_key

BENCH_TENANT = "bench"


@dataclass(frozen=True, slots=True)
class BenchConfig:
    events: int = 50_000
    users: int = 1_000
    batch: int = 1_000
    connections: int = 16
    http_workers: int = 1
    stream_workers: int = 1
    max_lag_s: float = 0.0
    """The server's `ingest_max_lag_s` (admission control; 0: off)."""
    poll_s: float = 0.05
    timeout_s: float = 300.0


@dataclass(frozen=True, slots=True)
class IngestBenchResult:
    events: int
    events_per_s: float
    p50_ms: float
    p99_ms: float
    bare_produce_per_s: float
    bare_consume_per_s: float
    bare_copy_per_s: float
    lost: int
    duplicated: int
    batch: int
    stream_workers: int
    ingest_max_lag_s: float
    shed_requests: int
    """Requests answered 429 by admission control (and retried by the client)."""
    cpu_ms_per_event: dict[str, float]
    """CPU time per event by process, over the measured run."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def workload(events: int, users: int, *, max_chars: int, seed: int = 0) -> list[dict[str, Any]]:
    """`events` API items: chitchat messages (exchanges and texts, with context) in
    corpus order, dealt round-robin to `users` synthetic users, each with its id."""
    from tessera.bench.chitchat import load_speakers

    messages = [
        m for s in load_speakers(min_messages=1, seed=seed, max_chars=max_chars) for m in s.messages
    ]
    now = datetime.now(UTC)
    items = []
    for i in range(events):
        item = messages[i % len(messages)].as_ingest_item(f"bench-user-{i % users:05d}")
        item["occurred_at"] = (now - timedelta(seconds=events - i)).isoformat()
        item["event_id"] = str(uuid.uuid4())
        items.append(item)
    return items


class LogTail:
    """Polls the log for new rows and notes, per event id, when it was first seen."""

    def __init__(self, database_url: str, *, poll_s: float) -> None:
        self.seen: dict[uuid.UUID, float] = {}  # written by the polling thread only
        self.rows = 0
        self._lock = threading.Lock()
        self._url = database_url
        self._poll_s = poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-tail", daemon=True)

    def __enter__(self) -> LogTail:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        last = 0
        with PostgresLogReads(self._url) as reads:
            while not self._stop.is_set():
                rows = reads.positions(BENCH_TENANT, after=last)
                now = time.monotonic()
                with self._lock:
                    for position, event_id in rows:
                        self.seen.setdefault(event_id, now)
                        last = position
                    self.rows += len(rows)
                self._stop.wait(self._poll_s)

    def wait_for(self, ids: set[uuid.UUID], timeout_s: float, *, alive: Callable[[], None]) -> None:
        """Until every id was seen or `timeout_s` passed; `alive` raises if a process
        the wait depends on has died (no point waiting for it)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.has_all(ids):
            alive()
            time.sleep(self._poll_s)

    def has_all(self, ids: set[uuid.UUID]) -> bool:
        with self._lock:
            return ids.issubset(self.seen.keys())


@contextmanager
def scratch_database(stack: StackInfo) -> Iterator[str]:
    """A fresh, migrated database on the stack's server, dropped afterwards."""
    with migrated_scratch_database(stack.database_url, prefix="tessera_bench") as url:
        yield url


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class CpuMeter:
    """CPU seconds used by named processes (with their children: PostgreSQL backends,
    uvicorn workers) between `start()` and `read()`: where the time of a run went."""

    def __init__(self, pids: dict[str, int | None], *, without_children: frozenset[str]) -> None:
        self._procs = {name: psutil.Process(pid) for name, pid in pids.items() if pid}
        self._alone = without_children
        self._start: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, proc in self._procs.items():
            total = 0.0
            family = [proc] if name in self._alone else [proc, *proc.children(recursive=True)]
            for p in family:
                try:
                    t = p.cpu_times()
                    total += t.user + t.system
                except psutil.NoSuchProcess:
                    pass
            out[name] = total
        return out

    def start(self) -> None:
        self._start = self._now()

    def read(self) -> dict[str, float]:
        now = self._now()
        return {name: round(now[name] - self._start.get(name, 0.0), 2) for name in now}


@dataclass(frozen=True, slots=True)
class PipelineResult:
    events_per_s: float
    p50_ms: float
    p99_ms: float
    lost: int
    duplicated: int
    wall_s: float
    cpu_s: dict[str, float]
    shed_requests: int


def _bench_env(stack: StackInfo, database_url: str) -> dict[str, str]:
    """Child-process settings: the scratch database, fresh topics and consumer group."""
    run_id = uuid.uuid4().hex[:8]
    return {
        "TESSERA_DATABASE_URL": database_url,
        "TESSERA_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
        "TESSERA_TOPIC_INTERACTIONS": f"tessera.bench.{run_id}.interactions",
        "TESSERA_TOPIC_INTERACTIONS_DLQ": f"tessera.bench.{run_id}.interactions.dlq",
        "TESSERA_STREAM_GROUP": f"tessera-bench-{run_id}",
    }


def run_pipeline(
    settings: Settings,
    stack: StackInfo,
    database_url: str,
    config: BenchConfig,
    items: list[dict[str, Any]],
    *,
    log_dir: Path,
    on_accepted: Callable[[int], None] | None = None,
) -> PipelineResult:
    """Worker and server up, a warm-up batch, then the measured run."""
    env = _bench_env(stack, database_url)
    env["TESSERA_INGEST_MAX_LAG_S"] = str(config.max_lag_s)
    topics = settings.model_copy(
        update={
            "topic_interactions": env["TESSERA_TOPIC_INTERACTIONS"],
            "topic_interactions_dlq": env["TESSERA_TOPIC_INTERACTIONS_DLQ"],
        }
    )
    ensure_topics(stack.kafka_bootstrap, topics)
    api_key = ensure_tenant_with_key(database_url, BENCH_TENANT)
    port = free_port()
    bodies = [encode_batch(items[i : i + config.batch]) for i in range(0, len(items), config.batch)]
    serve_args = ["serve", "--no-grpc", "--http-port", str(port)]
    serve_args += ["--workers", str(config.http_workers), "--without", "inference"]
    serve_args += ["--without", "audit"]
    worker_args = ["worker", "ingest", "--loglevel", "warning"]
    with contextlib.ExitStack() as running:
        # Several workers share the topic's partitions as one consumer group.
        workers = [
            running.enter_context(
                TesseraProcess(
                    f"ingest worker {n}", worker_args, log_path=log_dir / f"worker{n}.log", env=env
                )
            )
            for n in range(1, config.stream_workers + 1)
        ]
        server = running.enter_context(
            TesseraProcess("API server", serve_args, log_path=log_dir / "serve.log", env=env)
        )
        tail = running.enter_context(LogTail(database_url, poll_s=config.poll_s))

        def workers_alive() -> None:
            for worker in workers:
                worker.ensure_running()

        url = f"http://127.0.0.1:{port}"
        server.wait_http(f"{url}/healthz", timeout_s=180)
        client = IngestClient(url, api_key, connections=config.connections)
        # The worker's consumer group join takes a while on Tansu: wait it out first.
        warm = client.post_batch(workload(200, 10, max_chars=settings.max_text_chars, seed=1))
        tail.wait_for(set(warm.accepted), timeout_s=180, alive=workers_alive)
        if not tail.has_all(set(warm.accepted)):
            logs = ", ".join(str(w.log_path) for w in workers)
            raise RuntimeError(f"the workers committed nothing within 180 s; see {logs}")
        warm_rows = tail.rows
        meter = CpuMeter(
            {
                "server": server.pid,
                **{f"worker {n}": w.pid for n, w in enumerate(workers, start=1)},
                "postgres": stack.postgres_pid,
                "broker": stack.broker_pid,
                "bench client": os.getpid(),
            },
            # The server and worker are this process's children: count them once.
            without_children=frozenset({"bench client"}),
        )
        meter.start()
        start = time.monotonic()
        results = client.post_all(
            bodies,
            on_batch=(lambda r: on_accepted(len(r.accepted))) if on_accepted else None,
        )
        accepted = {i: r.accepted_at for r in results for i in r.accepted}
        tail.wait_for(set(accepted), timeout_s=config.timeout_s, alive=workers_alive)
        wall = time.monotonic() - start
        cpu = meter.read()
        shed = client.shed
        client.close()
    seen = tail.seen
    durable = [seen[i] for i in accepted if i in seen]
    latencies = [max(0.0, seen[i] - t) * 1000 for i, t in accepted.items() if i in seen]
    return PipelineResult(
        events_per_s=len(durable) / (max(durable) - start) if durable else 0.0,
        p50_ms=_percentile(latencies, 0.5),
        p99_ms=_percentile(latencies, 0.99),
        lost=len(accepted) - len(durable),
        duplicated=tail.rows - warm_rows - len(durable),
        wall_s=round(wall, 2),
        cpu_s=cpu,
        shed_requests=shed,
    )


def run_bench(
    settings: Settings,
    stack: StackInfo,
    config: BenchConfig,
    *,
    log_dir: Path,
    on_accepted: Callable[[int], None] | None = None,
    report: Callable[[str], None] = print,
) -> IngestBenchResult:
    """The whole benchmark: pipeline, then bare produce / consume / COPY of the same
    records with the pipeline stopped."""
    items = workload(config.events, config.users, max_chars=settings.max_text_chars)
    with scratch_database(stack) as database_url:
        pipe = run_pipeline(
            settings, stack, database_url, config, items, log_dir=log_dir, on_accepted=on_accepted
        )
        report(f"pipeline: {pipe.wall_s} s wall; CPU seconds by process: {pipe.cpu_s}")
        request = limited_request_model(settings.max_text_chars).model_validate({"events": items})
        envelopes = to_envelopes(request.events, tenant_id=BENCH_TENANT)
        records = [(stream_key(e), encode_envelope(e)) for e in envelopes]
        topic = create_topic(stack.kafka_bootstrap, settings.topic_partitions)
        produce = bare_produce(stack.kafka_bootstrap, topic, records)
        consume = bare_consume(stack.kafka_bootstrap, topic, len(records))
        copy = bare_copy(database_url, envelopes)
    return IngestBenchResult(
        events=len(items),
        events_per_s=round(pipe.events_per_s, 1),
        p50_ms=round(pipe.p50_ms, 1),
        p99_ms=round(pipe.p99_ms, 1),
        bare_produce_per_s=round(produce, 1),
        bare_consume_per_s=round(consume, 1),
        bare_copy_per_s=round(copy, 1),
        lost=pipe.lost,
        duplicated=pipe.duplicated,
        batch=config.batch,
        stream_workers=config.stream_workers,
        ingest_max_lag_s=config.max_lag_s,
        shed_requests=pipe.shed_requests,
        cpu_ms_per_event={
            name: round(1000 * seconds / len(items), 3) for name, seconds in pipe.cpu_s.items()
        },
    )
