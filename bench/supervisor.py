"""A tiny supervisor: keeps one `tessera <args>` child running, restarting it (after a
short back-off) whenever it exits, as systemd or Kubernetes would in production. The
soak benchmark kills the child with SIGKILL and measures how the system copes."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tessera.bench.subprocesses import TesseraProcess


class Supervisor:
    """Runs `tessera <args>` and restarts it when it dies, until `stop()`."""

    def __init__(self, name: str, args: Sequence[str], *, log_dir: Path,
                 env: Mapping[str, str], backoff_s: float = 0.5) -> None:
        self.name = name
        self._args = list(args)
        self._log_dir = log_dir
        self._env = dict(env)
        self._backoff_s = backoff_s
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.restarts = 0
        self._proc = self._spawn()
        self._thread = threading.Thread(target=self._watch, name=f"supervise-{name}",
                                        daemon=True)
        self._thread.start()

    def _spawn(self) -> TesseraProcess:
        # One log per incarnation, so a crash's tail is never overwritten by the restart.
        log = self._log_dir / f"{self.name}.{self.restarts}.log"
        return TesseraProcess(self.name, self._args, log_path=log, env=self._env)

    @property
    def process(self) -> TesseraProcess:
        with self._lock:
            return self._proc

    def kill(self) -> int:
        """SIGKILL the current child (a crash); the watcher restarts it. Returns its PID."""
        proc = self.process
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the child leads its own session
        return int(proc.pid)

    def _watch(self) -> None:
        while not self._stopping.is_set():
            proc = self.process
            if proc.proc.poll() is not None and not self._stopping.is_set():
                proc.stop()  # closes the log handle
                time.sleep(self._backoff_s)
                with self._lock:
                    if self._stopping.is_set():
                        return
                    self.restarts += 1
                    self._proc = self._spawn()
            self._stopping.wait(0.1)

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5)
        self.process.stop()
