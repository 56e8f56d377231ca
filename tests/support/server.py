"""A real ``signoff serve`` process (uvicorn) for end-to-end tests over HTTP.

``live_server(database_url, **env)`` starts it on a free port on 127.0.0.1, waits for
``/health``, and stops it by PID on exit. ``server.kill()`` sends SIGKILL (a crash);
``server.restart()`` starts it again on the same store and port.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    def __init__(self, database_url: str, log_path: Path, env: dict[str, str]) -> None:
        self.database_url = database_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {
            **os.environ,
            "SIGNOFF_DATABASE_URL": database_url,
            "SIGNOFF_HOST": "127.0.0.1",
            "SIGNOFF_PORT": str(self.port),
            "SIGNOFF_AGENTS": "agent.demo,tests.support.agents",
            "SIGNOFF_MODEL": "offline",
            "PYTHONPATH": str(ROOT),
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> LiveServer:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "serve"], cwd=ROOT, env=self.env,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"signoff serve exited {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"signoff serve did not answer /health in 30 s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def kill(self) -> None:
        """SIGKILL: the process dies at once, mid-request if need be."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def restart(self) -> LiveServer:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
        return self.start()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)


@contextlib.contextmanager
def live_server(database_url: str, log_path: Path, **env: str) -> Iterator[LiveServer]:
    server = LiveServer(database_url, log_path, env)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store: a SQLite file, or a new database on the throwaway PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'signoff.db'}"
    pg = request.getfixturevalue("pg_database")
    return str(pg.url)


@pytest.fixture
def server(store_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    """``signoff serve`` over a fresh store (SQLite and PostgreSQL), demo + test agents."""
    with live_server(store_url, tmp_path / "server.log") as s:
        yield s
