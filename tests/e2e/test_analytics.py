"""Analytics over HTTP, on a real ``signoff serve`` over SQLite and PostgreSQL:
``GET /analytics/decisions`` (per tool, agent, reviewer, day or several; on the clock of
requests or of decisions; days in a time zone) and ``GET /analytics/queue`` (the age of
what waits), and the SQL of docs/analytics.md run on the server's own database, which
gives exactly the figures the API answers.

One server per store serves the module. Each test starts its runs for its own user and
reviewers and reads a window that starts with the test (or the whole store, where it
compares the API with the SQL). Runs are driven by the offline model
(docs/offline-model.md); the actor of a decision is the ``user_id`` of the continue
request.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from projections.sql import Cursor, Dialect
from tests.e2e.flows import Json, assert_problem, continue_, decided, start
from tests.e2e.test_review_api import (
    EXTERNAL,
    INPUT,
    NOTIFY,
    SEED,
    audit,
    get_json,
    now,
    ts,
    wait_caught_up,
)
from tests.projections.analytics_sql import by_group, decisions_from_sql, queue_from_sql
from tests.support.server import LiveServer, live_server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           ) -> Iterator[LiveServer]:
    """``signoff serve`` over a fresh store (SQLite and PostgreSQL), shared by the module."""
    tmp = tmp_path_factory.mktemp(f"analytics-{request.param}")
    db = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'signoff.db'}"
    else:
        db = request.getfixturevalue("pg_server").create_database(
            f"analytics_{uuid.uuid4().hex[:12]}")
        url = db.url
    try:
        with live_server(url, Path(tmp / "server.log")) as s:
            yield s
    finally:
        if db is not None:
            db.drop_database()


@contextlib.contextmanager
def database(server: LiveServer) -> Iterator[Cursor]:
    """A cursor on the server's own database, as an analyst would open one."""
    url = server.database_url
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        conn.row_factory = sqlite3.Row
        try:
            yield Cursor(conn.cursor(), Dialect("sqlite"))
        finally:
            conn.close()
        return
    with psycopg.connect(url, row_factory=dict_row) as pg:
        yield Cursor(pg.cursor(), Dialect("postgres"))


def analytics(c: httpx.Client, group_by: str, **params: Any) -> dict[Any, Json]:
    body = get_json(c, "/analytics/decisions", group_by=group_by, **params)
    assert body["group_by"] == group_by
    groups = {g["group"] if isinstance(g["group"], str) else tuple(g["group"]): g
              for g in body["groups"]}
    assert len(groups) == len(body["groups"])
    return groups


def _nearest_rank(values: list[float], p: int) -> float | None:
    values = sorted(values)
    return values[max(1, math.ceil(p * len(values) / 100)) - 1] if values else None


def test_analytics(server: LiveServer) -> None:
    with server.client() as c:
        wait_caught_up(c)
        began = now()
        user = "an-user"
        # delete_records: confirmed (an-a), confirmed with edits (an-b), rejected (an-a),
        # one still waiting, one cancelled (an-c); send_notification: rejected (an-b);
        # check_payment: external result (an-a); issue_refund: user input (an-b).
        for actor, decision in (("an-a", {"confirmed": True}), ("an-b", {
                "confirmed": True, "tool_args": {"table_name": "users", "count": 1}}),
                                ("an-a", {"confirmed": False})):
            run = start(c, "data_manager", SEED, user_id=user)
            continue_(c, run, [decided(run["tools"][0], **decision)], user_id=actor)
        waiting = start(c, "data_manager", SEED, user_id=user)
        cancelled = start(c, "data_manager", SEED, user_id=user)
        c.post(f"/runs/{cancelled['run_id']}/cancel", json={"actor": "an-c"})
        run = start(c, "data_manager", NOTIFY, user_id=user)
        continue_(c, run, [decided(run["tools"][0], confirmed=False)], user_id="an-b")
        run = start(c, "support_desk", EXTERNAL, user_id=user)
        continue_(c, run, [decided(run["tools"][0], result="paid")], user_id="an-a")
        run = start(c, "support_desk", INPUT, user_id=user)
        schema = [{**f, "value": "x@example.com"} for f in run["tools"][0]["user_input_schema"]]
        continue_(c, run, [decided(run["tools"][0], user_input_schema=schema)],
                  user_id="an-b")
        wait_caught_up(c)
        window = {"since": began.isoformat()}
        rows = audit(c, limit=1000, **window)["items"]
        assert len(rows) == 7

        def counts(group: Json) -> tuple[Any, ...]:
            return tuple(group[k] for k in ("requested", "confirmed", "rejected",
                                            "external_result", "user_input", "expired",
                                            "cancelled", "approval_rate"))

        def times(group: Json, key: str) -> None:
            """Percentiles (nearest rank) of the group's decisions, cancels left out."""
            ms = [r["time_to_decision_ms"] for r in rows
                  if r[key] == group["group"] and r["decision"] != "cancelled"]
            got = [group[f"time_to_decision_p{p}_ms"] for p in (50, 90, 99)]
            if not ms:
                assert got == [None, None, None]
                return
            assert got == pytest.approx([_nearest_rank(ms, p) for p in (50, 90, 99)])
            assert got[0] <= got[1] <= got[2]
            assert min(ms) <= got[0] and got[2] <= max(ms)

        by_tool = analytics(c, "tool", **window)
        assert list(by_tool) == sorted(by_tool)
        assert {k: counts(g) for k, g in by_tool.items()} == {
            "delete_records": (5, 2, 1, 0, 0, 0, 1, pytest.approx(2 / 3)),
            "send_notification": (1, 0, 1, 0, 0, 0, 0, 0.0),
            "check_payment": (1, 0, 0, 1, 0, 0, 0, None),
            "issue_refund": (1, 0, 0, 0, 1, 0, 0, None)}
        assert by_tool["check_payment"]["acceptance"]["external_execution"] == {
            "accepted": 1, "rejected": 0, "rate": 1.0}
        assert by_tool["issue_refund"]["acceptance"]["user_input"] == {
            "accepted": 1, "rejected": 0, "rate": 1.0}
        for g in by_tool.values():
            times(g, "tool_name")

        by_agent = analytics(c, "agent", **window)
        assert {k: counts(g) for k, g in by_agent.items()} == {
            "data_manager": (6, 2, 2, 0, 0, 0, 1, 0.5),
            "support_desk": (2, 0, 0, 1, 1, 0, 0, None)}
        for g in by_agent.values():
            times(g, "agent_id")

        by_actor = analytics(c, "actor", **window)
        assert {k: counts(g) for k, g in by_actor.items()} == {
            "an-a": (None, 1, 1, 1, 0, 0, 0, 0.5),
            "an-b": (None, 1, 1, 0, 1, 0, 0, 0.5),
            "an-c": (None, 0, 0, 0, 0, 0, 1, None)}
        for g in by_actor.values():
            times(g, "actor")

        # Reviewer by tool.
        by_actor_tool = analytics(c, "actor,tool", **window)
        assert {k: (g["confirmed"], g["rejected"]) for k, g in by_actor_tool.items()} == {
            ("an-a", "delete_records"): (1, 1), ("an-a", "check_payment"): (0, 0),
            ("an-b", "delete_records"): (1, 0), ("an-b", "send_notification"): (0, 1),
            ("an-b", "issue_refund"): (0, 0), ("an-c", "delete_records"): (0, 0)}

        by_day = analytics(c, "day", **window)  # one day, unless the test spans midnight
        assert {ts(r["decided_at"]).astimezone(UTC).date().isoformat() for r in rows} <= set(
            by_day) <= {began.date().isoformat(), now().date().isoformat()}
        total = {k: sum(g[k] for g in by_day.values()) for k in (
            "requested", "confirmed", "rejected", "external_result", "user_input",
            "expired", "cancelled")}
        assert total == {"requested": 8, "confirmed": 2, "rejected": 2, "external_result": 1,
                         "user_input": 1, "expired": 0, "cancelled": 1}

        # On the clock of decisions, a window counts the decisions made in it (since
        # inclusive, until exclusive), and no requests.
        cut = rows[3]  # the cancel: decisions before it are the three delete_records ones
        early = analytics(c, "actor", by="decided", since=began.isoformat(),
                          until=cut["decided_at"])
        assert {k: (g["confirmed"], g["rejected"]) for k, g in early.items()} == {
            "an-a": (1, 1), "an-b": (1, 0)}
        late = analytics(c, "tool", by="decided", since=cut["decided_at"])
        assert {k: counts(g)[1:7] for k, g in late.items()} == {
            "delete_records": (0, 0, 0, 0, 0, 1),
            "send_notification": (0, 1, 0, 0, 0, 0),
            "check_payment": (0, 0, 1, 0, 0, 0),
            "issue_refund": (0, 0, 0, 1, 0, 0)}
        assert {g["requested"] for g in late.values()} == {None}
        assert analytics(c, "tool", since=now().isoformat()) == {}
        body = get_json(c, "/analytics/decisions", group_by="tool", since=began.isoformat())
        assert ts(body["since"]) == began and body["until"] is None
        assert (body["by"], body["tz"], body["complete"]) == ("requested", "UTC", True)

        c.post(f"/runs/{waiting['run_id']}/cancel")


def test_a_window_without_a_zone_is_in_the_time_zone(server: LiveServer) -> None:
    """``since`` without a zone is read in ``tz`` (UTC by default), and echoed with it."""
    with server.client() as c:
        paris = get_json(c, "/analytics/decisions", tz="Europe/Paris",
                         since="2030-03-11T00:00:00")
        assert ts(paris["since"]) == datetime(2030, 3, 10, 23, 0, tzinfo=UTC)
        utc = get_json(c, "/analytics/decisions", since="2030-03-11T00:00:00")
        assert ts(utc["since"]) == datetime(2030, 3, 11, tzinfo=UTC)


@pytest.mark.parametrize("params", [
    {"group_by": "week"}, {"group_by": "tool,tool"}, {"group_by": "tool,"},
    {"group_by": "kind"}, {"by": "asked"}, {"tz": "Mars/Olympus"}, {"tz": "../etc"},
    {"tz": ""}, {"tz": "zone.tab"}])
def test_bad_parameters_are_a_422(server: LiveServer, params: dict[str, str]) -> None:
    with server.client() as c:
        assert_problem(c.get("/analytics/decisions", params=params), 422)


@pytest.mark.parametrize("group_by", ["actor", "day", "tool,tool"])
def test_bad_queue_groupings_are_a_422(server: LiveServer, group_by: str) -> None:
    with server.client() as c:
        assert_problem(c.get("/analytics/queue", params={"group_by": group_by}), 422)


def test_the_age_of_what_waits(server: LiveServer) -> None:
    """Two deletions and a notification wait: per tool, how many, since when the oldest
    waits (as ``GET /queue`` shows it), and ages measured at the answer's ``at``."""
    with server.client() as c:
        user = f"age-{uuid.uuid4().hex[:8]}"
        runs = [start(c, "data_manager", text, user_id=user) for text in (SEED, NOTIFY, SEED)]
        wait_caught_up(c)
        asked = {(w["tool_name"], w["requested_at"]) for item in get_json(
            c, "/queue", user_id=user, limit=10)["items"] for w in item["waiting_for"]}
        body = get_json(c, "/analytics/queue", group_by="tool,group")
        at = ts(body["at"])
        groups = {tuple(g["group"]): g for g in body["groups"]}
        for tool, requested_at in asked:
            g = groups[(tool, None)]
            assert ts(g["oldest_requested_at"]) <= ts(requested_at)
            assert g["age_oldest_ms"] >= (at - ts(requested_at)) / timedelta(milliseconds=1)
            assert g["age_p50_ms"] <= g["age_p90_ms"] <= g["age_oldest_ms"]
        assert groups[("delete_records", None)]["waiting"] >= 2
        assert body["complete"] is True and at <= now()
        for run in runs:
            c.post(f"/runs/{run['run_id']}/cancel")


def test_the_docs_sql_gives_the_apis_figures(server: LiveServer) -> None:
    """On the whole store the server holds (every test's runs), the docs' SQL run on the
    server's database answers what the API answers: every grouping, both clocks, a
    window, days in other zones (PostgreSQL: SQLite's days are UTC's), and the queue."""
    with server.client() as c:
        began = now()
        waiting = [start(c, "data_manager", SEED, user_id="sql-user") for _ in range(2)]
        run = start(c, "support_desk", EXTERNAL, user_id="sql-user")
        continue_(c, run, [decided(run["tools"][0], confirmed=False)], user_id="sql-b")
        wait_caught_up(c)
        with database(server) as db:
            zones = ["UTC", "Asia/Kathmandu"] if db.dialect.name == "postgres" else ["UTC"]
            for group_by in ("tool", "agent", "actor", "day", "actor,tool", "tool,day"):
                for by in ("requested", "decided"):
                    for tz in zones:
                        for window in ({}, {"since": began}):
                            body = get_json(c, "/analytics/decisions", group_by=group_by,
                                            by=by, tz=tz, **{k: v.isoformat() for k, v
                                                             in window.items()})
                            assert by_group(body["groups"]) == decisions_from_sql(
                                db, group_by, by=by, tz=tz, **window), (group_by, by, tz)
            for group_by in ("tool", "agent", "kind", "group", "tool,group"):
                body = get_json(c, "/analytics/queue", group_by=group_by)
                api = {k: {**g, "oldest_requested_at": ts(g["oldest_requested_at"])}
                       for k, g in by_group(body["groups"]).items()}
                assert api == queue_from_sql(db, group_by, ts(body["at"])), group_by
        for run in waiting:
            c.post(f"/runs/{run['run_id']}/cancel")
