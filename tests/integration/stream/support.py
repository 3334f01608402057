"""Helpers of the stream worker tests: the real `tessera worker ingest` as a subprocess
(so a test can kill -9 it), producing records, reading back what the log holds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient

from tessera.events.kafka import encode_envelope, ensure_topics, make_producer, stream_key
from tessera.events.kafka_no_autocreate import NO_AUTO_CREATE
from tessera.events.stream_worker import EXIT_STALLED
from tessera.schemas.events import EventEnvelope, EventType
from tessera.schemas.settings import Settings

TESSERA = Path(sys.executable).with_name("tessera")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class StreamEnv:
    """Where one test's worker reads and writes."""

    bootstrap: str
    database_url: str
    state_dir: Path
    topic: str
    dlq: str
    group: str

    def settings(self) -> Settings:
        return Settings(
            state_dir=self.state_dir,
            database_url=self.database_url,
            kafka_bootstrap=self.bootstrap,
            topic_interactions=self.topic,
            topic_interactions_dlq=self.dlq,
            stream_group=self.group,
            max_text_chars=1000,
        )

    def worker_environ(self) -> dict[str, str]:
        s = self.settings()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
        env.update({
            "TESSERA_STATE_DIR": str(s.state_dir),
            "TESSERA_DATABASE_URL": self.database_url,
            "TESSERA_KAFKA_BOOTSTRAP": self.bootstrap,
            "TESSERA_TOPIC_INTERACTIONS": self.topic,
            "TESSERA_TOPIC_INTERACTIONS_DLQ": self.dlq,
            "TESSERA_STREAM_GROUP": self.group,
            "TESSERA_MAX_TEXT_CHARS": str(s.max_text_chars),
        })
        return env


class Worker:
    """One `tessera worker ingest` process; its output goes to a log file per start."""

    def __init__(
        self,
        env: StreamEnv,
        *,
        extra_env: dict[str, str] | None = None,
        supervised: bool = False,
        name: str = "worker",
    ) -> None:
        self.env = env
        self.name = name  # of its log files: several workers may share one env
        self.extra_env = extra_env or {}
        # Like systemd or Kubernetes: a worker that exits asking for a restart (status 75)
        # is started again, when checked with `assert_alive`.
        self.supervised = supervised
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.env.state_dir / f"{self.name}-{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [str(TESSERA), "worker", "ingest"],
                env=self.env.worker_environ() | self.extra_env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill9(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def assert_alive(self) -> None:
        if self.supervised and self.proc is not None and self.proc.poll() == EXIT_STALLED:
            self.start()
            return
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"worker died; log:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


# --- producing -------------------------------------------------------------------------


def interaction(user: str, n: int, *, tenant: str = "acme") -> EventEnvelope:
    """User `user`'s n-th text event (n is in the text so order can be checked)."""
    return EventEnvelope(
        event_type=EventType.TEXT,
        tenant_id=tenant,
        user_id=user,
        occurred_at=T0 + timedelta(seconds=n),
        data={"text": f"{user} message {n}"},
    )


def interleaved(users: int, per_user: int) -> list[EventEnvelope]:
    """users x per_user events, round-robin over users (so partitions interleave)."""
    return [interaction(f"user{u:04d}", n) for n in range(per_user) for u in range(users)]


def produce(env: StreamEnv, events: Sequence[EventEnvelope]) -> None:
    producer = make_producer(env.bootstrap, client_id="test-producer")
    try:
        for ev in events:
            producer.send(env.topic, key=stream_key(ev), value=encode_envelope(ev))
        producer.flush(timeout=60)
    finally:
        producer.close(timeout=10)


def produce_raw(env: StreamEnv, records: Sequence[tuple[bytes | None, bytes | None]]) -> None:
    producer = make_producer(env.bootstrap, client_id="test-producer")
    try:
        for key, value in records:
            producer.send(env.topic, key=key, value=value)
        producer.flush(timeout=60)
    finally:
        producer.close(timeout=10)


def consume_all(bootstrap: str, topic: str, *, expect: int, timeout_s: float = 30.0) -> list[
    tuple[bytes | None, bytes | None, dict[str, bytes]]
]:
    """(key, value, headers) of the first `expect` records of `topic` (fails if fewer)."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        consumer_timeout_ms=1000,
    )
    out: list[tuple[bytes | None, bytes | None, dict[str, bytes]]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expect and time.monotonic() < deadline:
            for msg in consumer:
                out.append((msg.key, msg.value, dict(msg.headers)))
    finally:
        consumer.close()
    assert len(out) >= expect, f"only {len(out)} of {expect} records on {topic}"
    return out


# --- reading the database ------------------------------------------------------------------


def scalar(database_url: str, query: str) -> int:
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def wait_until(
    what: str, predicate: Callable[[], bool], *, timeout_s: float, worker: Worker | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if worker is not None:
            worker.assert_alive()
        try:
            if predicate():
                return
        except psycopg.OperationalError:
            pass  # the database may be restarting in the test
        time.sleep(0.2)
    tail = f"\nworker log:\n{worker.log_tail()}" if worker is not None else ""
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}{tail}")


def event_count(database_url: str) -> int:
    return scalar(database_url, "SELECT count(*) FROM events")


def stored_streams(database_url: str) -> dict[tuple[str, str], list[str]]:
    """(tenant, user) -> event ids in stream_version order, plus a check that the
    versions are exactly 1..n (no gap, no repeat)."""
    streams: dict[tuple[str, str], list[str]] = {}
    versions: dict[tuple[str, str], list[int]] = {}
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT tenant_id, user_id, stream_version, event_id::text FROM events "
            "ORDER BY tenant_id, user_id, stream_version"
        ).fetchall()
    for tenant, user, version, event_id in rows:
        streams.setdefault((tenant, user), []).append(event_id)
        versions.setdefault((tenant, user), []).append(version)
    for key, vs in versions.items():
        assert vs == list(range(1, len(vs) + 1)), f"stream {key} versions are not 1..n: {vs[:10]}"
    return streams


def expected_streams(events: Sequence[EventEnvelope]) -> dict[tuple[str, str], list[str]]:
    streams: dict[tuple[str, str], list[str]] = {}
    for ev in events:
        streams.setdefault((ev.tenant_id, ev.user_id), []).append(str(ev.event_id))
    return streams


def recreate_topic(env: StreamEnv) -> None:
    """Delete the interactions topic and create it again: a new incarnation whose offsets
    start at 0 (what a restart of the in-memory Tansu broker does to every topic)."""
    admin = KafkaAdminClient(bootstrap_servers=env.bootstrap)
    try:
        admin.delete_topics([env.topic])
        deadline = time.monotonic() + 30
        while env.topic in admin.list_topics():
            assert time.monotonic() < deadline, f"{env.topic} was not deleted"
            time.sleep(0.2)
    finally:
        admin.close()
    ensure_topics(env.bootstrap, env.settings())


def committed_offsets(env: StreamEnv) -> dict[int, int]:
    """The worker group's committed offset per partition of the topic (absent: none)."""
    consumer = KafkaConsumer(
        **NO_AUTO_CREATE,
        bootstrap_servers=env.bootstrap,
        group_id=env.group,
        enable_auto_commit=False,
        request_timeout_ms=10_000,
    )
    try:
        found = {}
        for partition in sorted(consumer.partitions_for_topic(env.topic) or ()):
            offset = consumer.committed(TopicPartition(env.topic, partition))
            if offset is not None:
                found[partition] = int(offset)
        return found
    finally:
        consumer.close()
