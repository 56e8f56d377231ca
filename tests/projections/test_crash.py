"""Crashes: the projection process is killed mid-stream (SIGKILL), restarted, and its
tables equal a from-zero rebuild: nothing missed, nothing counted twice (the counters
behind the unfiltered totals, ``signoff_queue_counts`` and ``signoff_audit_counts``, are
tables of the dump too, and are checked against the fold). Runners that catch up at the
same time never apply an event twice.

On SQLite and on PostgreSQL. The store is filled with ~3,200 realistic events (250 runs
driven through the agent loop in memory, then written in large transactions) so that
``signoff project`` with ``SIGNOFF_PROJECTION_BATCH_SIZE=5`` takes seconds to catch up,
and is killed while the queue is part way, then again while the audit trail is.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import OperationalError

from projections import audit, queue
from projections.runner import Projections, projection_names
from projections.store import PositionMoved
from service.config import Settings, eventsourcing_env
from service.runs import RunService
from tests.projections.bulk import (
    assert_dumps_equal,
    copy_events,
    count_writes,
    dump,
    log_positions,
    realistic_events,
    rebuilt,
)
from tests.projections.scenario import assert_matches_fold

QUEUE = queue.QueueProjection.name
AUDIT = audit.AuditProjection.name

ROOT = Path(__file__).resolve().parents[2]
RUNS = 250


@dataclass
class Store:
    url: str
    env: dict[str, str]
    app: RunService


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'signoff.db'}"
    else:
        url = request.getfixturevalue("pg_database").url
    env = eventsourcing_env(Settings(database_url=url, postgres_pool_size=2))
    app = RunService(env=env)
    try:
        yield Store(url, env, app)
    finally:
        app.close()


class Projector:
    """``python -m cli project`` (what ``signoff project`` runs) as a child process."""

    def __init__(self, url: str, log_path: Path, batch_size: int) -> None:
        self.env = {**os.environ, "SIGNOFF_DATABASE_URL": url,
                    "SIGNOFF_PROJECTION_BATCH_SIZE": str(batch_size),
                    "SIGNOFF_POSTGRES_POOL_SIZE": "2", "PYTHONPATH": str(ROOT)}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Projector:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "cli", "project"], cwd=ROOT,
                                         env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        return self

    def wait_until(self, condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                raise AssertionError(f"signoff project exited {self.proc.returncode} before "
                                     f"{what}:\n{self.log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.003)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(10) == -signal.SIGKILL

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def test_killed_mid_stream_and_restarted_equals_a_rebuild(store: Store, tmp_path: Path) -> None:
    copy_events(realistic_events(RUNS), store.app)
    head = store.app.head()
    p = Projections(store.app, store.env)  # creates the tables; reads positions and rows
    projector = Projector(store.url, tmp_path / "project.log", batch_size=5)

    def at(name: str) -> int:
        return p.views[name].position()

    try:
        # Killed while the queue is part way through the log. (Before half way: the
        # kill must land before the end, checked below. On PostgreSQL the projections
        # catch up side by side, so the audit trail may be part way too.)
        projector.start().wait_until(lambda: 0 < at(QUEUE) < head // 2,
                                     "queue mid-stream")
        projector.kill()
        killed_at = at(QUEUE)
        assert 0 < killed_at < head, "the kill should land mid-stream"
        audit_at = at(AUDIT)
        assert audit_at < head

        # Restarted: goes on from the tracked positions; killed again once the audit
        # trail has moved on, before it is through.
        projector.start().wait_until(
            lambda: audit_at < at(AUDIT) < audit_at + (head - audit_at) // 2,
            "audit mid-stream")
        projector.kill()
        assert killed_at <= at(QUEUE) <= head
        assert audit_at < at(AUDIT) < head, "the kill should land mid-stream"

        # Restarted again: catches up, then follows.
        projector.start().wait_until(lambda: all(s.lag == 0 for s in p.status()), "lag 0")
        before = dump(p)
    finally:
        projector.stop()
    assert projector.proc is not None and projector.proc.returncode == 0  # stops on SIGTERM
    assert before[f"position:{QUEUE}"] == before[f"position:{AUDIT}"] == head
    assert_matches_fold(p, store.app)
    after = rebuilt(p)
    assert_dumps_equal(before, after)
    p.close()


def test_two_runners_catching_up_at_once_apply_each_event_once(store: Store) -> None:
    copy_events(realistic_events(RUNS)[:1600], store.app)
    positions = log_positions(store.app)
    second_app = RunService(env=store.env)  # as another process: its own connections
    # Pages of 4 and 9: they overlap without being equal, and neither runner may re-apply
    # what the other applied (a page ending past the other's position included). They
    # start on different projections and meet on the other one half way: both take part
    # (a runner that starts second on a projection may well get no page in at all).
    runners = [Projections(store.app, store.env, batch_size=4, names=[QUEUE, AUDIT]),
               Projections(second_app, store.env, batch_size=9,
                           names=[AUDIT, QUEUE])]
    applied = [count_writes(r) for r in runners]
    errors: list[BaseException] = []

    def catch_up(r: Projections, barrier: threading.Barrier) -> None:
        try:
            barrier.wait(10)
            r.catch_up_all()
        except BaseException as e:
            errors.append(e)

    try:
        # Both must take part, or the race showed nothing: a thread scheduled late on a
        # loaded machine may find everything applied. Then the race is run again from
        # zero (at most five times); every try must apply each event exactly once.
        for _ in range(5):
            for counts in applied:
                for name in counts:
                    counts[name].clear()
            for name in (QUEUE, AUDIT):
                runners[0].views[name].reset()
            barrier = threading.Barrier(len(runners))
            threads = [threading.Thread(target=catch_up, args=(r, barrier)) for r in runners]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            assert not errors, errors
            for name in (QUEUE, AUDIT):
                counts = collections.Counter(applied[0][name] + applied[1][name])
                assert sorted(counts) == positions, f"{name}: events missed"
                twice = [pos for pos, n in counts.items() if n > 1]
                assert not twice, f"{name}: applied more than once: {twice[:10]}"
            if applied[0][QUEUE] and applied[1][AUDIT]:
                break
        assert applied[0][QUEUE] and applied[1][AUDIT], "one runner never took part"
        assert_matches_fold(runners[0], store.app)
        assert_dumps_equal(dump(runners[0]), rebuilt(runners[1]))
    finally:
        for r in runners:
            r.close()
        second_app.close()


def test_a_page_overlapping_an_applied_one_is_refused(store: Store) -> None:
    """The race the exactly-once check closes: runner A applies events 1-3 while runner B
    has read 1-7 from position 0. eventsourcing's tracking upsert alone would let B's
    page in (7 is past 3) and apply 1-3 a second time."""
    copy_events(realistic_events(RUNS)[:20], store.app)
    log = list(store.app.log())
    p = Projections(store.app, store.env)
    view = p.views[QUEUE]
    try:
        view.write(log[:3], after=0)  # runner A
        before = dump(p)
        with pytest.raises(PositionMoved):
            view.write(log[:7], after=0)  # runner B, with its stale position
        assert dump(p) == before  # nothing of B's page was written
        assert p.catch_up(QUEUE) == len(log) - 3  # B goes on from 3
        p.catch_up_all()
        assert_dumps_equal(dump(p), rebuilt(p))
    finally:
        p.close()


@pytest.mark.postgres
def test_following_survives_a_postgres_crash(pg_bin: Path) -> None:
    """The server crashes (immediate stop) and comes back on the same port: the follower
    (what ``signoff project`` runs) reconnects and goes on from its positions, whichever
    of its connections noticed first (LISTEN, the log's pool, a view's pool)."""
    from tests.support.postgres import throwaway_postgres

    with throwaway_postgres(pg_bin) as server:
        db = server.create_database("crashing")
        env = eventsourcing_env(Settings(database_url=db.url, postgres_pool_size=2))
        app = RunService(env=env)
        p = Projections(RunService(env=env), env, batch_size=5)
        stop = threading.Event()
        errors: list[BaseException] = []

        def follow() -> None:
            try:
                p.follow(stop)
            except BaseException as e:
                errors.append(e)

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        try:
            copy_events(realistic_events(RUNS)[:300], app)
            assert p.wait(app.head(), timeout=20)
            db.stop_immediate()
            time.sleep(0.3)
            db.start()
            copy_events(realistic_events(RUNS)[300:600], app)
            assert p.wait(app.head(), timeout=30), p.status()
            assert follower.is_alive() and not errors, errors
            assert_matches_fold(p, app)
        finally:
            stop.set()
            follower.join(10)
            p.close()
            p.store.close()
            app.close()


def test_a_failed_page_write_does_not_end_following(store: Store) -> None:
    """A transient error of the store while a page is written ("database is locked" on
    SQLite, a dropped connection on PostgreSQL: eventsourcing's OperationalError) is
    logged and retried from the tracked position; it does not end ``follow`` (and with it
    ``signoff project``)."""
    copy_events(realistic_events(RUNS)[:300], store.app)
    p = Projections(store.app, store.env, batch_size=50)
    view = p.views[AUDIT]
    original = view.write
    failed: list[int | None] = []

    def flaky(events: Any, *, after: int | None = None) -> None:
        if not failed:
            failed.append(after)
            raise OperationalError("database is locked")
        original(events, after=after)

    view.write = flaky  # type: ignore[method-assign]
    stop = threading.Event()
    errors: list[BaseException] = []

    def follow() -> None:
        try:
            p.follow(stop)
        except BaseException as e:
            errors.append(e)

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    try:
        assert p.wait(store.app.head(), timeout=15), p.status()
        assert failed == [0] and follower.is_alive() and not errors, errors
        assert_matches_fold(p, store.app)
    finally:
        stop.set()
        follower.join(10)
        p.close()


def test_processes_starting_together_on_a_new_store_all_start(store: Store) -> None:
    """API workers and ``signoff project`` started at once on a new database each create
    the projections' tables: all of them must come up (not all but one failing on the
    catalog's unique constraints, or on the tracking table's first row)."""
    # The applications one after the other: eventsourcing's own start-up is not safe to
    # run concurrently on PostgreSQL ("tuple concurrently updated" from its CREATE OR
    # REPLACE FUNCTION), which is not what this test is about.
    apps = [RunService(env=store.env) for _ in range(4)]
    barrier = threading.Barrier(len(apps))
    errors: list[BaseException] = []

    def start(app: RunService) -> None:
        try:
            barrier.wait(10)
            Projections(app, store.env).close()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=start, args=(app,)) for app in apps]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for app in apps:
        app.close()
    assert not errors, errors
    p = Projections(store.app, store.env)
    try:
        assert [s.position for s in p.status()] == [0] * len(projection_names())
    finally:
        p.close()
