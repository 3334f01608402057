"""The HAProxy configuration for several `tessera serve` replicas (infra/haproxy.cfg.template).

`render_config` fills in the listening address and one `server` line per replica;
`haproxy -f FILE` runs it (Debian package `haproxy`, installed by `make sysdeps`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from string import Template
from typing import Final

# Routing header: clients put "tenant/user" here (README, "Several serving replicas").
USER_HEADER: Final = "X-Tessera-User"
_NAME: Final = re.compile(r"^[A-Za-z0-9_.-]+$")
_ADDRESS: Final = re.compile(r"^[A-Za-z0-9_.:\[\]-]+:\d+$")


@dataclass(frozen=True, slots=True)
class Replica:
    name: str  # the server's name in HAProxy's logs and stats
    address: str  # host:port of its HTTP listener


def render_config(*, bind: str, replicas: Sequence[Replica]) -> str:
    """The configuration text. Raises ValueError for no replicas, a duplicate name, or a
    name or address HAProxy would misread (the values go into its config verbatim)."""
    if not replicas:
        raise ValueError("at least one replica is needed")
    names = [r.name for r in replicas]
    if len(set(names)) != len(names):
        raise ValueError(f"replica names must be unique: {names}")
    for value, pattern in [(bind, _ADDRESS)] + [
        (v, p) for r in replicas for v, p in ((r.name, _NAME), (r.address, _ADDRESS))
    ]:
        if not pattern.match(value):
            raise ValueError(f"{value!r} cannot go into an HAProxy config")
    template = Template(
        resources.files("tessera.infra").joinpath("haproxy.cfg.template").read_text()
    )
    servers = "\n".join(f"    server {r.name} {r.address} check" for r in replicas)
    return template.substitute(bind=bind, servers=servers)
