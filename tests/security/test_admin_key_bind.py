"""The well-known development admin key never serves beyond loopback: `tessera serve`
refuses a public bind address with it before anything starts, and says what to set."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from tessera.infra.stack import StackInfo
from tessera.schemas.settings import Settings, get_settings
from tessera.services.cli import app
from tessera.services.server import (
    ServeOptions,
    UnsafeBind,
    check_admin_key_for_host,
    run_server,
)

PUBLIC_HOSTS = ["0.0.0.0", "::", "192.168.1.20", "tessera.example.com"]


@pytest.fixture()
def default_admin_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("TESSERA_ADMIN_KEY", raising=False)
    monkeypatch.delenv("TESSERA_ENVIRONMENT", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _no_stack() -> StackInfo:
    pytest.fail("the local stack was started although the server must refuse to start")


@pytest.mark.parametrize("host", PUBLIC_HOSTS)
def test_serve_refuses_a_public_host_with_the_default_admin_key(
    host: str, default_admin_key: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tessera.services.cli.commands.serve.stack_info", _no_stack)
    out = CliRunner().invoke(app, ["serve", "--host", host, "--no-grpc"])
    assert out.exit_code == 1, out.output
    assert "TESSERA_ADMIN_KEY" in out.output and "127.0.0.1" in out.output


@pytest.mark.parametrize("host", PUBLIC_HOSTS)
def test_run_server_refuses_before_building_anything(host: str, default_admin_key: None) -> None:
    # A stack that cannot be reached: had the check come after start-up, connecting to it
    # would fail with a different error.
    stack = StackInfo("postgresql://nobody@127.0.0.1:1/none", "127.0.0.1:1", None, None)
    options = ServeOptions(host=host, http_port=1, grpc_port=None)
    with pytest.raises(UnsafeBind, match="TESSERA_ADMIN_KEY"):
        run_server(Settings(), stack, options)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_keeps_working_with_the_default_key(host: str, default_admin_key: None) -> None:
    check_admin_key_for_host(Settings(), host)  # `make demo` and the tests bind these


@pytest.mark.parametrize("host", PUBLIC_HOSTS)
def test_a_set_admin_key_may_serve_anywhere(host: str, default_admin_key: None) -> None:
    check_admin_key_for_host(Settings(admin_key="a-real-secret-0b9f3c"), host)
