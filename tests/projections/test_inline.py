"""The read models written in each save's own transaction (projections/inline.py): one
commit carries the events and the rows that show them. Whatever else writes the log
meanwhile (another process without them, a follower, a rebuild, a crash between two
saves, a read model that fails), each event is applied once per read model and the
tables equal a rebuild from zero. The interleavings of saves, followers, rebuilds and
crashes are drawn (and shrunk) by Hypothesis, each in a fresh store.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bootstrap import write_inline
from domain.run import Run
from projections import inline
from projections.runner import Projections, projection_names
from service.config import Settings, eventsourcing_env
from service.runs import RunService
from tests.projections.bulk import (
    assert_dumps_equal,
    count_writes,
    dump,
    log_positions,
    rebuilt,
    write_runs,
)
from tests.projections.scenario import assert_matches_fold
from tests.support.postgres import PgServer

INLINE = ["queue", "audit", "webhooks", "sessions"]
VIEWS = projection_names()


class Server:
    """A server process's store and read models, each save writing them inline."""

    def __init__(self, env: dict[str, str], batch_size: int = 7) -> None:
        self.app = RunService(env=env)
        self.p = Projections(RunService(env=env), env, batch_size=batch_size)
        write_inline(self.app, self.p)

    def close(self) -> None:
        self.p.close()
        self.p.store.close()
        self.app.close()


@pytest.fixture
def server(env: dict[str, str]) -> Iterator[Server]:
    s = Server(env)
    try:
        yield s
    finally:
        s.close()


def positions(p: Projections) -> dict[str, int]:
    return {s.name: s.position for s in p.status()}


def test_a_save_writes_the_inline_read_models_in_its_own_transaction(
        server: Server) -> None:
    reads = []
    original = server.p.store.recorder.select_notifications
    server.p.store.recorder.select_notifications = (  # type: ignore[method-assign]
        lambda *a, **k: reads.append(a) or original(*a, **k))
    write_runs(server.app, 4, seed=1)
    head = server.app.head()
    # No follower ran: the saves wrote them, reading nothing back.
    assert positions(server.p) == {**dict.fromkeys(INLINE, head), "anchors": 0}
    assert reads == []
    assert_matches_fold(server.p, server.app)
    server.p.catch_up_all()  # the anchors are their follower's
    assert_dumps_equal(dump(server.p), rebuilt(server.p))


# A step: ("inline", runs) saved by the server, ("other", runs) by another process,
# ("follow", names, pages) the follower on some read models, ("rebuild", name), ("crash",)
# the server dying between two saves and a new one starting.
STEPS = st.lists(st.one_of(
    st.tuples(st.just("inline"), st.integers(1, 2)),
    st.just(("other", 1)),
    st.tuples(st.just("follow"),
              st.lists(st.sampled_from(VIEWS), min_size=1, max_size=len(VIEWS),
                       unique=True).map(tuple),
              st.integers(1, 3)),
    st.tuples(st.just("rebuild"), st.sampled_from(VIEWS)),
    st.just(("crash",)),
), min_size=1, max_size=24)


@contextmanager
def fresh_env(request: pytest.FixtureRequest, backend: str) -> Iterator[dict[str, str]]:
    """eventsourcing's settings for a new empty store: a SQLite file, or a new database on
    the session's throwaway PostgreSQL (dropped afterwards)."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="signoff-inline-") as tmp:
            url = f"sqlite:///{Path(tmp) / 'signoff.db'}"
            yield eventsourcing_env(Settings(database_url=url, postgres_pool_size=2))
        return
    pg: PgServer = request.getfixturevalue("pg_server")
    db = pg.create_database(f"test_{uuid.uuid4().hex[:12]}")
    try:
        yield eventsourcing_env(Settings(database_url=db.url, postgres_pool_size=2))
    finally:
        with contextlib.suppress(psycopg.OperationalError):
            db.drop_database()


# Examples per store: each one starts a fresh store (a new database on PostgreSQL).
EXAMPLES = {"sqlite": 80, "postgres": 15}


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_inline_saves_interleaved_with_everything_else_equal_a_rebuild(
        request: pytest.FixtureRequest, backend: str) -> None:
    """Any interleaving of steps (``STEPS``), each in a fresh store."""

    @settings(max_examples=EXAMPLES[backend], deadline=None, derandomize=True)
    @example(steps=[("inline", 2), ("other", 1), ("crash",), ("inline", 1), ("other", 1),
                    ("inline", 2)])
    @example(steps=[("inline", 2), ("rebuild", "queue"), ("inline", 1),
                    ("follow", ("audit", "queue"), 1), ("rebuild", "audit"), ("inline", 1)])
    @given(steps=STEPS)
    def interleaving(steps: list[tuple[Any, ...]]) -> None:
        with fresh_env(request, backend) as env:
            check_interleaving(env, steps)

    interleaving()


def check_interleaving(env: dict[str, str], steps: list[tuple[Any, ...]]) -> None:
    server = Server(env)
    other = RunService(env=env)  # another process, its saves not writing read models
    applied = count_writes(server.p)
    rebuilds: dict[str, int] = {}  # where each read model's last rebuild began, in applied
    try:
        for i, (kind, *args) in enumerate(steps):
            if kind == "inline":
                write_runs(server.app, args[0], seed=i)
            elif kind == "other":
                write_runs(other, args[0], seed=i)
            elif kind == "follow":
                server.p.prompt()
                for name in args[0]:
                    server.p.follow_up(name, pages=args[1])
            elif kind == "rebuild":
                rebuilds[args[0]] = len(applied[args[0]])
                server.p.rebuild(args[0])
            else:  # the process dies between two saves; a new one starts
                server.close()
                server = Server(env)
                applied = _merged(applied, count_writes(server.p))
        server.p.catch_up_all()
        # Each read model applied each position once, in order, since its last rebuild.
        log = log_positions(server.app)
        for name in INLINE:
            assert applied[name][rebuilds.get(name, 0):] == log, name
        assert_matches_fold(server.p, server.app)
        assert_dumps_equal(dump(server.p), rebuilt(server.p))
    finally:
        other.close()
        server.close()


def _merged(old: dict[str, list[int]], new: dict[str, list[int]]) -> dict[str, list[int]]:
    """The new process's writes go on after the old one's (the lists are the new ones)."""
    for key, values in old.items():
        new[key][:0] = values
    return new


@pytest.mark.parametrize("fault", ["python", "sql"])
def test_a_failing_read_model_never_fails_the_save(server: Server, fault: str) -> None:
    write_runs(server.app, 1, seed=3)
    queue = server.p.views["queue"].model
    original = queue.write_page

    def broken(c: Any, events: Any) -> None:
        original(c, events)  # its rows are written, then it fails: all rolled back
        if fault == "sql":  # the database refuses a statement (the pipeline aborts)
            c.execute("INSERT INTO signoff_no_such_table VALUES (1)")
        raise RuntimeError("a read model's bug")

    queue.write_page = broken  # type: ignore[method-assign]
    ids = write_runs(server.app, 2, seed=4)
    queue.write_page = original  # type: ignore[method-assign]
    head = server.app.head()
    assert all(server.app.get_run(i) for i in ids)  # every save committed
    at = positions(server.p)
    assert at["queue"] < head and at["audit"] < head  # one transaction: all left
    server.p.catch_up_all()  # the follower applies what was left
    write_runs(server.app, 1, seed=5)  # and the saves write them again
    assert positions(server.p)["queue"] == server.app.head()
    assert_matches_fold(server.p, server.app)
    server.p.catch_up_all()
    assert_dumps_equal(dump(server.p), rebuilt(server.p))


def test_concurrent_saves_and_a_follower_apply_each_event_once(env: dict[str, str]) -> None:
    server = Server(env, batch_size=50)
    other = RunService(env=env)
    applied = count_writes(server.p)
    stop = threading.Event()
    follower = threading.Thread(target=server.p.follow, args=(stop,))
    errors: list[BaseException] = []

    def drive(app: RunService, seed: int) -> None:
        try:
            write_runs(app, 6, seed=seed)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=drive, args=(server.app, 10 + i)) for i in range(4)]
    threads.append(threading.Thread(target=drive, args=(other, 20)))
    try:
        follower.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        stop.set()
        follower.join(10)
        server.p.catch_up_all()
        log = log_positions(server.app)
        for name in INLINE:
            assert sorted(applied[name]) == log, name  # once each, none missed
        assert_dumps_equal(dump(server.p), rebuilt(server.p))
    finally:
        stop.set()
        other.close()
        server.close()


def test_a_save_gives_a_read_model_the_few_events_it_missed(server: Server,
                                                            env: dict[str, str]) -> None:
    """Another process's saves (no read models written) are applied by this process's
    next save, in its transaction; a read model far behind (a rebuild) is left to its
    follower."""
    other = RunService(env=env)
    try:
        write_runs(other, 2, seed=6)
        behind = server.app.head()
        assert positions(server.p)["queue"] == 0
        write_runs(server.app, 1, seed=7)
        assert set(positions(server.p).values()) - {0} == {server.app.head()}
        assert_matches_fold(server.p, server.app)

        write_runs(server.app, 30, seed=8)  # more than a save catches up
        assert server.app.head() - behind > inline.CATCH_UP
        server.p.views["audit"].reset(target=server.app.head())  # a rebuild begins
        write_runs(server.app, 2, seed=10)
        at = positions(server.p)
        assert at["audit"] == 0 and at["queue"] == server.app.head() > behind
        server.p.rebuild("audit")  # the follower's
        write_runs(server.app, 1, seed=9)  # and the saves write it again
        assert positions(server.p)["audit"] == server.app.head()
        server.p.catch_up_all()
        assert_dumps_equal(dump(server.p), rebuilt(server.p))
    finally:
        other.close()


def test_saves_that_lose_a_race_leave_the_next_saves_sound(server: Server) -> None:
    """A save that conflicts (another saved the run first) fails alone, again and again,
    and the saves after it write the events and the read models as before (on
    PostgreSQL the read models' claim follows the failed insert in its pipeline)."""
    for n in range(12):
        run = Run.start(agent_id="ops", agent_name="Ops", user_id=f"u{n}", session_id="s",
                        input="hi")
        server.app.save(run)
        first, second = server.app.get_run(run.id), server.app.get_run(run.id)
        first.cancel(cancelled_by="alice")
        second.cancel(cancelled_by="bob")
        server.app.save(first)
        with pytest.raises(IntegrityError):
            server.app.save(second)
    write_runs(server.app, 3, seed=11)
    assert set(positions(server.p).values()) - {0} == {server.app.head()}
    server.p.catch_up_all()
    assert_dumps_equal(dump(server.p), rebuilt(server.p))


def test_the_follower_finds_the_saves_own_events_decoded(server: Server,
                                                        env: dict[str, str]) -> None:
    """The anchors' follower applies this process's saves from the events they offered
    (none read from the log); another process's events between them are read from the log,
    never skipped: the anchors equal a rebuild."""
    reads: list[int] = []
    original = server.p.store.recorder.select_notifications

    def select(start: Any, limit: int, *args: Any, **kwargs: Any) -> Any:
        page = original(start, limit, *args, **kwargs)
        reads.append(len(page))
        return page

    server.p.store.recorder.select_notifications = select  # type: ignore[method-assign]
    other = RunService(env=env)
    try:
        write_runs(server.app, 1, seed=11)
        server.p.catch_up_all()  # the follower reaches the head: the tail is there
        reads.clear()
        write_runs(server.app, 3, seed=12)
        server.p.follow_up("anchors")
        assert sum(reads) == 0 and positions(server.p)["anchors"] == server.app.head()

        write_runs(other, 1, seed=13)  # not offered: read
        write_runs(server.app, 1, seed=14)  # offered after a gap in what the tail holds
        server.p.prompt()
        server.p.follow_up("anchors")
        assert sum(reads) > 0 and positions(server.p)["anchors"] == server.app.head()
        server.p.catch_up_all()
        assert_dumps_equal(dump(server.p), rebuilt(server.p))
    finally:
        other.close()
