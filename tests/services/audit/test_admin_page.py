"""The admin page in headless Chromium: its script must draw the lineage graph and the
metric plot from the API, and show a revision's provenance when its node is clicked.

Needs Debian's `chromium` (`apt-get install -y chromium`); skipped, saying so, without it.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tessera.events.postgres_store import PostgresEventStore
from tessera.services.audit.backend import AdminBackend
from tessera.services.corrective import CorrectiveActions
from tessera.workers.adapter_store import LocalAdapterStore

from .builders import Rev, interactions, marker, revision
from .servers import ADMIN_KEY, AdminServer, admin_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)"
)


@pytest.fixture()
def history(
    store: PostgresEventStore, adapters: LocalAdapterStore, actions: CorrectiveActions
) -> list[Rev]:
    """Five revisions with a branch, a rejection and a rollback."""
    interactions(store, "acme", "alice", [marker("p")])
    r1 = revision(store, adapters, "acme", "alice", parent=None, user_nll=2.4, baseline_nll=2.6)
    r2 = revision(store, adapters, "acme", "alice", parent=r1.revision_id, user_nll=2.1,
                  baseline_nll=2.4)
    r3 = revision(store, adapters, "acme", "alice", parent=r2.revision_id, outcome="rejected",
                  user_nll=2.3, baseline_nll=2.1)
    r4 = revision(store, adapters, "acme", "alice", parent=r2.revision_id, user_nll=1.9,
                  baseline_nll=2.1)
    r5 = revision(store, adapters, "acme", "alice", parent=r4.revision_id, user_nll=1.7,
                  baseline_nll=1.9)
    actions.rollback("acme", "alice", to_revision_id=r4.revision_id, reason="r5 too terse",
                     actor="ops")
    return [r1, r2, r3, r4, r5]


@pytest.fixture()
def server(store: PostgresEventStore, actions: CorrectiveActions) -> Iterator[AdminServer]:
    with admin_server(AdminBackend(store=store, actions=actions)) as s:
        yield s


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}", "--window-size=1200,900",
        # Virtual time runs until the page is idle (its fetches answered), at most this long.
        "--virtual-time-budget=15000", *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def _png_colours(path: Path) -> int:
    """Distinct pixel values in the first rows of an 8-bit RGB(A) PNG (blank pages have 1)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, _, depth, colour = struct.unpack(">IIBB", header[:10])
    channels = {2: 3, 6: 4}[colour]
    assert depth == 8
    raw = zlib.decompress(idat)
    stride = 1 + width * channels
    # Unfiltered bytes are enough to tell a blank image from a drawn one.
    rows = [raw[i * stride + 1:(i + 1) * stride] for i in range(0, 400)]
    return len({row[j:j + channels] for row in rows for j in range(0, len(row), channels)})


def test_page_draws_graph_plot_and_provenance(
    server: AdminServer, history: list[Rev], tmp_path: Path
) -> None:
    served = history[3].revision_id
    clicked = history[1].revision_id
    url = f"{server.http}/admin/users/acme/alice#key={ADMIN_KEY}&select={clicked}"

    dom = _chromium(tmp_path / "profile-dom", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert 'data-state="ready"' in html, html[:3000]
    # The lineage graph: one node per revision, the served one marked, edges drawn.
    nodes = re.findall(r'<g class="node[^"]*" data-rev="([^"]+)" data-state="([^"]+)"', html)
    assert [n for n, _ in nodes] == [r.revision_id for r in history]
    assert dict(nodes)[history[2].revision_id] == "rejected"
    assert dict(nodes)[history[4].revision_id] == "rolled_back"
    assert re.search(rf'<g class="node served[^"]*" data-rev="{served}"', html)
    assert html.count('class="edge"') == len(history) - 1
    # The plot: one point per evaluated revision, the metric line and the baseline line.
    assert len(re.findall(r'<circle class="point"', html)) == len(history)
    assert 'class="series"' in html and 'class="baseline"' in html
    # The click on a node loaded that revision's provenance.
    assert f'data-provenance="{clicked}"' in html
    assert f'<table id="provenance-table" data-rev="{clicked}">' in html
    assert "git:test" in html and history[1].digest in html
    assert "r5 too terse" in html  # the history table

    shot = tmp_path / "admin-page.png"
    taken = _chromium(tmp_path / "profile-shot", f"--screenshot={shot}", url)
    assert taken.returncode == 0 and shot.is_file(), taken.stderr[-2000:]
    assert _png_colours(shot) > 20, "the screenshot is blank"
    keep = os.environ.get("TESSERA_TEST_ARTIFACTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "admin-page.png")
