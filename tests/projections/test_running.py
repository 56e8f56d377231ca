"""The running runs (``signoff_queue_running``) and ``sweeps.stale``: which runs a sweeper
looks at for a crashed process's leftovers. Runs are made with the domain's commands
at times of a fake clock (the events' timestamps), saved, projected, and read back, on
SQLite and PostgreSQL; every answer is compared with the fold's too.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.run import Run
from domain.values import CallState, Requirement, RunStatus
from projections import queue, sweeps
from projections.runner import Projections
from projections.sql import Cursor
from service.config import Settings, eventsourcing_env
from service.runs import RunService
from tests.projections.bulk import assert_dumps_equal, dump, rebuilt
from tests.projections.fold import expected_running, expected_stale, fold
from tests.projections.scenario import (
    FakeClock,
    assert_matches_fold,
    fake_time,
    read_running,
    read_stale,
    running_times,
    same,
)
from tests.support.postgres import PgServer

T0 = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def at(minutes: float) -> datetime:
    return T0 + minutes * MINUTE


class Runs:
    """Runs made at the fake clock's times, each saved after every command."""

    def __init__(self, app: RunService) -> None:
        self.app = app
        self.clock = FakeClock(T0)

    def save(self, run: Run) -> Run:
        self.app.save(run)
        return run

    def start(self, minutes: float, input: str = "go") -> Run:
        self.clock.t = at(minutes)
        with fake_time(self.clock):
            return self.save(Run.start(agent_id="ops", agent_name="Ops", user_id="u",
                                       session_id="s", input=input))

    def then(self, run: Run, minutes: float, *commands: str, deadline: float = 0,
             call: str = "c1") -> Run:
        """``commands`` on ``run`` at ``minutes``: request (a call that needs a
        confirmation, or ``request-free`` one that needs none), pause, confirm,
        continue, start (the tool, its deadline at ``deadline``), retry (a call left
        running, started again as an idempotent one is after a crash), in-doubt, done,
        failed, complete, fail, cancel."""
        self.clock.t = at(minutes)
        with fake_time(self.clock):
            for command in commands:
                if command.startswith("request"):
                    run.record_model_response(model="m", provider="p", content=None,
                                              tool_calls=[{"id": call, "name": "t",
                                                           "args": {}}])
                    run.request_tool_call(tool_call_id=call, tool_name="t", tool_args={},
                                          requires=None if command == "request-free"
                                          else Requirement.CONFIRMATION)
                elif command == "pause":
                    run.pause()
                elif command == "confirm":
                    run.confirm_tool(call, decided_by="alice")
                elif command == "continue":
                    run.continue_run()
                elif command == "start":
                    run.start_tool(call, deadline=at(deadline))
                elif command == "retry":
                    run.trigger_event(run.ToolExecutionStarted, tool_call_id=call,
                                      attempt=run.calls[call].attempts + 1,
                                      deadline=at(deadline))
                elif command == "in-doubt":
                    run.mark_in_doubt(call)
                elif command == "done":
                    run.record_tool_result(call, "ok")
                elif command == "failed":
                    run.record_tool_failure(call, "boom")
                elif command == "complete":
                    run.complete("done")
                elif command == "fail":
                    run.fail("error")
                elif command == "cancel":
                    run.cancel(cancelled_by="bob")
                else:  # pragma: no cover
                    raise ValueError(command)
                self.save(run)
        return run


def test_the_running_runs_and_the_stale_ones(app: RunService,
                                             projections: Projections) -> None:
    runs = Runs(app)
    # A model turn in flight since minute 0 (nothing recorded after the start).
    thinking = runs.start(0)
    # A tool running since minute 1, its deadline at minute 11.
    tooling = runs.then(runs.start(0.5), 1, "request-free", "start", deadline=11)
    # A tool's outcome at minute 2: the next model turn since then, no deadline.
    after_tool = runs.then(runs.start(1.5), 1.8, "request-free", "start", deadline=12)
    runs.then(after_tool, 2, "done")
    # A tool that failed at minute 2.5.
    failed_tool = runs.then(runs.start(2.2), 2.3, "request-free", "start", deadline=12)
    runs.then(failed_tool, 2.5, "failed")
    # Paused, then continued at minute 3; then its confirmed tool running until minute 4.
    continued = runs.then(runs.start(0.1), 0.2, "request", "pause")
    runs.then(continued, 3, "confirm", "continue")
    runs.then(continued, 3.5, "start", deadline=4)
    # Not running: paused, completed, failed, cancelled (with a late tool outcome after).
    runs.then(runs.start(0), 0, "request", "pause")
    runs.then(runs.start(0), 0.5, "complete")
    runs.then(runs.start(0), 0.5, "fail")
    cancelled = runs.then(runs.start(0), 0.5, "request-free", "start", deadline=1)
    runs.then(cancelled, 0.6, "cancel")
    runs.then(cancelled, 0.7, "done")
    projections.catch_up_all()

    ids = {name: r.run_id for name, r in [("thinking", thinking), ("tooling", tooling),
                                          ("after_tool", after_tool),
                                          ("failed_tool", failed_tool),
                                          ("continued", continued)]}
    expected = sorted([
        {"run_id": ids["thinking"], "since": at(0), "deadline": None},
        {"run_id": ids["tooling"], "since": at(1), "deadline": at(11)},
        {"run_id": ids["after_tool"], "since": at(2), "deadline": None},
        {"run_id": ids["failed_tool"], "since": at(2.5), "deadline": None},
        {"run_id": ids["continued"], "since": at(3.5), "deadline": at(4)},
    ], key=lambda r: r["run_id"])
    assert read_running(projections) == expected
    f = fold(app.log())
    assert expected_running(f) == expected

    def stale(now: float, idle_before: float, limit: int = 100) -> list[str]:
        answer = read_stale(projections, at(now), at(idle_before), limit)
        assert answer == expected_stale(f, at(now), at(idle_before), limit)
        return answer

    names = {v: k for k, v in ids.items()}
    # Nothing past a deadline, no step begun before minute 0.
    assert stale(0, 0) == []
    # Bounds are strict: a deadline at ``now``, or a step begun at ``idle_before``, is
    # not (yet) stale.
    assert [names[r] for r in stale(4, 2)] == ["thinking"]
    assert [names[r] for r in stale(4 + 1e-6, 2 + 1e-6)] == ["thinking", "after_tool",
                                                             "continued"]
    # Past every deadline, every step older than the last: oldest first, by the deadline
    # or the step's start.
    assert [names[r] for r in stale(60, 60)] == ["thinking", "after_tool", "failed_tool",
                                                 "continued", "tooling"]
    # A running tool is judged by its deadline only, however old its start.
    assert [names[r] for r in stale(5, 60)] == ["thinking", "after_tool", "failed_tool",
                                                "continued"]
    assert [names[r] for r in stale(60, 0)] == ["continued", "tooling"]
    # At most ``limit``, the oldest; taken from both kinds.
    assert [names[r] for r in stale(60, 60, limit=1)] == ["thinking"]
    assert [names[r] for r in stale(60, 60, limit=4)] == ["thinking", "after_tool",
                                                          "failed_tool", "continued"]
    assert [names[r] for r in stale(60, 2.2, limit=3)] == ["thinking", "after_tool",
                                                           "continued"]

    # The run goes on: a model turn (nothing recorded), then it completes.
    runs.then(tooling, 20, "done")
    projections.catch_up_all()
    assert [r["since"] for r in read_running(projections)
            if r["run_id"] == ids["tooling"]] == [at(20)]
    runs.then(tooling, 21, "complete")
    runs.then(thinking, 21, "cancel")
    projections.catch_up_all()
    assert {r["run_id"] for r in read_running(projections)} == {
        ids["after_tool"], ids["failed_tool"], ids["continued"]}
    assert_matches_fold(projections, app)
    assert_dumps_equal(dump(projections), rebuilt(projections))


def test_ties_are_in_run_id_order(app: RunService, projections: Projections) -> None:
    runs = Runs(app)
    idle = [runs.start(1) for _ in range(3)]  # three steps begun at minute 1
    late = [runs.then(runs.start(0), 0, "request-free", "start", deadline=1)
            for _ in range(3)]  # three deadlines at minute 1
    projections.catch_up_all()
    every = sorted(r.run_id for r in idle + late)
    assert read_stale(projections, at(2), at(2)) == every
    assert read_stale(projections, at(2), at(2), limit=4) == every[:4]
    assert read_stale(projections, at(2), at(1)) == sorted(r.run_id for r in late)
    assert read_stale(projections, at(1), at(2)) == sorted(r.run_id for r in idle)
    assert_matches_fold(projections, app)


def test_a_continuation_applied_again_leaves_one_row(app: RunService,
                                                     projections: Projections) -> None:
    runs = Runs(app)
    run = runs.then(runs.start(0), 0, "request", "pause")
    runs.then(run, 5, "confirm", "continue")
    projections.catch_up_all()
    [continued] = [e for _, e in app.log() if type(e).__name__ == "RunContinued"]
    with projections.views[queue.QueueProjection.name].write_transaction() as c:
        queue.QueueProjection().write_page(c, [(10_000, continued)])
    assert read_running(projections) == [{"run_id": run.run_id, "since": at(5),
                                          "deadline": None}]


def test_a_store_projected_before_the_table_gets_it(app: RunService, env: dict[str, str],
                                                    projections: Projections) -> None:
    """Created as a view opens (no migration), empty: it holds the runs that start or
    continue from then on. A run already running then is named by ``stale`` from its
    start, so a run a crash left before the upgrade is still settled."""
    runs = Runs(app)
    earlier = runs.start(0)
    projections.catch_up_all()
    with projections.views[queue.QueueProjection.name].write_transaction() as c:
        c.execute("DROP TABLE signoff_queue_running")
    p = Projections(app, env, names=[queue.QueueProjection.name])
    try:
        assert read_running(p) == []
        assert read_stale(p, at(0.5), at(0.5)) == [earlier.run_id]
        assert read_stale(p, at(0.5), at(0)) == []  # idle since its start: not before
        later = runs.start(1)
        p.catch_up_all()
        assert [r["run_id"] for r in read_running(p)] == [later.run_id]
        assert read_stale(p, at(2), at(2)) == [earlier.run_id, later.run_id]
    finally:
        p.close()


# ------------------------------------------------------------ random histories

def options(run: Run) -> list[tuple[str, str]]:
    """The (command, call) pairs the run's state allows."""
    by_state: dict[str, list[str]] = {}
    for call_id, call in sorted(run.calls.items()):
        by_state.setdefault(call.state, []).append(call_id)
    new = f"c{len(run.calls) + 1}"
    # An outcome may come late: after the call went in doubt, or its run ended.
    out = [(c, i) for c in ("done", "failed")
           for i in by_state.get(CallState.RUNNING, []) + by_state.get(CallState.IN_DOUBT, [])]
    if run.status == RunStatus.RUNNING:
        out += [("fail", ""), ("cancel", "")]
        out += [("start", i) for i in by_state.get(CallState.APPROVED, [])]
        out += [(c, i) for c in ("in-doubt", "retry")
                for i in by_state.get(CallState.RUNNING, [])]
        if run.pending_calls():
            out.append(("pause", ""))
        if not run.calls_in(CallState.PENDING, CallState.APPROVED, CallState.RUNNING,
                            CallState.IN_DOUBT):  # the model's next turn
            out += [("request-free", new), ("request", new), ("complete", "")]
    elif run.status == RunStatus.PAUSED:
        out += [("fail", ""), ("cancel", "")]
        out += [("confirm", i) for i in by_state.get(CallState.PENDING, [])]
        if not run.pending_calls():
            out.append(("continue", ""))
    return out


def drive_randomly(data: Any, app: RunService, p: Projections) -> None:
    """Random commands the runs' states allow, on random runs at random times, saved
    one by one; the projection catches up, in pages of 3, at random moments. Unlike the
    loop's scenarios, a run may be left running at any step of its life (as by a crash):
    in a model turn, in a tool, after a tool's outcome, after a continuation."""
    runs = Runs(app)
    minutes = 0.0
    live: list[Run] = []
    for _ in range(data.draw(st.integers(1, 60), "steps")):
        minutes += data.draw(st.sampled_from([0, 0, 1e-6, 0.5, 1, 30]), "tick")
        live = [r for r in live if options(r)]
        if not live or data.draw(st.integers(0, 6), "start?") == 0:
            live.append(runs.start(minutes))
            continue
        run = live[data.draw(st.integers(0, len(live) - 1), "run")]
        allowed = options(run)
        going_on = [o for o in allowed if o[0] not in ("complete", "fail", "cancel")]
        if going_on and data.draw(st.integers(0, 5), "end?") > 0:  # runs live a while
            allowed = going_on
        command, call = data.draw(st.sampled_from(allowed), "command")
        timeout = data.draw(st.sampled_from([0, 1, 2]), "timeout")
        runs.then(run, minutes, command, call=call, deadline=minutes + timeout)
        if data.draw(st.integers(0, 3), "catch up?") == 0:
            p.catch_up_all()
    p.catch_up_all()


def check_random_history(data: Any, env: dict[str, str]) -> None:
    app = RunService(env=env)
    p = Projections(app, env, batch_size=3, names=[queue.QueueProjection.name])
    try:
        drive_randomly(data, app, p)
        f = fold(app.log())
        same(read_running(p), expected_running(f), "running runs")
        times = running_times(f)
        for _ in range(3):
            now = data.draw(st.sampled_from(times), "now")
            idle_before = data.draw(st.sampled_from(times), "idle before")
            limit = data.draw(st.sampled_from([1, 2, 3, 100]), "limit")
            assert read_stale(p, now, idle_before, limit) == expected_stale(
                f, now, idle_before, limit), (now, idle_before, limit)
        assert_dumps_equal(dump(p), rebuilt(p))
    finally:
        p.close()
        app.close()


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_random_histories_equal_the_fold_sqlite(data: Any) -> None:
    with tempfile.TemporaryDirectory(prefix="signoff-running-") as tmp:
        check_random_history(data, eventsourcing_env(
            Settings(database_url=f"sqlite:///{Path(tmp) / 'running.db'}")))


@pytest.mark.postgres
def test_random_histories_equal_the_fold_postgres(pg_database: PgServer) -> None:
    env = eventsourcing_env(Settings(database_url=pg_database.url, postgres_pool_size=2))

    @settings(max_examples=10, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=st.data())
    def examples(data: Any) -> None:
        with psycopg.connect(pg_database.url, autocommit=True) as conn:  # a clean database
            conn.execute("DROP SCHEMA public CASCADE")
            conn.execute("CREATE SCHEMA public")
        check_random_history(data, env)

    examples()


class _Recording:
    """A cursor that remembers the statements it runs."""

    def __init__(self, c: Cursor) -> None:
        self.c, self.dialect = c, c.dialect
        self.statements: list[tuple[str, Sequence[Any]]] = []

    def execute(self, statement: str, params: Sequence[Any] = ()) -> Cursor:
        self.statements.append((statement, params))
        return self.c.execute(statement, params)


def test_stale_is_one_statement_on_two_index_ranges(projections: Projections) -> None:
    """Each half of the statement on ``signoff_queue_running`` is an ordered range of its
    partial index, at most
    ``limit`` entries of it, however many runs are running (not a scan of the table).
    The rows are written directly: many running runs, a few of them stale."""
    view = projections.views[queue.QueueProjection.name]
    with view.write_transaction() as c:
        d = c.dialect
        c.executemany("INSERT INTO signoff_queue_running (run_id, since, deadline) "
                      "VALUES (%s, %s, %s)",
                      [(f"run-{i:05}", d.time(at(i / 1000)),
                        d.time(at(i / 1000 + 1)) if i % 2 else None) for i in range(10_000)])
        c.execute("ANALYZE signoff_queue_running")
    with view.read() as c:
        recording = _Recording(c)
        assert sweeps.stale(recording, at(0.01), at(0.005), 3) == [  # type: ignore[arg-type]
            "run-00000", "run-00002", "run-00004"]
        [(statement, params)] = recording.statements
        if c.dialect.name == "postgres":
            plan = "\n".join(str(next(iter(r.values()))) for r in c.execute(
                "EXPLAIN " + statement, params).fetchall())
        else:
            plan = "\n".join(r["detail"] for r in c.execute(
                "EXPLAIN QUERY PLAN " + statement, params).fetchall())
    assert "signoff_queue_running_deadline" in plan, plan
    assert "signoff_queue_running_idle" in plan, plan
    for scan in ("Seq Scan on signoff_queue_running", "Bitmap Heap Scan on signoff_queue_running"):
        assert scan not in plan, plan  # PostgreSQL
    assert "SCAN signoff_queue_running\n" not in plan + "\n", plan  # SQLite
