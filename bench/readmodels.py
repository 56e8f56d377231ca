"""Read-model latency: ``python -m bench.readmodels`` (see bench/README.md).

1. Fills a store with ``--runs`` runs through the domain (every tenth left paused, the
   rest decided and completed), brings the projections up to date. ``--fill copy`` (the
   default) makes the runs' stored events in ``--jobs`` worker processes and writes them
   in large transactions (PostgreSQL: ``COPY``); ``--fill save`` saves them through the
   application, 200 runs per transaction. ``--data DIR`` keeps the store in DIR (its own
   PostgreSQL server, or the SQLite file) and reuses it when it already holds the same
   fill: 1,000,000 runs are filled and projected once.
2. Starts a real ``signoff serve`` on that store and measures ``GET /queue`` (first page,
   a filtered page, a page deep in the cursor chain) and ``GET /audit/decisions`` (first
   page, filtered by actor, a deep page) latency over HTTP: p50 / p99; ``GET /health``
   (one small query) shows what any request costs on the machine. "read only": the same
   read (the route's read transaction and function) timed in this process, without HTTP.
3. Under load (``--clients`` threads doing HITL cycles), measures the time from a
   decision's commit (the continue request's answer) to ``/queue`` no longer showing the
   run: p50 / p99.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.catchup import a_run  # noqa: E402
from bench.common import cycle, machine, store  # noqa: E402
from bench.load import MESSAGE  # noqa: E402
from domain.run import Run  # noqa: E402
from domain.values import Requirement  # noqa: E402
from projections import audit, queue, queuepages  # noqa: E402
from projections.runner import Projections  # noqa: E402
from service.config import Settings, eventsourcing_env  # noqa: E402
from service.runs import RunService  # noqa: E402
from tests.support.postgres import _Cluster, _free_port, find_pg_bin  # noqa: E402
from tests.support.server import live_server  # noqa: E402


def a_paused_run(i: int) -> Run:
    run = Run.start(agent_id=f"agent{i % 3}", agent_name="Agent", user_id=f"user{i % 50}",
                    session_id=f"s{i % 200}", input=MESSAGE)
    args = {"table_name": "users", "count": i % 100}
    run.record_model_response(model="offline", provider="signoff", content=None,
                              tool_calls=[{"id": f"call_{i}", "name": "delete_records",
                                           "args": args}])
    run.request_tool_call(tool_call_id=f"call_{i}", tool_name="delete_records", tool_args=args,
                          requires=Requirement.CONFIRMATION)
    run.pause()
    return run


def bench_run(i: int) -> Run:
    return a_paused_run(i) if i % 10 == 0 else a_run(i)


def fill(app: RunService, runs: int) -> None:
    """``--fill save``: through the application, 200 runs per transaction."""
    for start in range(0, runs, 200):
        app.save(*(bench_run(i) for i in range(start, min(runs, start + 200))))


_worker_app: RunService | None = None


def _stored_events(env: dict[str, str], start: int, stop: int) -> list[tuple[Any, ...]]:
    """The stored events of runs ``start``..``stop``, as ``app.save`` would record them
    (same mapper: the store's settings, in memory)."""
    global _worker_app
    if _worker_app is None:
        _worker_app = RunService(env={**env, "PERSISTENCE_MODULE": "eventsourcing.popo"})
    mapper = _worker_app.mapper
    out = []
    for i in range(start, stop):
        for event in bench_run(i).collect_events():
            s = mapper.to_stored_event(event)
            out.append((s.originator_id, s.originator_version, s.topic, s.state))
    return out


def _chunk(args: tuple[dict[str, str], int, int]) -> list[tuple[Any, ...]]:
    return _stored_events(*args)


def fill_copy(app: RunService, env: dict[str, str], url: str, runs: int, jobs: int) -> None:
    """``--fill copy``: the same runs' stored events, made in ``jobs`` processes, written
    in log order 20,000 runs per transaction (PostgreSQL: ``COPY``; nothing else writes
    meanwhile, so eventsourcing's table lock is not needed)."""
    step = 20_000
    chunks = [(env, start, min(runs, start + step)) for start in range(0, runs, step)]
    # Spawned, not forked: this process already runs the store's connection pool threads
    # (a child forked while one of them holds a lock can hang).
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        for n, rows in enumerate(pool.imap(_chunk, chunks), 1):
            if url.startswith("postgresql"):
                table = app.recorder.events_table_name  # type: ignore[attr-defined]
                with psycopg.connect(url) as conn, conn.cursor() as cur, cur.copy(
                        f"COPY {table} (originator_id, originator_version, topic, state) "
                        "FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(["uuid", "int8", "text", "bytea"])
                    for row in rows:
                        copy.write_row(row)
            else:
                from eventsourcing.persistence import StoredEvent

                app.recorder.insert_events([StoredEvent(*row) for row in rows])
            print(f"  filled {min(runs, n * step)} runs", file=sys.stderr, flush=True)


def pct(xs: list[float], q: int) -> float:
    return statistics.quantiles(xs, n=100)[q - 1] * 1000


def timed(client: httpx.Client, url: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = client.get(url)
        out.append(time.perf_counter() - t0)
        r.raise_for_status()
    return out


def timed_read(p: Projections, path: str, n: int) -> list[float]:
    """The read behind ``path`` in this process: the route's read transaction and
    function (or the head's query for /health), without HTTP, JSON or the server."""
    url = urlsplit(path)
    q = {k: v[0] for k, v in parse_qs(url.query).items()}
    limit = int(q.pop("limit", 50))
    after = q.pop("cursor", None)

    def read() -> Any:
        if url.path == "/health":
            return p.store.head()
        if url.path == "/queue":
            with p.views[queue.QueueProjection.name].read(snapshot=False) as cur:
                return queuepages.list_queue(cur, agent_id=q.get("agent_id"),
                                        tool_name=q.get("tool"), after=after, limit=limit)
        with p.views[audit.AuditProjection.name].read(snapshot=False) as cur:
            return audit.list_decisions(cur, actor=q.get("actor"), after=after, limit=limit)

    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        read()
        out.append(time.perf_counter() - t0)
    return out


def deep_cursor(client: httpx.Client, path: str, pages: int, limit: int) -> str:
    """A cursor up to ``pages`` pages deep (as deep as the data goes), as a query suffix."""
    cursor = ""
    for _ in range(pages):
        body = client.get(f"{path}?limit={limit}" + (f"&cursor={cursor}" if cursor else "")
                          ).json()
        if not body["next_cursor"]:
            break
        cursor = body["next_cursor"]
    return f"&cursor={cursor}" if cursor else ""


def _load(server_url: str, clients: int, stop: Any, done: Any) -> None:
    def client() -> None:
        timings: dict[str, list[float]] = {"start": [], "continue": []}
        with httpx.Client(base_url=server_url, timeout=60) as c:
            while not stop.is_set():
                cycle(c, timings)
                with done.get_lock():
                    done.value += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def decision_to_queue(server_url: str, env: dict[str, str], clients: int, probes: int,
                      ) -> tuple[list[float], float]:
    """Time from a decision's commit (its ToolConfirmed event's timestamp, taken just
    before the commit) to the queue's table no longer holding the run, read straight from
    the database (1 ms polls) so that HTTP latency under load does not blur it."""
    # The load runs in a process of its own, so that it does not take this process's GIL
    # from the probe (which would add its own delay to what is measured).
    stop = multiprocessing.Event()
    done = multiprocessing.Value("i", 0)
    loader = multiprocessing.Process(target=_load, args=(server_url, clients, stop, done))
    loader.start()
    reader = Projections(RunService(env=env), env, names=["queue"])
    view = reader.views["queue"]

    def queued(user: str) -> bool:
        with view.read() as cur:
            return bool(queuepages.list_queue(cur, user_id=user, limit=1)["items"])

    lags: list[float] = []
    t_load = time.perf_counter()
    with httpx.Client(base_url=server_url, timeout=60) as c:
        for i in range(probes):
            user = f"probe{i}"
            run = c.post("/agents/data_manager/runs", data={
                "message": MESSAGE, "user_id": user, "stream": "false"}).json()
            while not queued(user):
                time.sleep(0.001)
            tools = run["tools"]
            for t in tools:
                t["confirmed"] = True
            c.post(f"/agents/data_manager/runs/{run['run_id']}/continue",
                   data={"tools": json.dumps(tools), "stream": "false"}).raise_for_status()
            while queued(user):
                time.sleep(0.001)
            seen = time.time()
            events = c.get(f"/runs/{run['run_id']}/events").json()
            decided = next(e for e in events if e["type"] == "ToolConfirmed")
            lags.append(seen - datetime.fromisoformat(decided["timestamp"]).timestamp())
    stop.set()
    loader.join(120)
    rate = done.value / (time.perf_counter() - t_load)
    reader.close()
    reader.app.close()
    return lags, rate


READ_MODEL_TABLES = (*queue.QueueProjection.tables_in_order, *audit.AuditProjection.tables_in_order)


@contextlib.contextmanager
def kept_store(kind: str, data: Path) -> Iterator[str]:
    """A store in ``data`` that outlives the run: the SQLite file, or a PostgreSQL server
    of its own (127.0.0.1, a free port) on a data directory there, stopped on exit."""
    data.mkdir(parents=True, exist_ok=True)
    if kind == "sqlite":
        yield f"sqlite:///{data / 'bench.db'}"
        return
    cluster = _Cluster(find_pg_bin(), data / "server")
    port = _free_port()
    if not cluster.data_dir.exists():
        cluster.base.mkdir(exist_ok=True)
        cluster.initdb(port, 200)
    conf = cluster.data_dir / "postgresql.conf"
    conf.write_text(re.sub(r"(?m)^port = \d+$", f"port = {port}", conf.read_text()))
    cluster.start()
    try:
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres",
                             autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'bench'").fetchone():
                conn.execute("CREATE DATABASE bench")
        yield f"postgresql://postgres@127.0.0.1:{port}/bench"
    finally:
        cluster.stop(signal.SIGINT)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.readmodels", description=__doc__)
    parser.add_argument("--stores", default="postgres")
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--probes", type=int, default=100)
    parser.add_argument("--projections", choices=("inline", "process"), default="inline",
                        help="run the projections in the API process, or as `signoff "
                        "project` beside it (SIGNOFF_PROJECTIONS=off)")
    parser.add_argument("--fill", choices=("copy", "save"), default="copy",
                        help="copy: stored events made in --jobs processes, written in "
                        "large transactions (COPY on PostgreSQL); save: app.save, 200 runs "
                        "per transaction")
    parser.add_argument("--jobs", type=int, default=2, help="processes making events")
    parser.add_argument("--data", type=Path, default=None,
                        help="keep the store in this directory and reuse it next time "
                        "(default: a temporary one)")
    parser.add_argument("--fill-only", action="store_true",
                        help="with --data: fill and project the store, measure nothing")
    args = parser.parse_args()
    # Stopped with SIGTERM: unwind, so that the servers it started are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(f"machine: {machine()}")
    for kind in args.stores.split(","):
        with contextlib.ExitStack() as stack:
            if args.data is not None:
                tmp = args.data / kind
                url = stack.enter_context(kept_store(kind, tmp))
            else:
                tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
                url = stack.enter_context(store(kind, tmp))
            env = eventsourcing_env(Settings(database_url=url))
            app = RunService(env=env)
            t0 = time.perf_counter()
            marker = tmp / "filled.json"  # written once the fill is complete
            if marker.exists():
                filled = json.loads(marker.read_text())
                if filled["runs"] != args.runs:
                    raise SystemExit(f"{tmp} holds {filled['runs']} runs, not {args.runs}: "
                                     "use another --data")
                how = f"filled earlier ({filled['when']}, --fill {filled['fill']})"
            else:
                if app.head():
                    raise SystemExit(f"{tmp}: the store is not empty; use another --data")
                if args.fill == "copy":
                    fill_copy(app, env, url, args.runs, args.jobs)
                else:
                    fill(app, args.runs)
                how = f"filled (--fill {args.fill}) in {time.perf_counter() - t0:.0f} s"
                if args.data is not None:
                    marker.write_text(json.dumps({"runs": args.runs, "fill": args.fill,
                                                  "when": datetime.now().isoformat(
                                                      timespec="minutes")}))
            # From zero, or on from where an interrupted run left them.
            t1 = time.perf_counter()
            projections = Projections(app, env)
            applied = projections.catch_up_all()
            projections.close()
            how += f"; {applied} events projected in {time.perf_counter() - t1:.0f} s"
            if kind == "postgres":
                # As autovacuum leaves them in a steady state: statistics, visibility map.
                with psycopg.connect(url, autocommit=True) as conn:
                    for table in READ_MODEL_TABLES:
                        conn.execute(f"VACUUM (ANALYZE) {table}")
                how += "; read-model tables vacuumed and analysed"
            print(f"{kind}: {args.runs} runs ({app.head()} events, {args.runs // 10} left "
                  f"paused); {how}", flush=True)
            app.close()
            if args.fill_only:
                continue
            projector = None
            server_env = {}
            if args.projections == "process":
                server_env["SIGNOFF_PROJECTIONS"] = "off"
                projector = subprocess.Popen(
                    [sys.executable, "-m", "cli", "project"], cwd=ROOT,
                    env={**os.environ, "SIGNOFF_DATABASE_URL": url},
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            print(f"projections: {args.projections}")
            with live_server(url, Path(tmp) / "server.log", **server_env) as server, \
                    httpx.Client(base_url=server.url, timeout=60) as c:
                queue_deep = deep_cursor(c, "/queue", 20, 100)
                audit_deep = deep_cursor(c, "/audit/decisions", 20, 100)
                reader_app = RunService(env=env)
                reader = Projections(reader_app, env,
                                     names=[queue.QueueProjection.name,
                                            audit.AuditProjection.name])
                print(f"{'':<52}{'over HTTP':>16}{'read only':>16}")
                print(f"{'request':<52}{'p50 ms':>8}{'p99 ms':>8}{'p50 ms':>8}{'p99 ms':>8}")
                for label, path in [
                    ("GET /health (the HTTP floor: one small query)", "/health"),
                    ("GET /queue?limit=50", "/queue?limit=50"),
                    ("GET /queue?agent_id=agent1&tool=delete_records",
                     "/queue?agent_id=agent1&tool=delete_records"),
                    ("GET /queue (page 21 by cursor)", f"/queue?limit=50{queue_deep}"),
                    ("GET /audit/decisions?limit=100", "/audit/decisions?limit=100"),
                    ("GET /audit/decisions?actor=reviewer3",
                     "/audit/decisions?actor=reviewer3&limit=100"),
                    ("GET /audit/decisions (page 21 by cursor)",
                     f"/audit/decisions?limit=100{audit_deep}"),
                ]:
                    xs = timed(c, path, args.requests)
                    ys = timed_read(reader, path, args.requests)
                    print(f"{label:<52}{pct(xs, 50):>8.1f}{pct(xs, 99):>8.1f}"
                          f"{pct(ys, 50):>8.1f}{pct(ys, 99):>8.1f}", flush=True)
                reader.close()
                reader_app.close()
                lags, rate = decision_to_queue(server.url, env, args.clients, args.probes)
                print(f"decision commit -> gone from /queue, under {args.clients} clients "
                      f"({rate:.0f} cycles/s): p50 {pct(lags, 50):.1f} ms, "
                      f"p99 {pct(lags, 99):.1f} ms", flush=True)
            if projector is not None:
                projector.terminate()
                projector.wait(30)


if __name__ == "__main__":
    main()
