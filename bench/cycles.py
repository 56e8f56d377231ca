"""Sections over real HTTP on one ``signoff serve`` (one uvicorn worker; projections in
the process, the default, or for ``cycles`` also in a ``signoff project`` beside it):
HITL cycles at 1 / 8 / 32 clients (``cycles``), what the load
generator costs (``loadgen``), bytes stored per cycle (``storage``), the server's memory
(``memory``)."""

from __future__ import annotations

import contextlib
import sqlite3
import statistics
import time
from argparse import Namespace
from pathlib import Path

import psycopg

from bench.common import (
    Stores,
    cpu_seconds,
    header,
    projector,
    serve,
    status_mb,
    tree_cpu,
    wait_projections,
)
from bench.load import Result, pct, run_load


def clients_text(args: Namespace) -> str:
    procs = f" over {args.client_procs} processes" if args.client_procs > 1 else ""
    return f"{args.client} keep-alive connections, one per thread{procs}"


def row(setup: str, r: Result, rss: float, cpu: list[float]) -> str:
    per = [f"{c / r.cycles * 1000:.2f}" if r.cycles else "nan" for c in cpu]
    client = r.client_cpu / r.cycles * 1000 if r.cycles else float("nan")
    return (f"{setup:<9}{r.clients:>8}{r.cycles:>8}{r.error_count:>7}{r.rate:>10.1f}"
            f"{pct(r.start, 50):>9.1f}ms{pct(r.start, 99):>6.1f}ms"
            f"{pct(r.cont, 50):>9.1f}ms{pct(r.cont, 99):>6.1f}ms{rss:>8.0f}MB"
            f"{' / '.join(per):>27}{client:>8.2f}")


def errors(r: Result) -> None:
    for what, n in r.errors.most_common(5):
        print(f"  error x{n}: {what}")


SETUPS = {
    "inline": "projections in the server process (the default)",
    "process": "SIGNOFF_PROJECTIONS=off, one `signoff project` beside the server",
}


def cycles(stores: Stores, kind: str, args: Namespace) -> int:
    urls = {setup: stores.fresh(kind, f"cycles-{setup}") for setup in args.projections}
    header(f"cycles: HITL cycles over HTTP ({kind})", urls[args.projections[0]], workers=1,
           setups="; ".join(f"{s}: {SETUPS[s]}" for s in args.projections),
           log_level=args.log_level, clients=clients_text(args),
           size=f"{args.cycles} cycles per row, at most {args.seconds:g} s")
    print(f"{'setup':<9}{'clients':>8}{'cycles':>8}{'errors':>7}{'cycles/s':>10}"
          f"{'start p50':>11}{'p99':>8}{'cont. p50':>11}{'p99':>8}{'peak RSS':>10}"
          f"{'CPU ms: ' + _cpu_names(kind):>27}{'clients':>8}")
    failed = 0
    for setup, url in urls.items():
        env = {"SIGNOFF_LOG_LEVEL": args.log_level}
        with contextlib.ExitStack() as stack:
            project = None
            if setup == "process":
                env["SIGNOFF_PROJECTIONS"] = "off"
                project = stack.enter_context(projector(url, stores.log(f"cycles-{setup}-p")))
            server = stack.enter_context(serve(url, stores.log(f"cycles-{setup}"), **env))
            assert server.proc is not None
            pids = [server.proc.pid] + ([project.pid] if project else [])
            if kind == "postgres" and stores.pg is not None:
                pids.append(stores.pg.pid)
            run_load(server.url, 4, cycles=40, kind=args.client)  # warm-up
            for n in args.clients:
                cpu0 = [tree_cpu(p) for p in pids]
                r = run_load(server.url, n, cycles=args.cycles, seconds=args.seconds,
                             kind=args.client, procs=args.client_procs)
                cpu = [tree_cpu(p) - c for p, c in zip(pids, cpu0, strict=True)]
                print(row(setup, r, status_mb(server.proc.pid), cpu), flush=True)
                errors(r)
                failed += r.error_count
    print("(CPU ms: what each process used per cycle during the row: the server, "
          "`signoff project` when it runs, PostgreSQL's processes (PG); clients: the "
          "load generator's; peak RSS: the server's VmHWM so far)")
    return failed


def _cpu_names(kind: str) -> str:
    return "server/project" + ("/PG" if kind == "postgres" else "")


def loadgen(stores: Stores, kind: str, args: Namespace) -> int:
    """The same load from different clients: what each costs the machine (and so takes
    from the server, which shares its cores)."""
    url = stores.fresh(kind, "loadgen")
    n = max(args.clients)
    header(f"loadgen: what the load generator costs ({kind})", url, workers=1,
           projections="inline", size=f"{n} clients, {args.cycles} cycles per row")
    print(f"{'clients':<40}{'cycles/s':>9}{'client CPU':>11}{'server CPU':>11}"
          f"{'start p50':>10}{'cont. p50':>10}")
    variants = [("httpx.Client, threads, 1 process", "httpx", 1),
                ("http.client, threads, 1 process", "http.client", 1),
                ("http.client, threads, 2 processes", "http.client", 2),
                ("http.client, threads, 4 processes", "http.client", 4)]
    failed = 0
    with serve(url, stores.log("loadgen")) as server:
        assert server.proc is not None
        run_load(server.url, 4, cycles=40)  # warm-up
        for _ in range(args.repeat):
            for label, client, procs in variants:
                cpu0 = cpu_seconds(server.proc.pid)
                r = run_load(server.url, n, cycles=args.cycles, seconds=args.seconds,
                             kind=client, procs=procs)
                server_cpu = cpu_seconds(server.proc.pid) - cpu0
                failed += r.error_count
                print(f"{label:<40}{r.rate:>9.1f}{r.client_cpu / r.cycles * 1000:>9.2f}ms"
                      f"{server_cpu / r.cycles * 1000:>9.2f}ms{pct(r.start, 50):>8.1f}ms"
                      f"{pct(r.cont, 50):>8.1f}ms", flush=True)
    print("(CPU per cycle: client = the load generator's processes, server = signoff serve)")
    return failed


def _pg_sizes(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tablename, pg_total_relation_size(quote_ident(tablename)) "
            "FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename").fetchall()
    return {name: size for name, size in rows}


def _sqlite_sizes(url: str) -> dict[str, int]:
    path = Path(url[len("sqlite:///"):])
    with contextlib.closing(sqlite3.connect(path, timeout=10)) as conn:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        sizes: dict[str, int] = {}
        with contextlib.suppress(sqlite3.OperationalError):  # dbstat may be compiled out
            master = dict(conn.execute(
                "SELECT name, COALESCE(tbl_name, name) FROM sqlite_master").fetchall())
            for name, size in conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"):
                table = master.get(name, name)
                sizes[table] = sizes.get(table, 0) + size
    wal = path.with_name(path.name + "-wal")
    sizes["(file)"] = path.stat().st_size
    sizes["(file + WAL)"] = path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    return sizes


def _head(url: str) -> int:
    if url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(url[len("sqlite:///"):])) as conn:
            return int(conn.execute("SELECT COALESCE(MAX(rowid), 0) FROM stored_events")
                       .fetchone()[0])
    with psycopg.connect(url) as conn:
        return int(conn.execute("SELECT COALESCE(MAX(notification_id), 0) "
                                "FROM signoff_events").fetchone()[0])  # type: ignore[index]


def _state_bytes(url: str, head: int) -> int:
    """The stored events' payload (the ``state`` column) past position ``head``."""
    if url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(url[len("sqlite:///"):])) as conn:
            return int(conn.execute("SELECT COALESCE(SUM(LENGTH(state)), 0) FROM "
                                    "stored_events WHERE rowid > ?", (head,)).fetchone()[0])
    with psycopg.connect(url) as conn:
        return int(conn.execute("SELECT COALESCE(SUM(octet_length(state)), 0) FROM "
                                "signoff_events WHERE notification_id > %s", (head,)
                                ).fetchone()[0])  # type: ignore[index]


def storage(stores: Stores, kind: str, args: Namespace) -> int:
    url = stores.fresh(kind, "storage")
    clients = min(8, max(args.clients))
    header(f"storage: bytes stored per cycle ({kind})", url, workers=1,
           projections="inline", clients=f"{clients} ({args.client})",
           size=f"{args.storage_cycles} cycles")
    with serve(url, stores.log("storage")) as server:
        run_load(server.url, 4, cycles=40, kind=args.client)  # warm-up: tables, first pages
        wait_projections(server.url)
        sizes = _pg_sizes if kind == "postgres" else _sqlite_sizes
        before, head0 = sizes(url), _head(url)
        r = run_load(server.url, clients, cycles=args.storage_cycles, seconds=args.seconds,
                     kind=args.client, procs=args.client_procs)
        wait_projections(server.url)
        after, head1 = sizes(url), _head(url)
        payload = _state_bytes(url, head0)
    n = r.cycles
    events = head1 - head0
    print(f"{n} cycles, {events} events ({events / n:.2f} per cycle), event payload "
          f"(state) {payload / max(events, 1):.0f} bytes per event, errors {r.error_count}")
    print(f"{'table':<28}{'before':>12}{'after':>12}{'bytes/cycle':>13}{'bytes/event':>13}")
    for table in sorted(set(before) | set(after)):
        b, a = before.get(table, 0), after.get(table, 0)
        print(f"{table:<28}{b:>12}{a:>12}{(a - b) / n:>13.0f}{(a - b) / max(events, 1):>13.0f}")
    if kind == "postgres":
        total = sum(after.values()) - sum(before.values())
        ev = after.get("signoff_events", 0) - before.get("signoff_events", 0)
        print(f"{'all tables':<28}{sum(before.values()):>12}{sum(after.values()):>12}"
              f"{total / n:>13.0f}{total / max(events, 1):>13.0f}")
        print(f"(the event log: {ev / n:.0f} bytes per cycle; the rest is snapshots and the "
              "read models, whose updated rows stay as dead tuples until vacuumed)")
    else:
        print("(tables from SQLite's dbstat: pages in use, indexes counted with their table)")
    return r.error_count


def memory(stores: Stores, kind: str, args: Namespace) -> int:
    """The server's memory as cycles are served: VmRSS sampled after each tenth of the
    load, VmHWM (the peak) at the end."""
    url = stores.fresh(kind, "memory")
    clients = max(args.clients)
    header(f"memory: the server's peak RSS ({kind})", url, workers=1, projections="inline",
           clients=f"{clients} ({args.client})",
           size=f"{args.memory_cycles} cycles, at most {args.memory_seconds:g} s")
    failed = 0
    with serve(url, stores.log("memory")) as server:
        assert server.proc is not None
        pid = server.proc.pid
        warm = run_load(server.url, clients, cycles=min(200, args.memory_cycles),
                        kind=args.client, procs=args.client_procs)
        samples = [(0, 0.0, status_mb(pid, "VmRSS"))]
        t0 = time.perf_counter()
        done = 0
        step = max(1, args.memory_cycles // 10)
        while done < args.memory_cycles:
            left = args.memory_seconds - (time.perf_counter() - t0)
            if left <= 0:
                break
            r = run_load(server.url, clients, cycles=min(step, args.memory_cycles - done),
                         seconds=left, kind=args.client, procs=args.client_procs)
            done += r.cycles
            failed += r.error_count
            samples.append((done, time.perf_counter() - t0, status_mb(pid, "VmRSS")))
            if r.cycles == 0:
                break
        peak = status_mb(pid, "VmHWM")
    print(f"after a warm-up of {warm.cycles} cycles at {clients} clients; errors {failed}")
    print(f"{'cycles':>9}{'seconds':>9}{'VmRSS MB':>10}")
    for n, s, mb in samples:
        print(f"{n:>9}{s:>9.0f}{mb:>10.1f}")
    xs = [n for n, _, _ in samples]
    slope = (statistics.linear_regression(xs, [m for _, _, m in samples]).slope * 1000
             if len(set(xs)) > 1 else float("nan"))
    print(f"server peak RSS (VmHWM) {peak:.1f} MB after {done} cycles; RSS slope "
          f"{slope:+.2f} MB per 1,000 cycles (target: under 250 MB after 100,000 cycles)")
    return failed
