"""What the demo's steps share (`DemoRun`): kept apart from the command
(`commands/demo.py`) and the later acts (`demo_learning.py`), which both use it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:  # for the annotation only: `tessera --help` stays quick without httpx
    from tessera.bench.subprocesses import TesseraProcess

DEMO_TENANT: Final = "demo"  # prefix of each run's tenants


def run_tenant() -> str:
    """This run's tenant: `demo-<UTC yymmdd-hhmmss>-<4 hex>` (the hex: two runs in one
    second still get two tenants)."""
    stamp = time.strftime("%y%m%d-%H%M%S", time.gmtime())
    return f"{DEMO_TENANT}-{stamp}-{uuid.uuid4().hex[:4]}"


@dataclass
class DemoRun:
    """What the steps share; each step reads what earlier ones filled in."""

    users: int
    messages_per_user: int
    seed: int
    state_dir: Path
    tenant_id: str = field(default_factory=run_tenant)  # the ingest act's
    train_users: int = 3
    days: int = 3
    train_messages: int = 45
    database_url: str = ""
    kafka_bootstrap: str = ""
    api_key: str = ""
    http_url: str = ""
    accepted: list[uuid.UUID] = field(default_factory=list)
    processes: list[TesseraProcess] = field(default_factory=list)  # stopped at the end


    @property
    def days_tenant(self) -> str:
        """The training act's tenant: its users start with no history and no revisions."""
        return f"{self.tenant_id}-days"


Step = Callable[[DemoRun], None]
