"""Analytics an analyst can trust, on SQLite and PostgreSQL (issue 16, point 8).

Each misleading figure first, as the issue found it, then the rest of what the analytics
declare (docs/analytics.md): external results and user input have acceptance rates of
their own, and no approval rate; a reviewer's rates count acceptances and rejections of
the same kinds; one clock places a window's requests and decisions alike; days are in a
time zone; reviewer by tool; the age of what waits in the queue; the median leaves
cancellations out. Then, over random scenarios, the docs' SQL gives exactly the figures
the analytics give.

Runs are driven through the run lifecycle and the real loop (offline model), on a fake
clock shared with the events' timestamps (``tests/projections/scenario.py``).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.run import Run
from domain.values import Decision, DecisionKind
from projections import analytics, audit, queue
from projections.runner import Projections
from service.config import Settings, eventsourcing_env
from service.runs import RunService
from tests.projections.analytics_sql import (
    QUERIES,
    block_titles,
    by_group,
    decisions_from_sql,
    grouped,
    query,
    queue_from_sql,
)
from tests.projections.scenario import (
    TOOL_TIMEOUT,
    Driver,
    FakeClock,
    SimulatedCrash,
    fake_time,
    new_loop,
)
from tests.support.postgres import PgServer

T0 = datetime(2030, 3, 10, 10, 0, tzinfo=UTC)
CONFIRMED, REJECTED = DecisionKind.CONFIRMED, DecisionKind.REJECTED


@dataclass
class World:
    """A store, its projections and the scenarios' agents on one fake clock."""

    app: RunService
    projections: Projections
    clock: FakeClock
    loop: Any

    def start(self, agent: str, tool: str, **args: Any) -> Run:
        started: list[Run] = []
        with contextlib.suppress(SimulatedCrash):
            self.loop.start(agent, f"call {tool} {json.dumps(args)}", user_id="u",
                            observer=lambda run, _events: started.append(run))
        return self.app.get_run(started[0].id)

    def decide(self, run: Run, kind: DecisionKind, actor: str, **what: Any) -> None:
        [call] = self.app.get_run(run.id).pending_calls()
        with contextlib.suppress(SimulatedCrash):
            self.loop.decide(run.id, [Decision(call.tool_call_id, kind, **what)],
                             actor=actor, drive=True)

    def analytics(self, group_by: str, **kw: Any) -> dict[str, dict[str, Any]]:
        self.projections.catch_up_all()
        with self.projections.views[audit.AuditProjection.name].read() as c:
            return by_group(analytics.analytics(c, group_by, **kw))

    def queue_age(self, group_by: str) -> dict[str, dict[str, Any]]:
        self.projections.catch_up_all()
        with self.projections.views[queue.QueueProjection.name].read() as c:
            return by_group(analytics.queue_age(c, group_by, at=self.clock.now()))

    def sql(self, group_by: str, **kw: Any) -> dict[str, dict[str, Any]]:
        with self.projections.views[audit.AuditProjection.name].read() as c:
            return decisions_from_sql(c, group_by, **kw)


@pytest.fixture
def world(env: dict[str, str]) -> Iterator[World]:
    clock = FakeClock(T0)
    app = RunService(env=env)
    loop = new_loop(app, clock)
    projections = Projections(app, env)
    try:
        with fake_time(clock):
            yield World(app, projections, clock, loop)
    finally:
        loop.close()
        projections.close()
        app.close()


def acceptance(group: dict[str, Any]) -> dict[str, tuple[int, int, float | None]]:
    return {k: (v["accepted"], v["rejected"], v["rate"])
            for k, v in group["acceptance"].items()}


# ------------------------------------------------------------- the kinds

def test_external_results_and_user_input_have_their_own_rates(world: World) -> None:
    """The issue: 409 results and 135 rejections gave an approval rate of 0.0. Each kind
    of call now has its own acceptance; the approval rate is the confirmations'."""
    for actor, kind, what in (("ann", DecisionKind.EXTERNAL_RESULT, {"result": "paid"}),
                              ("ann", DecisionKind.EXTERNAL_RESULT, {"result": "unpaid"}),
                              ("bo", REJECTED, {"note": "not ours"})):
        world.decide(world.start("support_desk", "check_payment", order_id="o-1"), kind,
                     actor, **what)
    for actor, kind, what in (("ann", DecisionKind.USER_INPUT,
                               {"values": {"email": "x@example.com"}}),
                              ("ann", REJECTED, {})):
        world.decide(world.start("support_desk", "issue_refund", order_id="o-2",
                                 amount=5.0), kind, actor, **what)
    for actor, kind in (("bo", CONFIRMED), ("ann", REJECTED)):
        world.decide(world.start("data_manager", "delete_records", table_name="logs",
                                 count=1), kind, actor)

    by_tool = world.analytics("tool")
    payments = by_tool["check_payment"]
    assert (payments["external_result"], payments["rejected"]) == (2, 1)
    assert payments["approval_rate"] is None  # was 0.0: no confirmation was asked
    assert acceptance(payments) == {"confirmation": (0, 0, None),
                                    "external_execution": (2, 1, 2 / 3),
                                    "user_input": (0, 0, None)}
    assert by_tool["issue_refund"]["approval_rate"] is None
    assert acceptance(by_tool["issue_refund"])["user_input"] == (1, 1, 0.5)
    assert by_tool["delete_records"]["approval_rate"] == 0.5
    assert acceptance(by_tool["delete_records"])["confirmation"] == (1, 1, 0.5)

    # A reviewer's rates count the acceptances and the rejections of the same kinds: bo
    # confirmed the one confirmation he was asked (his rejection was of a payment check).
    by_actor = world.analytics("actor")
    assert by_actor["bo"]["approval_rate"] == 1.0  # was 0.5
    assert acceptance(by_actor["bo"]) == {"confirmation": (1, 0, 1.0),
                                          "external_execution": (0, 1, 0.0),
                                          "user_input": (0, 0, None)}
    assert acceptance(by_actor["ann"]) == {"confirmation": (0, 1, 0.0),
                                           "external_execution": (2, 0, 1.0),
                                           "user_input": (1, 1, 0.5)}
    assert world.sql("tool") == by_tool and world.sql("actor") == by_actor


def test_a_call_that_went_in_doubt_is_in_no_rate(world: World) -> None:
    """Confirmed, crashed while running, in doubt after recovery, then rejected: the
    trail holds that the call waits for ``in_doubt``, not that it once waited for a
    confirmation, so neither decision is in a rate (both are still counted)."""
    wire = world.start("crashing", "wire_funds", account="a", crash=True)
    world.decide(wire, CONFIRMED, "ann")  # the process dies while the tool runs
    world.clock.tick(timedelta(seconds=TOOL_TIMEOUT + 1))
    world.loop.settle(wire.id)
    world.decide(wire, REJECTED, "bo")
    [group] = world.analytics("tool").values()
    assert (group["confirmed"], group["rejected"], group["approval_rate"]) == (1, 1, None)
    assert set(acceptance(group).values()) == {(0, 0, None)}
    assert world.sql("tool") == world.analytics("tool")


# ------------------------------------------------------------- the clock

def test_one_clock_places_a_windows_requests_and_decisions(world: World) -> None:
    """The issue: a window showed 0 requested beside 1,101 decisions (requests on the
    clock of requests, decisions on the clock of decisions). Asked on the 10th, decided
    on the 11th: on the clock of requests, a window on the 11th holds neither; on the
    clock of decisions, it holds the decision, and no count of requests."""
    run_ = world.start("data_manager", "delete_records", table_name="logs", count=1)
    world.clock.tick(timedelta(days=1))
    world.decide(run_, CONFIRMED, "ann")
    eleventh = {"since": datetime(2030, 3, 11, tzinfo=UTC)}

    # Requested clock: the call was asked before the window: nothing in it.
    assert world.analytics("tool", by="requested", **eleventh) == {}
    # Decided clock: the decision is in it; requests have no decision time: null.
    [group] = world.analytics("tool", by="decided", **eleventh).values()
    assert (group["requested"], group["confirmed"]) == (None, 1)

    # Days too: the call's day, or the decision's.
    [(day, group)] = world.analytics("day", by="requested").items()
    assert (day, group["requested"], group["confirmed"]) == ("2030-03-10", 1, 1)
    [(day, group)] = world.analytics("day", by="decided").items()
    assert (day, group["requested"], group["confirmed"]) == ("2030-03-11", None, 1)
    for by in analytics.CLOCKS:
        assert world.sql("day", by=by, **eleventh) == world.analytics("day", by=by,
                                                                      **eleventh)


def test_days_are_dates_in_a_time_zone(world: World) -> None:
    """Asked at 22:30 UTC, decided at 23:30 UTC: the decision is on the 10th in UTC and
    in New York, on the 11th in Paris and on Kiritimati (UTC+14); the request is on the
    10th but on Kiritimati."""
    world.clock.t = datetime(2030, 3, 10, 22, 30, tzinfo=UTC)
    run_ = world.start("data_manager", "delete_records", table_name="logs", count=1)
    world.clock.tick(timedelta(hours=1))
    world.decide(run_, CONFIRMED, "ann")
    for tz, day in (("UTC", "2030-03-10"), ("America/New_York", "2030-03-10"),
                    ("Europe/Paris", "2030-03-11"), ("Pacific/Kiritimati", "2030-03-11")):
        assert list(world.analytics("day", by="decided", tz=ZoneInfo(tz))) == [day], tz
        assert list(world.analytics("day", by="requested", tz=ZoneInfo(tz))) == [
            "2030-03-11" if tz == "Pacific/Kiritimati" else "2030-03-10"], tz


# ------------------------------------------------------------- the groups

def test_reviewer_by_tool(world: World) -> None:
    for tool, actor, kind in (("delete_records", "ann", CONFIRMED),
                              ("send_notification", "ann", REJECTED),
                              ("send_notification", "bo", CONFIRMED)):
        args = ({"table_name": "logs", "count": 1} if tool == "delete_records"
                else {"recipient": "ops", "message": "hi"})
        world.decide(world.start("data_manager", tool, **args), kind, actor)
    world.projections.catch_up_all()
    with world.projections.views[audit.AuditProjection.name].read() as c:
        groups = analytics.analytics(c, "actor,tool")
    assert [(g["group"], g["requested"], g["confirmed"], g["rejected"]) for g in groups] == [
        (["ann", "delete_records"], None, 1, 0), (["ann", "send_notification"], None, 0, 1),
        (["bo", "send_notification"], None, 1, 0)]
    assert world.sql("actor,tool") == world.analytics("actor,tool")
    with pytest.raises(ValueError, match="distinct keys"):
        world.analytics("tool,tool")
    with pytest.raises(ValueError, match="distinct keys"):
        world.analytics("week")


def test_the_median_leaves_cancellations_out_and_the_docs_sql_agrees(world: World) -> None:
    """The issue: the docs' median counted cancellations, the API's did not. Decided
    after 1 s and 2 s, and one call cancelled after an hour: the median is 1 s."""
    for wait, kind in ((1, CONFIRMED), (2, REJECTED)):
        run_ = world.start("data_manager", "delete_records", table_name="logs", count=1)
        world.clock.tick(timedelta(seconds=wait))
        world.decide(run_, kind, "ann")
    waiting = world.start("data_manager", "delete_records", table_name="logs", count=1)
    world.clock.tick(timedelta(hours=1))
    world.loop.cancel(waiting.id, actor="bo", reason="stale")
    [group] = world.analytics("tool").values()
    assert group["cancelled"] == 1
    assert (group["time_to_decision_p50_ms"], group["time_to_decision_p99_ms"]) == (1000.0,
                                                                                    2000.0)
    assert world.sql("tool") == world.analytics("tool")


# ------------------------------------------------------------- the queue

def test_the_age_of_what_waits_per_tool_and_group(world: World) -> None:
    """A purge asked at 10:00 goes to the leads at 11:01; deletions asked at 10:10 and
    10:20 wait for anyone. At 11:01: per tool and per group, how many wait, the oldest,
    and the ages (nearest rank: of two ages, the p50 is the younger)."""
    purge = world.start("policed", "purge", bucket="b")
    for _ in range(2):
        world.clock.tick(timedelta(minutes=10))
        world.start("data_manager", "delete_records", table_name="logs", count=1)
    world.clock.t = T0 + timedelta(minutes=61)
    world.loop.expire(purge.id)  # escalated to the leads: it waits on
    minute = 60_000.0
    by_tool = world.queue_age("tool")
    assert by_tool == {
        "delete_records": {"waiting": 2, "oldest_requested_at": T0 + timedelta(minutes=10),
                           "age_oldest_ms": 51 * minute, "age_p50_ms": 41 * minute,
                           "age_p90_ms": 51 * minute},
        "purge": {"waiting": 1, "oldest_requested_at": T0, "age_oldest_ms": 61 * minute,
                  "age_p50_ms": 61 * minute, "age_p90_ms": 61 * minute}}
    groups = world.queue_age("group")
    assert list(groups) == ["leads", "-"]  # not escalated: null, last
    assert (groups["leads"]["waiting"], groups["-"]["waiting"]) == (1, 2)
    with world.projections.views[queue.QueueProjection.name].read() as c:
        for group_by in ("tool", "group", "tool,group", "kind,agent"):
            assert queue_from_sql(c, group_by, world.clock.now()) == world.queue_age(
                group_by), group_by
        # A fraction of a second that SQLite's time functions (milliseconds) would
        # round up into the next second.
        for fraction in (999_989, 999_500, 500):
            at = world.clock.now() + timedelta(microseconds=fraction)
            assert queue_from_sql(c, "tool", at) == by_group(
                analytics.queue_age(c, "tool", at=at)), fraction


# ------------------------------------------------- the docs' SQL, everywhere

def check_docs_sql(data: Any, env: dict[str, str]) -> None:
    """A random scenario; then every grouping, both clocks, with and without a window,
    days in UTC (and in other zones on PostgreSQL): the docs' SQL gives the analytics'
    figures exactly; the queue's too, at a drawn time."""
    clock = FakeClock()
    app = RunService(env=env)
    loop = new_loop(app, clock)
    projections = Projections(app, env)
    try:
        with fake_time(clock):
            Driver(data, loop, clock, projections).run()
        projections.catch_up_all()
        view = projections.views[audit.AuditProjection.name]
        with view.read() as c:
            rows = c.execute("SELECT requested_at, decided_at FROM signoff_decisions"
                             ).fetchall()
            dialect = c.dialect
        times = sorted({dialect.from_time(r[k]) for r in rows for k in r} | {clock.now()})
        since = data.draw(st.sampled_from(times), "since")
        until = data.draw(st.sampled_from([t for t in times if t >= since]), "until")
        zones = ["UTC", "Pacific/Kiritimati", "America/St_Johns"] if (
            dialect.name == "postgres") else ["UTC"]
        tz = data.draw(st.sampled_from(zones), "tz")
        for group_by in ("tool", "agent", "actor", "day", "actor,tool", "tool,day"):
            for by in analytics.CLOCKS:
                for window in ({}, {"since": since}, {"since": since, "until": until}):
                    with view.read() as c:
                        api = by_group(analytics.analytics(c, group_by, by=by,
                                                           tz=ZoneInfo(tz), **window))
                        sql = decisions_from_sql(c, group_by, by=by, tz=tz, **window)
                    assert api == sql, (group_by, by, tz, window)
        at = data.draw(st.sampled_from(times), "at")
        with projections.views[queue.QueueProjection.name].read() as c:
            for group_by in ("tool", "agent", "kind", "group", "tool,group"):
                assert by_group(analytics.queue_age(c, group_by, at=at)) == queue_from_sql(
                    c, group_by, at), group_by
    finally:
        loop.close()
        projections.close()
        app.close()


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_the_docs_sql_gives_the_analytics_figures_sqlite(data: Any) -> None:
    with tempfile.TemporaryDirectory(prefix="signoff-analytics-") as tmp:
        check_docs_sql(data, eventsourcing_env(Settings(
            database_url=f"sqlite:///{Path(tmp) / 'analytics.db'}")))


@pytest.mark.postgres
def test_the_docs_sql_gives_the_analytics_figures_postgres(pg_database: PgServer) -> None:
    env = eventsourcing_env(Settings(database_url=pg_database.url, postgres_pool_size=2))

    @settings(max_examples=5, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=st.data())
    def examples(data: Any) -> None:
        with psycopg.connect(pg_database.url, autocommit=True) as conn:  # a clean database
            conn.execute("DROP SCHEMA public CASCADE")
            conn.execute("CREATE SCHEMA public")
        check_docs_sql(data, env)

    examples()


def test_every_query_of_the_docs_is_one_the_tests_run() -> None:
    """No SQL block of docs/analytics.md is left unchecked, and each groups by tool as
    it says (the edits the docs describe start from that)."""
    assert sorted(block_titles()) == sorted(QUERIES)
    for title in QUERIES:
        assert grouped(query(title), ["tool"], "sqlite") == query(title)
