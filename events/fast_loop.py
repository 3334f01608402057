"""uvloop for the ingest path's event loops, where it is installed (not on Windows).

The server's HTTP loop gets it from uvicorn by itself; the stream worker asks for it here
before faust makes its loops. Measured with `tessera bench ingest`: uvloop and httptools
together took the server from 0.153 to 0.129 ms of CPU per event.

The ingest publisher's thread keeps asyncio's own loop: its retire-on-broken-connection
path (events/kafka_publisher.py) was proven with that loop, and one CI run with uvloop
there saw batches reported failed that the restarted broker had written (duplicates on
the topic: harmless for the log, whose event ids are unique, but unexplained).
"""

from __future__ import annotations

import asyncio
import importlib
from types import ModuleType


def _uvloop() -> ModuleType | None:
    try:
        return importlib.import_module("uvloop")
    except ImportError:  # pragma: no cover - platforms without uvloop
        return None


def use_fast_loops() -> None:
    """Make loops created from now on in this process uvloop's (faust creates its own:
    the worker's and its consumer thread's); asyncio's stay where uvloop is missing."""
    uvloop = _uvloop()
    if uvloop is not None:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
