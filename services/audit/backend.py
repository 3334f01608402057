"""What the admin API needs at run time: the event store and the corrective actions.

One `AdminBackend` per server process (built by `services.audit.component`) or per CLI
command (`open_backend`); the HTTP routes find it on `app.state.admin`, the gRPC
servicer holds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tessera.events.postgres_store import PostgresEventStore
from tessera.services.corrective import CorrectiveActions, KafkaRevisionPublisher
from tessera.workers.adapter_store import LocalAdapterStore


@dataclass(slots=True)
class AdminBackend:
    store: PostgresEventStore
    actions: CorrectiveActions
    _publisher: KafkaRevisionPublisher | None = field(default=None, repr=False)

    def close(self) -> None:
        if self._publisher is not None:
            self._publisher.close()
        self.store.close()


def open_backend(
    *,
    database_url: str,
    adapter_dir: Path,
    kafka_bootstrap: str | None,
    revisions_topic: str,
) -> AdminBackend:
    """A backend on PostgreSQL, the local adapter store and (when `kafka_bootstrap` is
    given) a publisher on the revisions topic. Call `close()`."""
    store = PostgresEventStore(database_url, pool_size=2)
    publisher = None
    try:
        if kafka_bootstrap is not None:
            publisher = KafkaRevisionPublisher(kafka_bootstrap, revisions_topic)
        actions = CorrectiveActions(store, LocalAdapterStore(adapter_dir), publisher)
    except BaseException:
        store.close()
        raise
    return AdminBackend(store=store, actions=actions, _publisher=publisher)
