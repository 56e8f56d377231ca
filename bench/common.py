"""What the benchmark sections share: the machine and versions line, the settings line,
fresh stores (SQLite files, databases on one throwaway PostgreSQL), servers started and
stopped by PID, and a process's memory and CPU from /proc."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.load import MESSAGE, HttpClient  # noqa: E402
from service.config import Settings  # noqa: E402
from tests.support.postgres import PgServer, throwaway_postgres  # noqa: E402
from tests.support.server import LiveServer, live_server  # noqa: E402


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def machine() -> str:
    """Cores, CPU, and the versions that matter (one line, as the older tables print)."""
    versions = ", ".join(f"{n} {_version(n)}" for n in
                         ("eventsourcing", "fastapi", "uvicorn", "httptools", "psycopg"))
    return f"{os.cpu_count()} cores, {cpu_model()}; python {platform.python_version()}, {versions}"


def load_average() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "?"


def server_version(url: str) -> str:
    if url.startswith("sqlite"):
        return f"SQLite {sqlite3.sqlite_version}"
    with psycopg.connect(url) as conn:
        return "PostgreSQL " + str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]


def sync_commit(url: str) -> str:
    """PostgreSQL's ``synchronous_commit``; SQLite's ``synchronous`` (journal mode WAL)."""
    if url.startswith("sqlite"):
        path = url[len("sqlite:///"):]
        if not Path(path).exists():  # as the service makes it (WAL), not sqlite3's default
            from service.config import eventsourcing_env
            from service.runs import RunService

            RunService(env=eventsourcing_env(Settings(database_url=url))).close()
        with contextlib.closing(sqlite3.connect(path)) as conn:
            level = conn.execute("PRAGMA synchronous").fetchone()[0]
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
        return f"synchronous={names.get(level, level)}, journal_mode={mode}"
    with psycopg.connect(url) as conn:
        shown = [f"{name}={conn.execute(f'SHOW {name}').fetchone()[0]}"  # type: ignore[index]
                 for name in ("synchronous_commit", "fsync", "max_connections")]
    return ", ".join(shown)


def header(title: str, url: str | None, **settings: Any) -> None:
    """The lines printed above every table: what ran, where (``url``: the store, or
    None), with which settings."""
    print(f"\n## {title}")
    print(f"machine: {machine()}; load average {load_average()}")
    if url is None:
        print("store: none")
    else:
        pool = int(os.environ.get("SIGNOFF_POSTGRES_POOL_SIZE") or
                   Settings(database_url=url).postgres_pool_size)
        store = f"{server_version(url)} ({sync_commit(url)})"
        if not url.startswith("sqlite"):
            store += f", pool {pool}+{pool} overflow per application"
        print(f"store: {store}")
    if settings:
        print("settings: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in
                                      settings.items()))
    sys.stdout.flush()


class Stores:
    """Fresh, empty stores: a SQLite file each, or a database each on one throwaway
    PostgreSQL server (started on first use, stopped with the benchmark)."""

    def __init__(self, stack: contextlib.ExitStack, max_connections: int = 200) -> None:
        self.stack = stack
        self.max_connections = max_connections
        self.tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="signoff-bench-")))
        self.pg: PgServer | None = None

    def fresh(self, kind: str, name: str) -> str:
        if kind == "sqlite":
            path = self.tmp / f"{name}-{uuid.uuid4().hex[:6]}.db"
            return f"sqlite:///{path}"
        if kind != "postgres":
            raise SystemExit(f"unknown store {kind!r} (sqlite, postgres)")
        if self.pg is None:
            self.pg = self.stack.enter_context(
                throwaway_postgres(max_connections=self.max_connections))
        return self.pg.create_database(f"{name}_{uuid.uuid4().hex[:8]}").url

    def log(self, name: str) -> Path:
        return self.tmp / f"{name}-{uuid.uuid4().hex[:6]}.log"


@contextlib.contextmanager
def serve(url: str, log: Path, workers: int = 1, **env: str) -> Iterator[LiveServer]:
    """``signoff serve`` (``--workers N``) on loopback, stopped by its PID on exit."""
    if workers == 1:
        with live_server(url, log, **env) as server:
            yield server
        return
    server = LiveServer(url, log, env)
    with log.open("ab") as out:
        server.proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "serve", "--workers", str(workers)], cwd=ROOT,
            env=server.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while log.read_text(errors="replace").count("startup complete") < workers:
            if server.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"signoff serve --workers {workers} did not start:\n"
                                   f"{server.log()}")
            time.sleep(0.1)
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def projector(url: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``signoff project`` beside API workers started with SIGNOFF_PROJECTIONS=off;
    stopped by its PID (SIGTERM: it finishes its pages and exits)."""
    env = {**os.environ, "SIGNOFF_DATABASE_URL": url, "PYTHONPATH": str(ROOT)}
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cli", "project"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM, and SIGKILL if it has not exited within ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def wait_healthy(url: str, proc: subprocess.Popen[bytes], failure: Callable[[], str],
                 timeout: float = 30.0) -> None:
    """Until ``GET url/health`` answers 200; ``RuntimeError(failure())`` if ``proc``
    exits or ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(failure())
        time.sleep(0.1)


def wait_projections(url: str, timeout: float = 300.0) -> tuple[bool, float]:
    """Poll ``GET /projections`` until every projection is at the head: (reached, s)."""
    client = HttpClient(url)
    t0 = time.perf_counter()
    try:
        while time.perf_counter() - t0 < timeout:
            status, body = client.get("/projections")
            if status == 200 and body and all(p["position"] >= p["head"] for p in body):
                return True, time.perf_counter() - t0
            time.sleep(0.05)
        return False, time.perf_counter() - t0
    finally:
        client.close()


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (uvicorn's workers under its supervisor)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
    return out


def status_mb(pid: int, field: str = "VmHWM") -> float:
    """``VmHWM`` (peak resident set size) or ``VmRSS`` of a process, in MB."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_pids(server: LiveServer, workers: int = 1) -> list[int]:
    """The processes that answer requests: the server, or its workers under uvicorn's
    supervisor (``--workers N``)."""
    assert server.proc is not None
    if workers == 1:
        return [server.proc.pid]
    return children(server.proc.pid) or [server.proc.pid]


def pg_connections(pids: dict[str, list[int]], pg_port: int) -> dict[str, int]:
    """Established TCP connections to PostgreSQL's port held by each group of processes
    (from /proc: the sockets among a process's file descriptors)."""
    inodes: dict[int, str] = {}
    for name, group in pids.items():
        for pid in group:
            with contextlib.suppress(OSError):
                for fd in Path(f"/proc/{pid}/fd").iterdir():
                    with contextlib.suppress(OSError):
                        target = os.readlink(fd)
                        if target.startswith("socket:["):
                            inodes[int(target[8:-1])] = name
    counts = dict.fromkeys(pids, 0)
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                if fields[3] == "01" and remote_port == pg_port:
                    name = inodes.get(int(fields[9]))
                    if name is not None:
                        counts[name] += 1
    return counts


def tree_cpu(pid: int) -> float:
    """CPU used so far by a process and its children (PostgreSQL: the postmaster and
    its backends); a child that has exited is not counted."""
    total = 0.0
    for p in [pid, *children(pid)]:
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += cpu_seconds(p)
    return total


# ------------------------------------------------ for the other bench modules

def cycle(client: httpx.Client, timings: dict[str, list[float]]) -> None:
    """One HITL cycle with an httpx client (bench.readmodels' load uses it)."""
    t0 = time.perf_counter()
    r = client.post("/agents/data_manager/runs", data={"message": MESSAGE, "stream": "false"})
    t1 = time.perf_counter()
    r.raise_for_status()
    run = r.json()
    assert run["status"] == "PAUSED", run["status"]
    tools = [{**t, "confirmed": True} for t in run["tools"]]
    r = client.post(f"/agents/data_manager/runs/{run['run_id']}/continue",
                    data={"tools": json.dumps(tools), "stream": "false"})
    t2 = time.perf_counter()
    r.raise_for_status()
    assert r.json()["status"] == "COMPLETED", r.json()["status"]
    timings["start"].append(t1 - t0)
    timings["continue"].append(t2 - t1)


@contextlib.contextmanager
def store(kind: str, tmp: Path) -> Iterator[str]:
    """A fresh store for the other bench modules: a SQLite file in ``tmp``, or a whole
    throwaway PostgreSQL server."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'bench.db'}"
    else:
        with throwaway_postgres() as pg:
            yield pg.url
