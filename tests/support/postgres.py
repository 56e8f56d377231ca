"""Throwaway PostgreSQL servers for the test suite.

This is a small direct wrapper (initdb + the ``postgres`` binary run as our own
child process), not pytest-postgresql's ``PostgreSQLExecutor``, because that
executor does not fit our requirements:

* it always starts the server with ``-F`` (fsync=off); our benchmarks and
  durability tests need the real default fsync/synchronous_commit behaviour;
* it calls ``pg_ctl`` directly from a quoted command template, so there is no
  clean way to run it as the ``postgres`` user when the tests run as root
  (initdb/postgres refuse to run as root);
* it only stops with ``-m fast``; fault tests need ``-m immediate`` and a
  restart on the same port and data directory.

We also skip ``pg_ctl start``: it daemonizes the postmaster, which is then
reparented to PID 1 (in our container an init that reaps late, leaving zombies).
Running ``postgres`` as a direct child lets us stop exactly our PID and reap it.
Stopping signals it like ``pg_ctl stop`` does (SIGINT = fast, SIGQUIT = immediate).

Every server gets its own temp dir (data dir, unix socket dir, log file),
listens on 127.0.0.1 only, on a free port, with trust auth and default
durability settings (fsync, synchronous_commit on). It is stopped and its temp
dir removed when the context manager exits (also on exceptions).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

SUPERUSER = "postgres"
START_TIMEOUT_S = 60


class PgBinariesNotFound(RuntimeError):
    """No PostgreSQL server binaries were found."""


def find_pg_bin() -> Path:
    """``$SIGNOFF_PG_BIN`` if set, else the highest ``/usr/lib/postgresql/*/bin``."""
    if env := os.environ.get("SIGNOFF_PG_BIN"):
        candidates = [Path(env)]
    else:

        def version(bin_dir: Path) -> tuple[int, ...]:
            return tuple(int(p) for p in re.findall(r"\d+", bin_dir.parent.name))

        candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    for bin_dir in candidates:
        if all((bin_dir / tool).is_file() for tool in ("pg_ctl", "initdb", "postgres")):
            return bin_dir
    where = f"SIGNOFF_PG_BIN={env}" if env else "/usr/lib/postgresql/*/bin"
    raise PgBinariesNotFound(f"no PostgreSQL binaries (pg_ctl, initdb, postgres) in {where}")


class _Cluster:
    """Mutable handle on one server we started: its dirs, binaries and postmaster process.

    The postmaster runs as our direct child (not daemonized by ``pg_ctl start``), so
    we stop exactly that process by its PID and reap it: no zombies, no strays.
    """

    def __init__(self, bin_dir: Path, base: Path) -> None:
        self.bin_dir = bin_dir
        self.base = base
        self.data_dir = base / "data"
        self.socket_dir = base / "socket"
        self.log_file = base / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None
        # initdb/postgres refuse to run as root: run them as the postgres user then.
        # setpriv execs in place (unlike runuser, which forks), so the PID we hold is
        # the postmaster's own.
        self.as_root = os.geteuid() == 0
        self.prefix = (
            ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]
            if self.as_root
            else []
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def initdb(self, port: int, max_connections: int) -> None:
        self.socket_dir.mkdir()
        if self.as_root:
            pw = pwd.getpwnam("postgres")
            for path in (self.base, self.socket_dir):
                os.chown(path, pw.pw_uid, pw.pw_gid)
        args = [
            "-D",
            str(self.data_dir),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-instructions",
        ]
        proc = subprocess.run(
            [*self.prefix, str(self.bin_dir / "initdb"), *args],
            cwd=self.base,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"initdb failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        # Settings live in postgresql.conf so that start() after a crash reuses them.
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# signoff throwaway test server\n"
                "listen_addresses = '127.0.0.1'\n"
                f"port = {port}\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                f"max_connections = {max_connections}\n"
            )

    def start(self) -> None:
        """Run the postmaster and wait until postmaster.pid says it is ready."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                [*self.prefix, str(self.bin_dir / "postgres"), "-D", str(self.data_dir)],
                cwd=self.base,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # a Ctrl-C in the terminal must not hit the server
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop(signal.SIGKILL)
                raise RuntimeError(f"postgres did not start; log:\n{self.log_tail()}")
            time.sleep(0.02)

    def _ready(self) -> bool:
        # Same check as pg_ctl start -w: our pid in postmaster.pid, status line "ready".
        with contextlib.suppress(OSError):
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            return len(lines) >= 8 and lines[0] == str(self.pid) and lines[7].strip() == "ready"
        return False

    def stop(self, sig: signal.Signals) -> None:
        """Signal our postmaster and reap it: SIGINT = ``pg_ctl stop -m fast``,
        SIGQUIT = ``-m immediate``; SIGKILL if it does not exit within the timeout."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def shutdown(self) -> None:
        """Stop the server if it is running, then remove the temp dir."""
        try:
            self.stop(signal.SIGINT)
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


@dataclass(frozen=True)
class PgServer:
    """Connection details of a throwaway server (and one database on it)."""

    host: str
    port: int
    user: str
    password: str
    dbname: str
    pid: int
    _cluster: _Cluster = field(repr=False, compare=False)

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.dbname}"

    @property
    def data_dir(self) -> Path:
        return self._cluster.data_dir

    def create_database(self, name: str) -> PgServer:
        """Create a new empty database on this server; return a PgServer pointing at it."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return dataclasses.replace(self, dbname=name)

    def drop_database(self) -> None:
        """Drop this database (disconnecting any remaining sessions)."""
        admin = dataclasses.replace(self, dbname="postgres")
        with psycopg.connect(admin.url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(self.dbname)
                )
            )

    def stop_immediate(self) -> None:
        """Crash-stop the server (pg_ctl stop -m immediate): no checkpoint, recovery on start."""
        self._cluster.stop(signal.SIGQUIT)

    def start(self) -> PgServer:
        """Start the server again on the same port and data dir; returns it with the new pid."""
        self._cluster.start()
        return dataclasses.replace(self, pid=self._cluster.pid)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def throwaway_postgres(
    bin_dir: Path | None = None, *, max_connections: int = 200
) -> Iterator[PgServer]:
    """Start a brand-new PostgreSQL server; stop it and delete its files on exit."""
    bin_dir = bin_dir or find_pg_bin()
    cluster = _Cluster(bin_dir, Path(tempfile.mkdtemp(prefix="signoff-pg-")))
    try:
        port = _free_port()
        cluster.initdb(port, max_connections)
        for attempt in range(3):  # the free port may be taken between probe and bind
            try:
                cluster.start()
                break
            except RuntimeError:
                if attempt == 2 or "could not bind" not in cluster.log_tail():
                    raise
                port = _free_port()
                conf = cluster.data_dir / "postgresql.conf"
                conf.write_text(re.sub(r"(?m)^port = \d+$", f"port = {port}", conf.read_text()))
        yield PgServer("127.0.0.1", port, SUPERUSER, "", "postgres", cluster.pid, cluster)
    finally:
        cluster.shutdown()


def require_pg_bin() -> Path:
    """find_pg_bin(), or skip the test; with CI=true fail instead: in CI these tests must run."""
    try:
        return find_pg_bin()
    except PgBinariesNotFound as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {exc}: PostgreSQL tests must run in CI", pytrace=False)
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def pg_bin() -> Path:
    """The PostgreSQL bin dir, for tests that start their own throwaway_postgres(pg_bin)."""
    return require_pg_bin()


@pytest.fixture(scope="session")
def pg_server(pg_bin: Path) -> Iterator[PgServer]:
    """One throwaway server shared by the whole test session."""
    with throwaway_postgres(pg_bin) as server:
        yield server


@pytest.fixture
def pg_database(pg_server: PgServer) -> Iterator[PgServer]:
    """A fresh, empty database per test (dropped afterwards)."""
    db = pg_server.create_database(f"test_{uuid.uuid4().hex[:12]}")
    yield db
    with contextlib.suppress(psycopg.OperationalError):  # e.g. a test left the server down
        db.drop_database()
