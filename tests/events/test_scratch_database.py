"""events.migrate.scratch_database: a fresh migrated database, dropped afterwards."""

from __future__ import annotations

import pytest

from tessera.events.db import connect
from tessera.events.migrate import applied_migrations, available_migrations, scratch_database
from tessera.events.store import EventStoreError
from tessera.infra.stack import StackInfo


def test_scratch_database_is_migrated_then_dropped(stack: StackInfo) -> None:
    with scratch_database(stack.database_url, prefix="tessera_scratch") as url:
        assert url.rpartition("/")[2].startswith("tessera_scratch_")
        assert len(applied_migrations(url)) == len(available_migrations())
        held = connect(url)  # an open connection does not keep it from being dropped
    with pytest.raises(EventStoreError):
        connect(url).close()
    held.close()
