"""PostgreSQL connections and the one boundary where driver errors become store errors.

Every psycopg call of the event store runs inside `translated()`: callers above this
module see only `EventStoreError` (permanent: bad SQL, constraint broken, invalid event)
or `TransientStoreError` (connection lost, server restarting, lock or serialisation
conflict), and only the transient kind is retried, by `with_retry`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Final, TypeVar
from weakref import WeakKeyDictionary

import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool, PoolTimeout
from pydantic_core import to_json

from tessera.events.store import EventStoreError, TransientStoreError

log = logging.getLogger(__name__)

T = TypeVar("T")

# SQLSTATEs after which repeating the whole transaction may succeed.
TRANSIENT_SQLSTATES: Final = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "55P03",  # lock_not_available (our lock_timeout)
        "57014",  # query_canceled (statement_timeout)
        "57P01",  # admin_shutdown (server restarting)
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now (server starting up)
        "53300",  # too_many_connections
    }
)

Connection = psycopg.Connection[TupleRow]


def is_transient(exc: BaseException) -> bool:
    """Whether repeating the operation may succeed: lost connections and conflicts."""
    if isinstance(exc, PoolTimeout | TransientStoreError):
        return True
    if not isinstance(exc, psycopg.Error):
        return False
    sqlstate = exc.sqlstate
    if sqlstate is None:
        # No SQLSTATE: the error is the client's, e.g. the connection dropped mid-query.
        return isinstance(exc, psycopg.OperationalError)
    return sqlstate in TRANSIENT_SQLSTATES or sqlstate.startswith("08")  # connection class


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Run a block of driver calls; re-raise driver errors as store errors naming `what`."""
    try:
        yield
    except (psycopg.Error, PoolTimeout) as exc:
        if is_transient(exc):
            raise TransientStoreError(
                f"{what}: database unavailable or busy, retry ({exc})"
            ) from exc
        raise EventStoreError(f"{what}: {exc}") from exc


def with_retry(
    operation: Callable[[], T],
    *,
    attempts: int = 8,
    first_delay_s: float = 0.05,
    max_delay_s: float = 2.0,
) -> T:
    """Call `operation`, repeating it with exponential backoff while it raises
    `TransientStoreError`. Permanent errors propagate at once. `operation` must be a
    whole transaction, so that repeating it is safe."""
    delay = first_delay_s
    for attempt in range(1, attempts + 1):
        try:
            return operation()
        except TransientStoreError as exc:
            if attempt == attempts:
                raise
            log.warning("transient database error (attempt %d/%d): %s", attempt, attempts, exc)
            time.sleep(delay)
            delay = min(delay * 2, max_delay_s)
    raise AssertionError("unreachable")  # the loop returns or raises


def connect(url: str, *, autocommit: bool = False) -> Connection:
    """One connection, errors translated."""
    with translated("connect to PostgreSQL"):
        return psycopg.connect(url, autocommit=autocommit)


# A connection back in the pool for less than this is lent without a liveness check.
RECHECK_IDLE_S: Final = 1.0


class IdleLivenessCheck:
    """The pool's check before lending a connection, skipped for one returned less than
    `recheck_idle_s` ago. The check is a round trip of its own: on a head lookup (the
    serving resolver's cache miss: one indexed probe) it was half the wire time, and at
    10^6 users under 8 threads on 2 cores every round trip is a chance to wait for a core.
    A connection that died while idle that briefly (the server restarted in that second)
    fails its statement with a transient error, the pool discards it on return, and the
    store's retry (`with_retry`, one-statement reads included) takes another."""

    def __init__(self, recheck_idle_s: float | None = None) -> None:
        self.recheck_idle_s = RECHECK_IDLE_S if recheck_idle_s is None else recheck_idle_s
        self._returned: WeakKeyDictionary[Connection, float] = WeakKeyDictionary()

    def returned(self, conn: Connection) -> None:
        """The pool's `reset` hook: `conn` is back, idle."""
        self._returned[conn] = time.monotonic()

    def check(self, conn: Connection) -> None:
        """The pool's `check` hook: raises when `conn` is dead."""
        returned = self._returned.get(conn)
        if returned is not None and time.monotonic() - returned < self.recheck_idle_s:
            return
        ConnectionPool.check_connection(conn)


def make_pool(
    url: str, *, min_size: int = 1, max_size: int = 4, timeout_s: float = 10.0
) -> ConnectionPool:
    """A connection pool that checks connections idle for a while before lending them, so
    that after a server restart callers get fresh connections instead of dead ones."""
    liveness = IdleLivenessCheck()
    pool: ConnectionPool = ConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout_s,
        check=liveness.check,
        reset=liveness.returned,
        open=False,
        name="tessera-events",
    )
    # Opening does not wait for the first connection: a database that is still starting
    # surfaces later as a transient error on first use, which callers retry.
    pool.open(wait=False)
    return pool


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"cannot store a {type(value).__name__} as JSON")


def json_rows(rows: Sequence[dict[str, Any]]) -> str:
    """Rows as one JSON array, for `INSERT ... SELECT FROM jsonb_populate_recordset(NULL::t,
    %s)`: one parameter per batch, encoded by the C JSON encoder and parsed by the server,
    which is several times cheaper than binding or COPYing values one by one in Python.
    pydantic-core's encoder (Rust) is ~3x faster than `json.dumps` on a 500-row batch
    (1.6 vs 5.1 ms; a few % of the ingest worker's CPU), same text for ASCII rows."""
    return to_json(rows, fallback=_json_default).decode()
