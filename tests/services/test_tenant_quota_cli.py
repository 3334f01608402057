"""`tessera tenant set-quota`: stores a tenant's limits in the tenants table, keeps the
ones not given, and puts them back to the server's defaults with --default."""

from __future__ import annotations

import psycopg
import pytest
from typer.testing import CliRunner

from tessera.events import tenants
from tessera.infra.stack import StackInfo
from tessera.services.cli import app


def test_set_quota_stores_the_tenants_limits(
    database_url: str, stack: StackInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = StackInfo(database_url, stack.kafka_bootstrap, None, None)
    monkeypatch.setattr("tessera.services.cli.commands.tenant.stack_info", lambda: info)
    with psycopg.connect(database_url, autocommit=True) as conn:
        tenants.create_tenant(conn, "acme")

    def run(*args: str) -> str:
        out = CliRunner().invoke(app, ["tenant", "set-quota", "acme", *args])
        assert out.exit_code == 0, out.output
        return out.output

    def stored() -> tenants.TenantQuota | None:
        with psycopg.connect(database_url) as conn:
            return tenants.get_quota(conn, "acme")

    assert "events/s: 50, requests/s: default, tokens/s: no limit" in run(
        "--events-per-s", "50", "--tokens-per-s", "0"
    )
    assert stored() == tenants.TenantQuota(ingest_events_per_s=50, inference_tokens_per_s=0)
    run("--requests-per-s", "3")  # the others keep their values
    assert stored() == tenants.TenantQuota(50, 3, 0)
    run("--default", "--requests-per-s", "5")
    assert stored() == tenants.TenantQuota(inference_requests_per_s=5)
    refused = CliRunner().invoke(app, ["tenant", "set-quota", "ghost", "--events-per-s", "1"])
    assert refused.exit_code == 1 and "no tenant 'ghost'" in refused.output
    negative = CliRunner().invoke(app, ["tenant", "set-quota", "acme", "--events-per-s", "-1"])
    assert negative.exit_code != 0 and stored() == tenants.TenantQuota(inference_requests_per_s=5)
    listed = CliRunner().invoke(app, ["tenant", "list"])
    assert "quota: events/s: default, requests/s: 5, tokens/s: default" in listed.output
