"""Section ``appends``: event appends per second through the service's own write path,
next to the raw bound measured in the same run on the same database.

- service, agent loop: in-process HITL cycles through the run lifecycle
  (``RunLifecycle`` over the ``AgentLoop``, as the server builds them; start: the offline
  model proposes ``delete_records``, the run pauses; then decide (confirm) with
  ``drive=True``, which loads and settles the run first, as ``POST .../continue`` with
  ``stream=false`` does): real ``Run`` events saved by ``RunService``, several per save
  where the loop allows. No HTTP, no projections.
- service, one event per save: a run built command by command, ``app.save(run)`` after
  each (ten transactions of one event): what one append costs through the application.
- raw: single-row ``INSERT`` transactions with psycopg (sqlite3 on SQLite) into a table
  shaped like eventsourcing's (bigserial position, uuid, version, topic, state of a real
  event's size), one connection per thread; and the same with eventsourcing's
  ``LOCK TABLE ... IN EXCLUSIVE MODE`` and ``NOTIFY`` in each transaction (PostgreSQL).

Each figure from ``threads`` threads at once, for ``--appends-seconds``; ratio = service
events/s over raw rows/s (issue 7's target: at least 0.5).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
import uuid
from argparse import Namespace
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from bench.catchup import a_run
from bench.common import Stores, header
from bench.load import AGENT, MESSAGE

Step = Callable[[], int]  # appends some events, returns how many


def measure(make_step: Callable[[int], Step], threads: int, seconds: float,
            cap: int) -> tuple[int, float]:
    """Each of ``threads`` threads calls its own step (``make_step(i)``) back to back for
    ``seconds`` (or until ``cap`` events in all): (events, elapsed)."""
    count = [0]
    lock = threading.Lock()
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads + 1)
    deadline = [0.0]

    def worker(i: int) -> None:
        try:
            step = make_step(i)
        except BaseException as e:
            errors.append(e)
            barrier.abort()
            return
        try:
            barrier.wait()
            while time.perf_counter() < deadline[0] and count[0] < cap:
                n = step()
                with lock:
                    count[0] += n
        except BaseException as e:
            errors.append(e)

    ts = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for t in ts:
        t.start()
    deadline[0] = time.perf_counter() + seconds
    t0 = time.perf_counter()
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait()
    for t in ts:
        t.join(seconds + 120)
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return count[0], elapsed


def event_size(env: dict[str, str]) -> tuple[int, str]:
    """The mean stored size of a HITL cycle's events (as the store's mapper encodes them),
    and one of their topics."""
    from service.runs import RunService

    app = RunService(env={**env, "PERSISTENCE_MODULE": "eventsourcing.popo"})
    stored = [app.mapper.to_stored_event(e) for e in a_run(0).collect_events()]
    return sum(len(s.state) for s in stored) // len(stored), stored[1].topic


# ------------------------------------------------------------------ raw bounds

RAW_PG = """CREATE TABLE IF NOT EXISTS bench_raw (
    originator_id uuid NOT NULL,
    originator_version bigint NOT NULL,
    topic text,
    state bytea,
    notification_id bigserial,
    PRIMARY KEY (originator_id, originator_version));
CREATE UNIQUE INDEX IF NOT EXISTS bench_raw_notification_id ON bench_raw (notification_id)"""

RAW_SQLITE = """CREATE TABLE IF NOT EXISTS bench_raw (
    originator_id TEXT, originator_version INTEGER, topic TEXT, state BLOB,
    PRIMARY KEY (originator_id, originator_version))"""


def raw_pg(url: str, size: int, topic: str, locked: bool,
           opened: list[psycopg.Connection]) -> Callable[[int], Step]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(RAW_PG)
    state = bytes(range(256)) * (size // 256) + bytes(size % 256)

    def make(_: int) -> Step:
        conn = psycopg.connect(url, autocommit=True)
        opened.append(conn)
        conn.prepare_threshold = 0
        insert = ("INSERT INTO bench_raw (originator_id, originator_version, topic, state) "
                  "VALUES (%s, 1, %s, %s)")

        def step() -> int:
            if locked:
                with conn.transaction():
                    conn.execute("LOCK TABLE bench_raw IN EXCLUSIVE MODE")
                    conn.execute("NOTIFY bench_raw")
                    conn.execute(insert, (uuid.uuid4(), topic, state))
            else:
                conn.execute(insert, (uuid.uuid4(), topic, state))  # one transaction
            return 1

        return step

    return make


def raw_sqlite(url: str, size: int, topic: str,
               opened: list[sqlite3.Connection]) -> Callable[[int], Step]:
    path = url[len("sqlite:///"):]
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(RAW_SQLITE)
    state = bytes(range(256)) * (size // 256) + bytes(size % 256)

    def make(_: int) -> Step:
        conn = sqlite3.connect(path, isolation_level=None, timeout=10,
                               check_same_thread=False)
        opened.append(conn)

        def step() -> int:
            conn.execute("INSERT INTO bench_raw VALUES (?, 1, ?, ?)",
                         (uuid.uuid4().hex, topic, state))  # autocommit: one transaction
            return 1

        return step

    return make


# ------------------------------------------------------------------ the service

def lifecycle_cycles(runs: object, commits: list[int]) -> Callable[[int], Step]:
    """HITL cycles in process, as the two requests drive them; ``commits`` counts the
    saves (the lifecycle's observer is called once per save; concurrent saves may share
    one transaction)."""
    from bench.workers import confirm_all
    from service.auth import OPEN
    from service.lifecycle import RunLifecycle

    assert isinstance(runs, RunLifecycle)
    lock = threading.Lock()

    def committed(*_: object) -> None:
        with lock:
            commits[0] += 1

    def make(i: int) -> Step:
        def step() -> int:
            run = runs.open_run(OPEN, AGENT, MESSAGE, user_id=f"user{i}")
            run = runs.drive(run, committed)
            # As POST .../continue (stream=false) does: load and settle the run, then the
            # decisions committed with the run's next durable point (``drive=True``).
            run = runs.decide(OPEN, run.run_id, confirm_all(run), named=f"user{i}",
                              observer=committed, drive=True).run
            assert run.status == "COMPLETED", run.status
            return run.version

        return step

    return make


def saves_one_by_one(app: object) -> Callable[[int], Step]:
    """A run built command by command, saved after each: one event per transaction."""
    from domain.run import Run
    from domain.values import Requirement
    from service.runs import RunService

    assert isinstance(app, RunService)

    def make(i: int) -> Step:
        def step() -> int:
            run = Run.start(agent_id=AGENT, agent_name="Data manager", user_id=f"user{i}",
                            session_id=f"s{i}", input=MESSAGE)
            app.save(run)
            args = {"table_name": "users", "count": 50}
            for command in (
                lambda: run.record_model_response(
                    model="offline", provider="signoff", content=None,
                    tool_calls=[{"id": "call_1", "name": "delete_records", "args": args}]),
                lambda: run.request_tool_call(tool_call_id="call_1", tool_name="delete_records",
                                              tool_args=args,
                                              requires=Requirement.CONFIRMATION),
                run.pause,
                lambda: run.confirm_tool("call_1", decided_by=f"user{i}"),
                run.continue_run,
                lambda: run.start_tool("call_1",
                                       deadline=datetime.now(UTC) + timedelta(minutes=5)),
                lambda: run.record_tool_result("call_1", "Deleted 50 records"),
                lambda: run.record_model_response(model="offline", provider="signoff",
                                                  content="Done.", tool_calls=[]),
                lambda: run.complete("Done."),
            ):
                command()
                app.save(run)
            return run.version

        return step

    return make


def appends(stores: Stores, kind: str, args: Namespace) -> int:
    from bootstrap import build_app, build_lifecycle, build_loop
    from service.config import Settings, eventsourcing_env

    url = stores.fresh(kind, "appends")
    settings = Settings(database_url=url, model="offline", agents="agent.demo")
    env = eventsourcing_env(settings)
    size, topic = event_size(env)
    store, loop = build_app(settings), build_loop(settings)
    runs = build_lifecycle(settings, store, loop)
    seconds, cap = args.appends_seconds, args.appends_cap
    header(f"appends: event appends per second, service vs raw ({kind})", url,
           threads=",".join(map(str, args.threads)),
           size=f"{seconds:g} s per figure (at most {cap} events)",
           event=f"{size} bytes of state (the mean of a HITL cycle's events)")
    pg = kind == "postgres"
    print(f"{'threads':>7}{'raw INSERT':>12}{'raw+LOCK+NOTIFY' if pg else '':>17}"
          f"{'service loop':>14}{'ratio':>7}{'service 1/save':>16}{'ratio':>7}")
    print(f"{'':>7}{'rows/s':>12}{'rows/s' if pg else '':>17}{'events/s':>14}{'':>7}"
          f"{'events/s':>16}")
    commits = [0]
    events = 0
    opened: list[Any] = []
    try:
        for n in args.threads:
            if pg:
                raw = measure(raw_pg(url, size, topic, False, opened), n, seconds, cap)
                locked = measure(raw_pg(url, size, topic, True, opened), n, seconds, cap)
            else:
                raw = measure(raw_sqlite(url, size, topic, opened), n, seconds, cap)
                locked = (0, 1.0)
            for conn in opened:
                conn.close()
            opened.clear()
            service = measure(lifecycle_cycles(runs, commits), n, seconds, cap)
            events += service[0]
            one = measure(saves_one_by_one(store), n, seconds, cap)
            raw_rate = raw[0] / raw[1]
            rates = [service[0] / service[1], one[0] / one[1]]
            print(f"{n:>7}{raw_rate:>12.0f}"
                  f"{(f'{locked[0] / locked[1]:.0f}' if pg else ''):>17}"
                  f"{rates[0]:>14.0f}{rates[0] / raw_rate:>7.2f}"
                  f"{rates[1]:>16.0f}{rates[1] / raw_rate:>7.2f}", flush=True)
    finally:
        loop.close()
        store.close()
    print(f"(service loop: HITL cycles through AgentLoop, {events / max(commits[0], 1):.2f} "
          "events per save; service 1/save: one event per app.save; ratio: service "
          "events/s over raw rows/s, target at least 0.5)")
    return 0
