"""cost: what a HITL cycle costs the default setup, beside the framework's floor, in one run.

``python -m bench --sections cost`` (``--stores``, ``--clients``, ``--cycles``): for each
store, one ``signoff serve`` (projections in its process, the offline model) and the
floor's app (``bench/floor.py``: uvicorn and FastAPI alone, the Agno routes' shape, no
store) serve the same client, alternating row by row at each client count, so both
see the machine as it is at that minute. Per cycle:

- CPU: the server's (signoff, and the floor's), their ratio, and PostgreSQL's processes';
- bytes: the store's growth (SQLite: the database file and its WAL after a checkpoint;
  PostgreSQL: every table and index, and the WAL written, ``pg_current_wal_lsn``);
- write transactions (the transaction ids taken), rows inserted and rows updated
  (PostgreSQL's ``pg_stat_database``);
- below the table, the bytes per cycle of each table (its indexes included;
  ``bench/storage.py``) over every row's measured cycles, and on PostgreSQL the rows each
  table had inserted, updated (of them HOT) and deleted per cycle;
- and how soon a run that paused is in ``/queue`` under the same load (apart from the
  measured cycles, half as many again): a probe starts a run, and from its answer asks
  ``GET /queue`` until the run is listed (then continues it): p50 and p99 of that time
  (under load mostly the ask's own wait), and the share of runs listed at the first ask.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
import threading
import time
from argparse import Namespace
from collections.abc import Iterator
from pathlib import Path

import psycopg

from bench.common import (
    ROOT,
    Stores,
    cpu_seconds,
    header,
    serve,
    stop,
    tree_cpu,
    wait_healthy,
    wait_projections,
)
from bench.load import AGENT, MESSAGE, HttpClient, pct, run_load
from bench.storage import Table, snapshot
from tests.support.server import free_port

# Write transactions are counted by the transaction ids they took (exact at once); rows by
# pg_stat_database, which backends update at most once a second and, idle, within ten:
# read after a pause.
_PG_FLUSH = 11.0
_PG_COUNTERS = ("SELECT pg_current_xact_id()::text::bigint, tup_inserted, tup_updated, "
                "pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint AS wal, "
                "pg_database_size(current_database()) AS size "
                "FROM pg_stat_database WHERE datname = current_database()")


@contextlib.contextmanager
def floor_server(log: Path) -> Iterator[tuple[str, int]]:
    """The floor's app under uvicorn: its URL and PID."""
    port = free_port()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "bench.floor:app_factory", "--factory",
             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, lambda: f"the floor app did not start:\n{log.read_text()}")
        yield url, proc.pid
    finally:
        stop(proc, 10)


def _counters(url: str) -> dict[str, int]:
    """What the store has written so far: bytes, and on PostgreSQL commits and rows."""
    if url.startswith("sqlite"):
        path = Path(url[len("sqlite:///"):])
        with contextlib.closing(sqlite3.connect(path, timeout=10)) as conn:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        wal = path.with_name(path.name + "-wal")
        return {"size": path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)}
    time.sleep(_PG_FLUSH)
    with psycopg.connect(url) as conn:
        row = conn.execute(_PG_COUNTERS).fetchone()
    assert row is not None
    return dict(zip(("commits", "inserted", "updated", "wal", "size"), map(int, row),
                    strict=True))


def _visible(url: str, stop: threading.Event, out: list[float], asks: list[int]) -> None:
    """Until ``stop``: start a run, then ask ``/queue`` until it is listed; each time from
    the start's answer to the answer that listed it (seconds), into ``out``, and how many
    asks it took, into ``asks``."""
    client = HttpClient(url)
    try:
        while not stop.is_set():
            status, run = client.post(f"/agents/{AGENT}/runs",
                                      {"message": MESSAGE, "stream": "false"})
            answered = time.perf_counter()
            if status != 200 or not isinstance(run, dict):
                return
            n = 0
            while not stop.is_set():
                n += 1
                _, page = client.get(f"/queue?agent_id={AGENT}&limit=500")
                if run["run_id"] in json.dumps(page):
                    out.append(time.perf_counter() - answered)
                    asks.append(n)
                    break
            tools = [{**t, "confirmed": True} for t in run.get("tools", [])]
            client.post(f"/agents/{AGENT}/runs/{run['run_id']}/continue",
                        {"tools": json.dumps(tools), "stream": "false"})
            stop.wait(0.05)
    finally:
        client.close()


def cost(stores: Stores, kind: str, args: Namespace) -> int:
    url = stores.fresh(kind, "cost")
    header(f"cost: a HITL cycle beside the framework's floor ({kind})", url, workers=1,
           projections="inline", model="offline", clients="http.client",
           size=f"{args.cycles} cycles per row, at most {args.seconds:g} s")
    pg = kind == "postgres" and stores.pg is not None
    print(f"{'clients':>7}{'floor ms':>10}{'server ms':>11}{'ratio':>7}"
          + (f"{'PG ms':>8}" if pg else "")
          + f"{'bytes':>8}" + (f"{'WAL':>8}{'commits':>9}{'ins.':>6}{'upd.':>6}" if pg else "")
          + f"{'cycles/s':>10}{'visible p50/p99':>17}{'at once':>8}{'errors':>7}")
    failed, measured = 0, 0
    grown: dict[str, int] = {}
    changed: dict[str, tuple[int, ...]] = {}  # rows inserted, updated, HOT, deleted
    with floor_server(stores.log("cost-floor")) as (floor_url, floor_pid), \
            serve(url, stores.log("cost")) as server:
        assert server.proc is not None
        run_load(floor_url, 4, cycles=100)  # warm-up
        run_load(server.url, 4, cycles=40)
        wait_projections(server.url)
        for n in args.clients:
            cpu0 = cpu_seconds(floor_pid)
            f = run_load(floor_url, n, cycles=args.cycles, seconds=args.seconds)
            floor_ms = (cpu_seconds(floor_pid) - cpu0) / max(f.cycles, 1) * 1000
            before, tables = _counters(url), snapshot(url)
            pids = [server.proc.pid] + ([stores.pg.pid] if pg and stores.pg else [])
            cpu0s = [tree_cpu(p) for p in pids]
            r = run_load(server.url, n, cycles=args.cycles, seconds=args.seconds)
            cpu = [(tree_cpu(p) - c) / max(r.cycles, 1) * 1000
                   for p, c in zip(pids, cpu0s, strict=True)]
            wait_projections(server.url)  # what the cycles wrote, read models included
            after = _counters(url)
            per = {k: (after[k] - before[k]) / max(r.cycles, 1) for k in after}
            for name, t in snapshot(url).items():
                was = tables.get(name, Table(0, 0))
                grown[name] = grown.get(name, 0) + t.bytes - was.bytes
                moved = (t.inserts - was.inserts, t.updates - was.updates,
                         t.hot - was.hot, t.deletes - was.deletes)
                before_rows = changed.get(name, (0, 0, 0, 0))
                changed[name] = tuple(a + b for a, b in zip(before_rows, moved, strict=True))
            measured += r.cycles
            # Then, apart (its requests would count as the cycles' CPU), the probe beside
            # the same load for a while.
            stop, seen, asks = threading.Event(), list[float](), list[int]()
            probe = threading.Thread(target=_visible, args=(server.url, stop, seen, asks))
            probe.start()
            try:
                run_load(server.url, n, cycles=max(args.cycles // 2, 50), seconds=args.seconds)
            finally:
                stop.set()
                probe.join(30)
            failed += r.error_count + f.error_count
            print(f"{n:>7}{floor_ms:>10.2f}{cpu[0]:>11.2f}{cpu[0] / floor_ms:>7.1f}"
                  + (f"{cpu[1]:>8.2f}" if pg else "")
                  + f"{per['size']:>8.0f}"
                  + (f"{per['wal']:>8.0f}{per['commits']:>9.1f}{per['inserted']:>6.1f}"
                     f"{per['updated']:>6.1f}" if pg else "")
                  + f"{r.rate:>10.1f}"
                  + f"{_ms(pct(seen, 50)):>8}/{_ms(pct(seen, 99)):<8}"
                  + f"{100 * asks.count(1) / max(len(asks), 1):>7.0f}%{r.error_count:>7}",
                  flush=True)
    print("(per cycle: floor ms / server ms = CPU of the floor's app / of signoff serve, "
          "ratio = server / floor; PG ms = PostgreSQL's processes; bytes = the store's "
          "growth" + (", WAL = WAL written, commits = write transactions (each takes one "
                      "transaction id, the reading connection's own included), rows inserted "
                      "/ updated from pg_stat_database)" if pg else " (database file and WAL))")
          + "; visible = from a start's answer to /queue listing the run, at once = the "
          "share listed at the first ask (a probe beside the same load, after the "
          "measured cycles)")
    largest = sorted(((k, n) for k, n in grown.items() if n > 0), key=lambda kv: -kv[1])[:12]
    print("bytes per cycle by table (indexes included), over the measured cycles: "
          + ", ".join(f"{name} {n / max(measured, 1):.0f}" for name, n in largest))
    if pg:
        per_cycle = {name: [n / max(measured, 1) for n in moved]
                     for name, moved in sorted(changed.items()) if any(moved)}
        print("rows per cycle by table, inserted / updated (of them HOT) / deleted: " + ", ".join(
            f"{name} {i:.1f}/{u:.1f} ({h:.1f})/{d:.1f}" for name, (i, u, h, d)
            in per_cycle.items()))
    return failed


def _ms(ms: float) -> str:
    return f"{ms:.1f}ms" if ms == ms else "-"  # NaN: no sample
