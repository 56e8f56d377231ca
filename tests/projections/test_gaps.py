"""Gaps: with concurrent writers no event is skipped, and a hole in the positions (a
rolled-back insert burns sequence values) neither stalls the projections nor makes them
skip anything. PostgreSQL (SQLite has one writer at a time and no holes).

Why nothing is skipped although a projection reads ``position > last``: eventsourcing's
insert takes ``LOCK TABLE ... IN EXCLUSIVE MODE`` before it draws positions and holds it
to commit, so positions commit in order: a later writer waits until an earlier one
commits (``test_a_writer_in_flight_holds_back_later_commits`` shows it happening).
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import IntegrityError

from agent.loop import AgentLoop
from agent.models.offline import OfflineModel
from domain.run import Run
from projections import audit, queue
from projections.runner import Projections
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
from tests.projections.scenario import AGENTS, assert_matches_fold
from tests.support.postgres import PgServer
from tests.support.runs import Runs

pytestmark = pytest.mark.postgres
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(pg_database: PgServer) -> dict[str, str]:
    return eventsourcing_env(Settings(database_url=pg_database.url, postgres_pool_size=2))


class Follower:
    """``Projections.follow`` (LISTEN/NOTIFY) in a thread, counting what it applies."""

    def __init__(self, env: dict[str, str], batch_size: int = 5) -> None:
        self.app = RunService(env=env)
        self.projections = Projections(self.app, env, batch_size=batch_size)
        self.applied = count_writes(self.projections)
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._follow, daemon=True)

    def _follow(self) -> None:
        try:
            self.projections.follow(self.stop)
        except BaseException as e:
            self.errors.append(e)

    def __enter__(self) -> Follower:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join(10)
        self.projections.close()
        self.app.close()

    def position(self) -> int:
        return min(v.position() for v in self.projections.views.values())

    def assert_applied_exactly(self, positions: list[int]) -> None:
        assert not self.errors, self.errors
        for name in (queue.QueueProjection.name, audit.AuditProjection.name):
            applied = self.applied[name]
            assert len(applied) == len(set(applied)), f"{name}: an event applied twice"
            assert sorted(applied) == positions, (
                f"{name}: missed {sorted(set(positions) - set(applied))[:10]}")


def burn_positions(app: RunService, runs: Runs, rounds: int, fresh: int = 5) -> None:
    """Saves that fail on a stale run after ``fresh`` new runs took positions: each round
    rolls back, leaving a hole of at least ``fresh`` positions in the log."""
    for i in range(rounds):
        run = runs.start("data_manager", 'call delete_records {"table_name": "t", "count": 1}',
                         user_id="racer")
        stale = app.get_run(run.id)
        runs.cancel(run.run_id, actor="racer", reason=f"round {i}")
        stale.cancel(cancelled_by="late racer")
        new = [Run.start(agent_id="ops", agent_name="Ops", user_id="racer", session_id="s",
                         input="never stored") for _ in range(fresh)]
        with pytest.raises(IntegrityError):
            app.save(*new, stale)


@pytest.fixture
def loop_factory(env: dict[str, str]) -> Iterator[Any]:
    """Each call: the run lifecycle over an application (and pool) of its own, as an API
    worker's."""
    made: list[Runs] = []

    def make() -> Runs:
        runs = Runs(RunService(env=env), AgentLoop(AGENTS, OfflineModel()))
        made.append(runs)
        return runs

    yield make
    for runs in made:
        runs.loop.close()
        runs.store.close()


def test_concurrent_writers_with_a_follower_skip_nothing(
        env: dict[str, str], pg_database: PgServer, loop_factory: Any, tmp_path: Path) -> None:
    with Follower(env) as follower:
        # Another process writes too, while four threads (each its own application and
        # pool, as API workers) drive runs and a fifth makes holes with failed saves.
        log = (tmp_path / "writer.log").open("wb")
        other = subprocess.Popen(
            [sys.executable, "-m", "tests.projections.writer", pg_database.url, "12", "99"],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=log,
            stderr=subprocess.STDOUT)
        errors: list[BaseException] = []

        def guarded(fn: Any, *args: Any) -> None:
            try:
                fn(*args)
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=guarded, args=(write_runs, loop_factory().store,
                                                          12, seed)) for seed in range(4)]
        racer = loop_factory()
        threads.append(threading.Thread(target=guarded,
                                        args=(burn_positions, racer.store, racer, 6)))
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert other.wait(120) == 0, (tmp_path / "writer.log").read_text()[-3000:]
        assert not errors, errors
        applied_while_writing = len(follower.applied[queue.QueueProjection.name])

        app = racer.store
        head = app.head()
        assert follower.projections.wait(head, timeout=30), follower.projections.status()
        positions = log_positions(app)
        assert head == positions[-1]
        assert head - len(positions) >= 6 * 5, "the failed saves should have left holes"
        assert applied_while_writing > 0, "the follower should follow, not only catch up"
        follower.assert_applied_exactly(positions)
        assert_matches_fold(follower.projections, app)
        assert_dumps_equal(dump(follower.projections), rebuilt(follower.projections))


def test_a_writer_in_flight_holds_back_later_commits(env: dict[str, str],
                                                     loop_factory: Any) -> None:
    """Writer A has drawn its positions but not committed; writer B, later, must wait for
    A (the table lock), so the follower can never pass over A's positions."""
    a, b = loop_factory(), loop_factory()
    message = 'call delete_records {"table_name": "t", "count": 1}'
    a.start("data_manager", message)
    drawn: list[int] = []
    in_flight, release = threading.Event(), threading.Event()
    fetch = a.store.recorder._fetch_ids_after_insert_events  # type: ignore[attr-defined]

    def hold(*args: Any, **kwargs: Any) -> Any:
        ids = fetch(*args, **kwargs)
        drawn.extend(ids)
        in_flight.set()
        release.wait(5)  # inside A's transaction: positions drawn, not committed
        return ids

    with Follower(env, batch_size=3) as follower:
        assert follower.projections.wait(a.store.head(), timeout=10)
        a.store.recorder._fetch_ids_after_insert_events = hold  # type: ignore[attr-defined]
        writer_a = threading.Thread(target=a.start, args=("data_manager", message))
        writer_a.start()
        assert in_flight.wait(10)
        done_b = threading.Event()
        writer_b = threading.Thread(target=lambda: (b.start("support_desk",
                                                            'call lookup_order {"order_id": '
                                                            '"o-1"}'), done_b.set()))
        writer_b.start()
        time.sleep(0.5)
        assert not done_b.is_set(), "B committed while A's positions were in flight"
        assert follower.position() < min(drawn)
        release.set()
        writer_a.join(10)
        writer_b.join(10)
        assert done_b.is_set()
        positions = log_positions(a.store)
        assert max(drawn) < min(p for p in positions if p not in drawn and p > min(drawn))
        assert follower.projections.wait(a.store.head(), timeout=10)
        follower.assert_applied_exactly(positions)
        assert_matches_fold(follower.projections, a.store)


def test_a_hole_in_the_positions_neither_stalls_nor_skips(env: dict[str, str],
                                                         loop_factory: Any) -> None:
    runs = loop_factory()
    app = runs.store
    with Follower(env, batch_size=3) as follower:
        write_runs(app, 3, seed=1)
        assert follower.projections.wait(app.head(), timeout=10)
        before_hole = app.head()
        burn_positions(app, runs, rounds=1, fresh=10)  # a hole wider than a page
        write_runs(app, 3, seed=2)
        head = app.head()
        assert follower.projections.wait(head, timeout=10), follower.projections.status()
        positions = log_positions(app)
        holes = [(x, y) for x, y in itertools.pairwise(positions) if y - x > 1]
        assert any(x >= before_hole and y - x > 10 for x, y in holes), holes
        follower.assert_applied_exactly(positions)
        assert_matches_fold(follower.projections, app)
    # Caught up from zero in pages of 3, across the hole, gives the same.
    p = Projections(app, env, batch_size=3)
    try:
        assert_dumps_equal(dump(p), rebuilt(p))
    finally:
        p.close()
