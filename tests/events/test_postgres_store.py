"""PostgreSQL-only behaviour: concurrent appends, tailing readers, error translation."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import cast

import psycopg
import pytest
from psycopg import pq

from tessera.events import db
from tessera.events.catalog import served_revision
from tessera.events.db import connect, translated, with_retry
from tessera.events.postgres_store import PostgresEventStore
from tessera.events.store import EventStoreError, TransientStoreError
from tessera.schemas.events import PRIOR_USER_ID

from .factories import evaluated, exchange, promoted, trained


def test_concurrent_appends_commit_positions_in_order(database_url: str) -> None:
    """Four writers and a tailing reader: the reader never sees a position after a larger
    one (the table lock's purpose), and in the end sees every event exactly once."""
    writers, batches, size = 4, 8, 25
    seen: list[int] = []
    done = threading.Event()
    with PostgresEventStore(database_url, pool_size=writers + 1) as store:

        def write(w: int) -> None:
            for b in range(batches):
                store.append([exchange("t", f"u{(w + i) % 5}", b * size + i) for i in range(size)])

        def tail() -> None:
            last = 0
            while True:
                finished = done.is_set()
                for ev in store.read(after=last):
                    seen.append(ev.position)
                    last = ev.position
                if finished:
                    return

        reader = threading.Thread(target=tail)
        reader.start()
        threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        done.set()
        reader.join()
        everything = store.read()
    total = writers * batches * size
    assert [e.position for e in everything] == seen
    assert seen == sorted(seen) and len(seen) == len(set(seen)) == total
    for user in {e.envelope.user_id for e in everything}:
        versions = [e.stream_version for e in everything if e.envelope.user_id == user]
        assert versions == list(range(1, len(versions) + 1))


def test_lost_connections_are_retried(database_url: str) -> None:
    with PostgresEventStore(database_url) as store:
        store.append([exchange("t", "u", 0)])
        # Kill every server process serving the store, as a server restart would.
        with psycopg.connect(database_url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
        assert killed is not None and killed[0] >= 1
        assert len(store.append([exchange("t", "u", 1)])) == 1
        assert [e.stream_version for e in store.read()] == [1, 2]


def test_errors_are_translated_and_only_transient_ones_retried(database_url: str) -> None:
    calls = 0

    def broken_sql() -> None:
        nonlocal calls
        calls += 1
        with connect(database_url) as conn, translated("query a missing table"):
            conn.execute("SELECT * FROM no_such_table")

    with pytest.raises(EventStoreError, match="query a missing table") as info:
        with_retry(broken_sql)
    assert not isinstance(info.value, TransientStoreError) and calls == 1

    def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise TransientStoreError("try again")
        return "ok"

    calls = 0
    assert with_retry(flaky, first_delay_s=0.001) == "ok" and calls == 4
    calls = -100
    with pytest.raises(TransientStoreError):
        with_retry(flaky, attempts=3, first_delay_s=0.001)


def _statements_sent(store: PostgresEventStore, trace: Path, call: object) -> list[str]:
    """The simple-protocol queries and parsed statements the store's (only) pooled
    connection sends to the server while `call()` runs, from libpq's protocol trace; the
    pool's liveness check is an empty query (`""`)."""
    with trace.open("w") as out:
        with store.connection() as conn:  # sends nothing: no statement, so no BEGIN
            conn.pgconn.trace(out.fileno())
            conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
        try:
            assert callable(call)
            call()
        finally:
            with store.connection() as conn:
                conn.pgconn.untrace()
    fields = [line.split("\t") for line in trace.read_text().splitlines()]
    sent = [f[3].strip() for f in fields
            if len(f) > 3 and f[0] == "F" and f[2] in ("Query", "Parse")]
    return sent


def test_one_statement_reads_send_no_begin_or_commit(database_url: str, tmp_path: Path) -> None:
    """A head lookup (the serving resolver's cache miss) is its one statement on the wire:
    no BEGIN and COMMIT round trips around it. Appends on the same connection afterwards
    are still transactions."""
    with PostgresEventStore(database_url, pool_size=1) as store:
        store.append([exchange("t", "u", 0)])
        trace = tmp_path / "libpq.trace"
        read = _statements_sent(store, trace, lambda: store.get_head("t", "u"))
        # the connection was used a moment ago: no liveness check either
        assert len(read) == 1 and 'FROM "heads"' in read[0], read
        write = _statements_sent(store, trace, lambda: store.append([exchange("t", "u", 1)]))
        assert write[0] == '"BEGIN"' and write[-1] == '"COMMIT"', write
        assert store.get_user("t", "u") is not None
        assert [e.stream_version for e in store.read()] == [1, 2]


def test_what_a_user_is_served_is_one_statement_whichever_head_answers(
    database_url: str, tmp_path: Path
) -> None:
    """The serving resolver's cache miss (`served`): the user's head, else the tenant
    prior's, else the base, as `served_revision` says, and one statement on the wire for
    a user on the prior too (two separate head reads before)."""
    with PostgresEventStore(database_url, pool_size=1) as store:
        store.append([trained("t", PRIOR_USER_ID, "p1", kind="prior"),
                      evaluated("t", PRIOR_USER_ID, "p1"), promoted("t", PRIOR_USER_ID, "p1")])
        store.append([trained("t", "ann", "a1", parent="p1"), evaluated("t", "ann", "a1"),
                      promoted("t", "ann", "a1")])
        cases = {("t", "ann"): ("a1", "personal"), ("t", "bob"): ("p1", "prior"),
                 ("t", PRIOR_USER_ID): ("p1", "prior"), ("u", "ann"): (None, "base")}
        for (tenant, user), (revision, source) in cases.items():
            got = store.served(tenant, user)
            assert (got.revision_id, got.source) == (revision, source), (tenant, user)
            assert got == served_revision(store, tenant, user)
        sent = _statements_sent(store, tmp_path / "libpq.trace",
                                lambda: store.served("t", "bob"))
        assert len(sent) == 1 and 'FROM "heads"' in sent[0], sent


def test_a_connection_idle_past_the_recheck_time_is_checked_before_it_is_lent(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "RECHECK_IDLE_S", 0.2)
    with PostgresEventStore(database_url, pool_size=1) as store:
        store.append([exchange("t", "u", 0)])
        trace = tmp_path / "libpq.trace"

        def after_idling() -> None:
            time.sleep(0.3)
            store.get_head("t", "u")

        sent = _statements_sent(store, trace, after_idling)
        assert sent[0] == '""' and 'FROM "heads"' in sent[1] and len(sent) == 2, sent


def test_a_read_on_a_connection_that_died_unchecked_is_retried(database_url: str) -> None:
    """Killed right after use, the pooled connection is lent again without a liveness check;
    its statement fails, and the read is repeated on a fresh connection."""
    with PostgresEventStore(database_url, pool_size=1) as store:
        store.append([exchange("t", "u", 0)])
        assert store.get_head("t", "u") is None  # no revision yet: no head
        with psycopg.connect(database_url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
        assert killed is not None and killed[0] == 1
        user = store.get_user("t", "u")
        assert user is not None and user.user_id == "u"


def test_unreachable_database_is_transient() -> None:
    with pytest.raises(TransientStoreError, match="connect to PostgreSQL"):
        connect("postgresql://postgres@127.0.0.1:1/nothing?connect_timeout=2")


def _raw_bytes(conn: psycopg.Connection[tuple[object, ...]], table: str) -> bytes:
    """The table's heap and TOAST files as stored on disk (superuser only)."""
    conn.execute("CHECKPOINT")  # flush dirty pages so the files hold the current state
    out = b""
    for (path,) in conn.execute(
        "SELECT pg_relation_filepath(c.oid) FROM pg_class c WHERE c.oid = %s::regclass "
        "OR c.oid = (SELECT reltoastrelid FROM pg_class WHERE oid = %s::regclass)",
        (table, table),
    ):
        if path:
            row = conn.execute("SELECT pg_read_binary_file(%s)", (path,)).fetchone()
            out += bytes(cast(tuple[bytes], row)[0])  # one row: the file exists
    return out


def test_forget_then_purge_leaves_no_byte_of_the_text_on_disk(database_url: str) -> None:
    secret = "my-very-private-sentence-4711"
    with PostgresEventStore(database_url) as store:
        ev = exchange("t", "alice", 0).model_copy(
            update={"data": {"prompt": secret, "response": "ok", "context": []}}
        )
        store.append([ev, exchange("t", "bob", 1)])
        with psycopg.connect(database_url, autocommit=True) as conn:
            assert secret.encode() in _raw_bytes(conn, "events")
            store.forget_user("t", "alice", actor="admin", reason="request")
            # Erased for SQL readers at once, but the dead row version is still on disk.
            assert conn.execute(
                "SELECT count(*) FROM events WHERE data::text LIKE %s", (f"%{secret}%",)
            ).fetchone() == (0,)
            assert secret.encode() in _raw_bytes(conn, "events")
            store.purge_erased()
            assert secret.encode() not in _raw_bytes(conn, "events")
            assert b"secret prompt bob 1" in _raw_bytes(conn, "events")
