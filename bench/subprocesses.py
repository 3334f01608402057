"""Child `tessera` processes for the demo and the benchmarks: started with their output in
a log file, waited on until they answer, stopped by PID (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

import httpx


class ProcessNotReady(RuntimeError):
    """A child process exited early or did not become ready; the message has its log tail."""


class TesseraProcess:
    """`tessera <args>` as a child process, logging to `log_path`."""

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("wb")
        # The CLI through this interpreter, so it works whether or not the venv's `bin`
        # is on PATH.
        launcher = "from tessera.services.cli import app; app(prog_name='tessera')"
        cmd = [sys.executable, "-c", launcher, *args]
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # a terminal's Ctrl-C goes to us; we stop children
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def ensure_running(self) -> None:
        """Raise, with the log tail, if the child has exited."""
        if self.proc.poll() is not None:
            raise ProcessNotReady(
                f"{self.name} exited with {self.proc.returncode}; log {self.log_path}:\n"
                f"{self.log_tail()}"
            )

    def wait_until(self, ready: Callable[[], bool], *, timeout_s: float, what: str) -> None:
        """Poll `ready` until true; fail early, with the log tail, if the child exits."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ProcessNotReady(
                    f"{self.name} exited with {self.proc.returncode} before {what}; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            if ready():
                return
            time.sleep(0.2)
        raise ProcessNotReady(
            f"{self.name} not {what} after {timeout_s:.0f} s; log {self.log_path}:\n"
            f"{self.log_tail()}"
        )

    def wait_http(self, url: str, *, timeout_s: float = 60.0) -> None:
        def answers() -> bool:
            try:
                return httpx.get(url, timeout=1.0).status_code == 200
            except httpx.HTTPError:
                return False

        self.wait_until(answers, timeout_s=timeout_s, what=f"answering {url}")

    def wait_log(self, text: str, *, timeout_s: float = 60.0) -> None:
        def logged() -> bool:
            try:
                return text in self.log_path.read_text(errors="replace")
            except OSError:
                return False

        self.wait_until(logged, timeout_s=timeout_s, what=f"logging {text!r}")

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM, wait, then SIGKILL; idempotent."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout_s)
        self._log.close()

    def __enter__(self) -> TesseraProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
