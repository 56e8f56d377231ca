"""Section ``workers``: scale-out on one PostgreSQL.

For each worker count: a fresh database, ``signoff serve --workers N`` with
``SIGNOFF_PROJECTIONS=off`` and one ``signoff project`` process beside it (as in
production), 32 clients running HITL cycles; cycles/s, p50 / p99 of each request, the
connections open on the database and each worker's peak RSS. Then, with every process
stopped, every result is checked:

- each run has exactly its expected events: versions 1..N without gap or duplicate, and
  the events of a reference cycle made in memory by the same run lifecycle and agent loop;
- no run is lost: every run the clients got a 200 for is in the store and COMPLETED,
  and the store holds no run the clients did not start;
- the log's positions are unique and cover every event;
- the projections equal a rebuild: ``signoff project`` is waited for until it reaches
  the log's head (``GET /projections``), every read-model table is dumped, each
  projection is rebuilt from the log (``Projections.rebuild``, as ``signoff project
  rebuild NAME``), dumped again and compared.

Prints ``consistent: yes`` or what differs; the benchmark exits 1 if anything differs.
"""

from __future__ import annotations

import threading
from argparse import Namespace
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

import psycopg

from bench.common import (
    Stores,
    header,
    pg_connections,
    projector,
    serve,
    server_pids,
    status_mb,
    tree_cpu,
    wait_projections,
)
from bench.load import AGENT, MESSAGE, Result, pct, run_load


def connections(url: str) -> dict[str, int]:
    """Open connections to this database, by client program (psycopg's are unnamed)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT state, count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() GROUP BY state ORDER BY state").fetchall()
    return {str(state): int(n) for state, n in rows}


class Sampler:
    """The most connections to PostgreSQL seen during the load, once a second: the
    database's total (``pg_stat_activity``), every worker's, the busiest worker's, and
    ``signoff project``'s (from /proc)."""

    def __init__(self, url: str, workers: list[int], project: int) -> None:
        self.url, self.workers, self.project = url, workers, project
        self.port = urlsplit(url).port or 5432
        self.peak: dict[str, int] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)

    def _run(self) -> None:
        while True:
            groups = {f"w{p}": [p] for p in self.workers}
            groups["project"] = [self.project]
            counts = pg_connections(groups, self.port)
            now = {"database": sum(connections(self.url).values()),
                   "workers": sum(v for k, v in counts.items() if k != "project"),
                   "per worker": max(v for k, v in counts.items() if k != "project"),
                   "project": counts["project"]}
            for k, v in now.items():
                self.peak[k] = max(self.peak.get(k, 0), v)
            if self.stop.wait(1.0):
                return


def dump(url: str, tables: list[str]) -> dict[str, list[str]]:
    """Each table's rows as sorted JSON text."""
    out = {}
    with psycopg.connect(url) as conn:
        for table in tables:
            rows = conn.execute(f"SELECT row_to_json(t)::text FROM {table} t").fetchall()
            out[table] = sorted(r[0] for r in rows)
    return out


def reference_cycle() -> tuple[str, ...]:
    """The topics of one HITL cycle's events, made by the same run lifecycle and agent
    loop in memory: what every run of the load must have recorded, event for event."""
    from service.auth import OPEN

    runs = memory_lifecycle()
    try:
        run = runs.drive(runs.open_run(OPEN, AGENT, MESSAGE))
        run = runs.decide(OPEN, run.run_id, confirm_all(run), named="reference").run
        run = runs.drive(run)
        topics = tuple(runs.store.recorder.select_events(run.id))
    finally:
        runs.steps.close()
    return tuple(e.topic for e in topics)


def confirm_all(run: Any) -> list[Any]:
    """A decision request confirming every call the paused run waits for."""
    from domain.values import Reply

    return [Reply(c.tool_call_id, confirmed=True) for c in run.pending_calls()]


def memory_lifecycle() -> Any:
    """The run lifecycle of the demo agents with the offline model (as the server builds
    it: ``bootstrap``), on a store in memory; ``.steps`` is its agent loop
    (``close`` it)."""
    from bootstrap import build_lifecycle, build_loop
    from service.config import Settings
    from service.runs import RunService

    settings = Settings(database_url="sqlite:///:memory:", model="offline", agents="agent.demo")
    return build_lifecycle(settings, RunService(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}),
                           build_loop(settings))


def check(url: str, result: Result) -> list[str]:
    """What is inconsistent in the store after the load (empty: nothing)."""
    from projections.runner import Projections
    from service.config import Settings, eventsourcing_env
    from service.runs import RunService

    problems: list[str] = []
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT originator_id, array_agg(originator_version ORDER BY notification_id), "
            "array_agg(topic ORDER BY notification_id) FROM signoff_events "
            "GROUP BY originator_id").fetchall()
        n_events, n_positions = conn.execute(
            "SELECT count(*), count(DISTINCT notification_id) FROM signoff_events").fetchone()
    runs = {str(rid): (list(versions), list(topics)) for rid, versions, topics in rows}
    expected = reference_cycle()
    for rid, (versions, topics) in runs.items():
        if versions != list(range(1, len(versions) + 1)):
            problems.append(f"run {rid}: versions {versions} (a gap, a duplicate, or out of "
                            "log order)")
        if tuple(topics) != expected:
            problems.append(f"run {rid}: {len(topics)} events, not the {len(expected)} of a "
                            f"cycle: {[t.rsplit('.', 1)[-1] for t in topics]}")
    if n_events != n_positions or n_events != sum(len(v) for v, _ in runs.values()):
        problems.append(f"{n_events} events but {n_positions} distinct log positions")
    answered = set(result.run_ids)
    if len(answered) != len(result.run_ids):
        problems.append(f"{len(result.run_ids) - len(answered)} run ids answered twice")
    missing = answered - set(runs)
    if missing:
        problems.append(f"{len(missing)} runs answered 200 but not in the store")
    extra = set(runs) - answered
    if extra and not result.errors:
        problems.append(f"{len(extra)} runs in the store that no client was answered for")

    settings = Settings(database_url=url)
    env = eventsourcing_env(settings)
    app = RunService(env=env)
    not_completed = []
    for rid in sorted(answered & set(runs)):
        try:
            if app.get_run(UUID(rid)).status != "COMPLETED":
                not_completed.append(rid)
        except Exception as e:  # a broken stream does not load: say so, go on
            problems.append(f"run {rid} does not load: {type(e).__name__}: {e}"[:300])
    if not_completed:
        problems.append(f"{len(not_completed)} runs answered COMPLETED are not, e.g. "
                        f"{not_completed[0]}")

    projections = Projections(app, env)
    head = app.head()
    behind = [f"{s.name} at {s.position}" for s in projections.status() if s.position != head]
    if behind:
        problems.append(f"projections not at the head {head}: {', '.join(behind)}")
    for name, view in projections.views.items():
        tables = list(view.model.tables_in_order)
        before = dump(url, tables)
        projections.rebuild(name)
        after = dump(url, tables)
        for table in tables:
            if before[table] != after[table]:
                only_live = set(before[table]) - set(after[table])
                only_rebuilt = set(after[table]) - set(before[table])
                problems.append(
                    f"projection {name}, table {table}: {len(before[table])} rows live, "
                    f"{len(after[table])} rebuilt; {len(only_live)} only live, "
                    f"{len(only_rebuilt)} only rebuilt, e.g. "
                    f"{sorted(only_live or only_rebuilt)[:1]}")
    projections.close()
    app.close()
    return problems


def workers(stores: Stores, kind: str, args: Namespace) -> int:
    clients = max(args.clients)
    failed = 0
    rows: list[tuple[int, Result, dict[str, int], float, list[str], float]] = []
    cpus: list[list[float]] = []
    for n in args.workers:
        url = stores.fresh(kind, f"workers{n}")
        if n == args.workers[0]:
            header("workers: signoff serve --workers N on one PostgreSQL", url,
                   workers=",".join(map(str, args.workers)),
                   projections="off in the workers (SIGNOFF_PROJECTIONS=off), one "
                   "`signoff project` beside them",
                   clients=f"{clients} ({args.client})",
                   size=f"{args.workers_cycles} cycles per worker count, at most "
                   f"{args.seconds:g} s")
        log = stores.log(f"workers{n}")
        with projector(url, stores.log(f"project{n}")) as project, \
                serve(url, log, workers=n, SIGNOFF_PROJECTIONS="off") as server:
            warm = run_load(server.url, clients, cycles=4 * clients, kind=args.client,
                            procs=args.client_procs)
            pids = server_pids(server, n)
            assert stores.pg is not None
            cpu0 = (tree_cpu(stores.pg.pid), sum(tree_cpu(p) for p in pids),
                    tree_cpu(project.pid))
            with Sampler(url, pids, project.pid) as sampler:
                r = run_load(server.url, clients, cycles=args.workers_cycles,
                             seconds=args.seconds, kind=args.client, procs=args.client_procs)
            cpu1 = (tree_cpu(stores.pg.pid), sum(tree_cpu(p) for p in pids),
                    tree_cpu(project.pid))
            cpu = [(b - a) / max(r.cycles, 1) * 1000 for a, b in zip(cpu0, cpu1, strict=True)]
            conns = sampler.peak
            rss = max(status_mb(pid) for pid in server_pids(server, n))
            caught_up, waited = wait_projections(server.url, timeout=600)
        everything = Result(clients=clients)
        everything.merge(warm)
        everything.merge(r)
        problems = check(url, everything)
        if not caught_up:
            problems.insert(0, f"signoff project did not reach the head in {waited:.0f} s")
        failed += len(problems) + r.error_count + warm.error_count
        rows.append((n, r, conns, rss, problems, waited))
        cpus.append(cpu)
        print(f"{n} workers: {r.cycles} cycles at {r.rate:.1f}/s, errors {r.error_count}; "
              f"{len(everything.run_ids)} runs checked: "
              + ("consistent" if not problems else "INCONSISTENT"), flush=True)
    print(f"{'':>53}{'connections at most':>28}")
    print(f"{'workers':>7}{'cycles':>7}{'errors':>7}{'cycles/s':>9}{'start p50':>10}"
          f"{'p99':>7}{'cont. p50':>10}{'p99':>7}{'all':>6}{'workers':>8}{'each':>6}"
          f"{'project':>8}{'RSS':>7}{'projected':>10}")
    for n, r, conns, rss, _, waited in rows:
        print(f"{n:>7}{r.cycles:>7}{r.error_count:>7}{r.rate:>9.1f}"
              f"{pct(r.start, 50):>8.0f}ms{pct(r.start, 99):>5.0f}ms"
              f"{pct(r.cont, 50):>8.0f}ms{pct(r.cont, 99):>5.0f}ms{conns.get('database', 0):>6}"
              f"{conns.get('workers', 0):>8}{conns.get('per worker', 0):>6}"
              f"{conns.get('project', 0):>8}{rss:>5.0f}MB{waited:>9.1f}s")
    print("(connections: the most open on the database during the load, in all, held by "
          "the workers, by the busiest worker, by signoff project; RSS: the largest "
          "worker's VmHWM; projected: from the end of the load until signoff project "
          "reached the head)")
    print(f"{'workers':>7}{'CPU ms per cycle: PostgreSQL':>30}{'API workers':>13}"
          f"{'signoff project':>17}{'clients':>9}")
    for (n, r, *_), (db, api, proj) in zip(rows, cpus, strict=True):
        print(f"{n:>7}{db:>30.2f}{api:>13.2f}{proj:>17.2f}"
              f"{r.client_cpu / max(r.cycles, 1) * 1000:>9.2f}")
    for n, r, _, _, problems, _ in rows:
        for what, count in r.errors.most_common(5):
            print(f"{n} workers: error x{count}: {what}")
        for p in problems[:20]:
            print(f"{n} workers: {p}")
    print("consistent: yes" if failed == 0 else f"consistent: NO ({failed} problems)")
    return failed
