"""Readiness probes of the two backends: can PostgreSQL run a query, does the broker
answer a metadata request. Each raises on failure, with the reason in its message."""

from __future__ import annotations

import psycopg
from kafka.admin import KafkaAdminClient


def ping_database(database_url: str, *, timeout_s: float = 2.0) -> None:
    """One round trip (`SELECT 1`) on a fresh connection, not a pooled one: a pool can
    hold a connection to a server that has since gone away."""
    timeout = max(1, round(timeout_s))  # libpq takes whole seconds
    with psycopg.connect(database_url, connect_timeout=timeout, autocommit=True) as conn:
        conn.execute("SELECT 1").fetchone()


def ping_broker(bootstrap: str, *, timeout_s: float = 2.0) -> None:
    """A metadata request through the real client (a TCP accept alone would pass a broker
    that is up but not serving)."""
    ms = int(timeout_s * 1000)
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="tessera-readiness",
        request_timeout_ms=ms,
        bootstrap_timeout_ms=ms,
    )
    try:
        admin.list_topics()
    finally:
        admin.close()
