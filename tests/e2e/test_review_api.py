"""The read models for reviewers and auditors, end to end over HTTP.

``GET /queue`` (paused runs and the calls they wait for), ``GET /audit/decisions`` (the
decision audit trail, paged or exported as CSV / JSON Lines), ``GET /analytics/decisions``
(as a story counts; the analytics' own tests are in test_analytics.py) and
``GET /projections``, on a real ``signoff serve`` over SQLite and PostgreSQL.

Projections are eventually consistent: after each write a test polls ``/projections``
until every lag is 0 (``wait_caught_up``) before it reads a read model.

One server per store serves the whole module (``server`` below, module-scoped). Tests do
not interfere: each one starts its runs for its own users and reviewers and reads through
those filters; analytics, which has no user filter, reads a time window that starts with
the test. Runs are driven by the offline model (docs/offline-model.md); the actor of a
decision is the ``user_id`` of the continue request, its reason the ``confirmation_note``.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from projections.runner import projection_names
from tests.e2e.flows import (
    Json,
    assert_problem,
    continue_,
    decided,
    events,
    start,
)
from tests.support.server import LiveServer, live_server

pytestmark = pytest.mark.e2e

WAIT_S = 10.0
SEED = "Delete 50 old records from the users table"  # delete_records(users, 50)
TWO = ('call delete_records {"table_name": "logs", "count": 3}\n'
       'call send_notification {"recipient": "ops", "message": "bye"}')
NOTIFY = 'call send_notification {"recipient": "ops", "message": "hi"}'
EXTERNAL = "check payment for order 77"  # support_desk: external execution
INPUT = "Issue a refund of 30 for order A17"  # support_desk: user input (email)
AUTO = 'call lookup_order {"order_id": "5"}'  # support_desk: runs at once, no pause
TRANSFER = 'call transfer_money {"account": "acme", "amount": 5}'  # ops: confirmation


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           ) -> Iterator[LiveServer]:
    """``signoff serve`` over a fresh store (SQLite and PostgreSQL), shared by the module."""
    tmp = tmp_path_factory.mktemp(f"review-{request.param}")
    db = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'signoff.db'}"
    else:
        db = request.getfixturevalue("pg_server").create_database(
            f"review_{uuid.uuid4().hex[:12]}")
        url = db.url
    try:
        with live_server(url, Path(tmp / "server.log")) as s:
            yield s
    finally:
        if db is not None:
            db.drop_database()


# ------------------------------------------------------------------ helpers

def wait_caught_up(c: httpx.Client, timeout: float = WAIT_S) -> list[Json]:
    """Poll ``/projections`` until every projection has applied the whole log."""
    deadline = time.monotonic() + timeout
    while True:
        r = c.get("/projections")
        assert r.status_code == 200, r.text
        status: list[Json] = r.json()
        if status and all(p["lag"] == 0 for p in status):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"projections still lag after {timeout} s: {status}")
        time.sleep(0.02)


def get_json(c: httpx.Client, path: str, **params: Any) -> Json:
    r = c.get(path, params={k: v for k, v in params.items() if v is not None})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    body: Json = r.json()
    return body


def queue(c: httpx.Client, **params: Any) -> Json:
    return get_json(c, "/queue", **params)


def audit(c: httpx.Client, **params: Any) -> Json:
    return get_json(c, "/audit/decisions", **params)


def analytics(c: httpx.Client, group_by: str, **params: Any) -> dict[Any, Json]:
    body = get_json(c, "/analytics/decisions", group_by=group_by, **params)
    assert body["group_by"] == group_by
    groups = {g["group"]: g for g in body["groups"]}
    assert len(groups) == len(body["groups"])
    return groups


def all_pages(c: httpx.Client, path: str, limit: int, **params: Any) -> list[Json]:
    """Follow ``next_cursor`` to the end; every page reports the same ``total``, and the
    pages hold ``total`` items between them (the tests' totals are far below the cap of
    filtered counts: always exact)."""
    items: list[Json] = []
    cursor = None
    totals = set()
    while True:
        page = get_json(c, path, limit=limit, cursor=cursor, **params)
        assert len(page["items"]) <= limit
        assert page["total_exact"] is True
        totals.add(page["total"])
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert page["items"], "a page with a next cursor is never empty"
    assert len(totals) == 1, totals
    assert len(items) == totals.pop()
    return items


def ts(value: str) -> datetime:
    t = datetime.fromisoformat(value)
    assert t.tzinfo is not None, value
    return t


def when(history: list[Json], event_type: str, **payload: Any) -> datetime:
    """The time of the one event of this type (whose payload has these values)."""
    [t] = [ts(e["timestamp"]) for e in history if e["type"] == event_type
           and all(e["payload"].get(k) == v for k, v in payload.items())]
    return t


def ids(items: list[Json], key: str = "run_id") -> list[str]:
    return [i[key] for i in items]


def now() -> datetime:
    return datetime.now(UTC)


# -------------------------------------------------------------- the story

def test_paused_run_is_queued_then_decided_audited_and_counted(server: LiveServer) -> None:
    with server.client() as c:
        began = now()
        run = start(c, "data_manager", SEED, user_id="story-user", session_id="story-session")
        assert run["status"] == "PAUSED"
        [tool] = run["tools"]
        wait_caught_up(c)

        # In the queue: the run, who started it, since when, and what it waits for.
        page = queue(c, user_id="story-user")
        assert (page["total"], page["next_cursor"]) == (1, None)
        [item] = page["items"]
        history = events(c, run["run_id"])
        assert {k: item[k] for k in ("run_id", "agent_id", "user_id", "session_id")} == {
            "run_id": run["run_id"], "agent_id": "data_manager", "user_id": "story-user",
            "session_id": "story-session"}
        assert ts(item["paused_since"]) == when(history, "RunPaused")
        assert ts(item["started_at"]) == when(history, "RunStarted")
        [waiting] = item["waiting_for"]
        requested_at = when(history, "ToolCallRequested")
        assert ts(waiting.pop("requested_at")) == requested_at
        assert waiting == {
            "tool_call_id": tool["tool_call_id"], "tool_name": "delete_records",
            "tool_args": {"table_name": "users", "count": 50}, "kind": "confirmation",
            "confirmation_message": None, "expires_at": None, "escalated_to": None}

        # A reviewer rejects it, with a reason.
        done = continue_(c, run, [decided(tool, confirmed=False,
                                          confirmation_note="too many rows")],
                         user_id="story-reviewer", session_id="story-session")
        assert done["status"] == "COMPLETED"
        status = wait_caught_up(c)

        # Out of the queue...
        assert queue(c, user_id="story-user") == {"items": [], "total": 0,
                                                   "total_exact": True, "next_cursor": None,
                                                   "complete": True}
        # ...into the audit trail, with the reviewer's identity and reason...
        page = audit(c, run_id=run["run_id"])
        assert (page["total"], page["next_cursor"]) == (1, None)
        [row] = page["items"]
        history = events(c, run["run_id"])
        decided_at = when(history, "ToolRejected")
        assert ts(row.pop("requested_at")) == requested_at
        assert ts(row.pop("decided_at")) == decided_at
        ms = row.pop("time_to_decision_ms")
        assert ms == pytest.approx((decided_at - requested_at) / timedelta(milliseconds=1),
                                   abs=0.01)
        position = row.pop("position")
        assert 1 <= position <= status[0]["head"]
        assert row == {
            "run_id": run["run_id"], "tool_call_id": tool["tool_call_id"],
            "agent_id": "data_manager", "user_id": "story-user",
            "session_id": "story-session", "tool_name": "delete_records",
            "args_requested": {"table_name": "users", "count": 50}, "args_approved": None,
            "decision": "rejected", "actor": "story-reviewer", "note": "too many rows",
            "details": None}

        # ...and counted by the analytics.
        [group] = analytics(c, "actor", since=began.isoformat()).values()
        assert group["group"] == "story-reviewer"
        assert (group["rejected"], group["confirmed"], group["approval_rate"]) == (1, 0, 0.0)
        assert group["time_to_decision_p50_ms"] == pytest.approx(ms)
        by_tool = analytics(c, "tool", since=began.isoformat())
        assert list(by_tool) == ["delete_records"]
        assert (by_tool["delete_records"]["requested"],
                by_tool["delete_records"]["rejected"]) == (1, 1)


# ------------------------------------------------------------------ queue

def test_a_run_leaves_the_queue_when_its_last_pending_call_is_decided(
        server: LiveServer) -> None:
    user = "two-user"
    with server.client() as c:
        run = start(c, "data_manager", TWO, user_id=user)
        delete, notify = run["tools"]
        wait_caught_up(c)
        [item] = queue(c, user_id=user)["items"]
        assert [(w["tool_call_id"], w["tool_name"], w["tool_args"]) for w in
                item["waiting_for"]] == [
            (delete["tool_call_id"], "delete_records", {"table_name": "logs", "count": 3}),
            (notify["tool_call_id"], "send_notification",
             {"recipient": "ops", "message": "bye"})]

        # One decided: still paused, waiting for the other only, paused since the same time.
        half = continue_(c, run, [decided(delete, confirmed=True), notify], user_id="two-rev")
        assert half["status"] == "PAUSED"
        wait_caught_up(c)
        page = queue(c, user_id=user)
        assert page["total"] == 1
        [still] = page["items"]
        assert still["paused_since"] == item["paused_since"]
        assert [w["tool_call_id"] for w in still["waiting_for"]] == [notify["tool_call_id"]]
        # The tool filter looks at the calls still waiting.
        assert queue(c, user_id=user, tool="delete_records")["total"] == 0
        assert queue(c, user_id=user, tool="send_notification")["total"] == 1

        # The last one decided: out of the queue.
        done = continue_(c, half, [decided(notify, confirmed=False, confirmation_note="no")],
                         user_id="two-rev")
        assert done["status"] == "COMPLETED"
        wait_caught_up(c)
        assert queue(c, user_id=user)["total"] == 0
        rows = audit(c, run_id=run["run_id"])["items"]
        assert [(r["tool_name"], r["decision"], r["actor"], r["note"]) for r in rows] == [
            ("delete_records", "confirmed", "two-rev", None),
            ("send_notification", "rejected", "two-rev", "no")]
        assert rows[0]["position"] < rows[1]["position"]


def test_cancel_removes_a_run_and_audits_its_undecided_calls(server: LiveServer) -> None:
    user = "cancel-user"
    with server.client() as c:
        # Two calls, one decided, then the run is cancelled by someone else, with a reason.
        run = start(c, "data_manager", TWO, user_id=user)
        delete, notify = run["tools"]
        continue_(c, run, [decided(delete, confirmed=True), notify], user_id="cancel-rev")
        r = c.post(f"/runs/{run['run_id']}/cancel",
                   json={"actor": "cancel-boss", "reason": "no longer needed"})
        assert r.status_code == 200, r.text
        # A second run cancelled with Agno's route, which names nobody: without
        # authentication the actor is "anonymous" (never the run's requester).
        other = start(c, "support_desk", EXTERNAL, user_id=user)
        r = c.post(f"/agents/support_desk/runs/{other['run_id']}/cancel")
        assert r.status_code == 200, r.text
        # A third, with two calls still undecided: both are cancelled at one position.
        both = start(c, "data_manager", TWO, user_id=user)
        r = c.post(f"/runs/{both['run_id']}/cancel", json={"actor": "cancel-boss"})
        assert r.status_code == 200, r.text
        wait_caught_up(c)

        assert queue(c, user_id=user) == {"items": [], "total": 0, "total_exact": True,
                                          "next_cursor": None, "complete": True}
        rows = audit(c, run_id=run["run_id"])["items"]
        assert [(r["tool_call_id"], r["decision"], r["actor"], r["note"]) for r in rows] == [
            (delete["tool_call_id"], "confirmed", "cancel-rev", None),
            (notify["tool_call_id"], "cancelled", "cancel-boss", "no longer needed")]
        history = events(c, run["run_id"])
        assert ts(rows[1]["decided_at"]) == when(history, "RunCancelled")
        [row] = audit(c, run_id=other["run_id"])["items"]
        assert (row["tool_name"], row["decision"], row["actor"], row["note"]) == (
            "check_payment", "cancelled", "anonymous", None)
        rows = audit(c, run_id=both["run_id"])["items"]
        assert sorted(r["tool_name"] for r in rows) == ["delete_records", "send_notification"]
        assert {(r["decision"], r["actor"]) for r in rows} == {("cancelled", "cancel-boss")}
        assert rows[0]["position"] == rows[1]["position"]
        assert ids(all_pages(c, "/audit/decisions", 1, actor="cancel-boss"), "tool_call_id") \
            == [notify["tool_call_id"], *ids(rows, "tool_call_id")]


def test_a_run_that_pauses_again_is_queued_again(server: LiveServer) -> None:
    """gatekeeper asks before the run starts (a confirm_run call with the agent's
    confirmation message), then pauses again on the call the model proposes."""
    user = "gate-user"
    message = 'call slow_delete {"table_name": "t1"}'
    with server.client() as c:
        run = start(c, "gatekeeper", message, user_id=user)
        [gate] = run["tools"]
        wait_caught_up(c)
        [item] = queue(c, user_id=user)["items"]
        [waiting] = item["waiting_for"]
        assert (waiting["tool_name"], waiting["kind"], waiting["confirmation_message"],
                waiting["tool_args"]) == ("confirm_run", "confirmation", "Start this run?",
                                       {"message": message})
        assert (ts(item["started_at"]) <= ts(waiting["requested_at"])
                <= ts(item["paused_since"]))

        again = continue_(c, run, [decided(gate, confirmed=True)], user_id="gate-rev")
        assert again["status"] == "PAUSED"
        wait_caught_up(c)
        [later] = queue(c, user_id=user)["items"]
        assert ts(later["paused_since"]) > ts(item["paused_since"])
        assert [(w["tool_name"], w["tool_args"], w["kind"]) for w in later["waiting_for"]] == [
            ("slow_delete", {"table_name": "t1"}, "confirmation")]
        [row] = audit(c, run_id=run["run_id"])["items"]
        assert (row["tool_name"], row["decision"], row["actor"]) == (
            "confirm_run", "confirmed", "gate-rev")
        assert c.post(f"/runs/{run['run_id']}/cancel").status_code == 200
        wait_caught_up(c)
        assert queue(c, user_id=user)["total"] == 0


def test_runs_that_ended_are_not_in_the_queue(server: LiveServer) -> None:
    user = "ended-user"
    with server.client() as c:
        auto = start(c, "support_desk", AUTO, user_id=user)  # needs no one
        assert auto["status"] == "COMPLETED"
        paused = start(c, "support_desk", EXTERNAL, user_id=user)
        [tool] = paused["tools"]
        done = continue_(c, paused, [decided(tool, result="paid")], user_id=user)
        assert done["status"] == "COMPLETED"
        waiting = start(c, "data_manager", SEED, user_id=user)
        wait_caught_up(c)
        page = queue(c, user_id=user)
        assert (ids(page["items"]), page["total"]) == ([waiting["run_id"]], 1)
        # A call that needed no decision leaves nothing in the audit trail.
        assert audit(c, run_id=auto["run_id"]) == {"items": [], "total": 0,
                                                    "total_exact": True, "next_cursor": None,
                                                   "complete": True}


def test_queue_filters(server: LiveServer) -> None:
    user, other = "filter-user", "filter-other"
    with server.client() as c:
        confirm = start(c, "data_manager", SEED, user_id=user)
        external = start(c, "support_desk", EXTERNAL, user_id=user)
        user_input = start(c, "support_desk", INPUT, user_id=user)
        ops = start(c, "ops", TRANSFER, user_id=other)
        ops_too = start(c, "ops", TRANSFER, user_id=user)
        wait_caught_up(c)

        def runs(**params: Any) -> list[str]:
            page = queue(c, **params)
            assert (page["total"], page["total_exact"]) == (len(page["items"]), True)
            return ids(page["items"])

        assert runs(user_id=user) == ids([confirm, external, user_input, ops_too])
        assert runs(user_id=user, agent_id="support_desk") == ids([external, user_input])
        assert runs(user_id=user, kind="confirmation") == ids([confirm, ops_too])
        assert runs(user_id=user, kind="external_execution") == ids([external])
        assert runs(user_id=user, kind="user_input") == ids([user_input])
        assert runs(user_id=user, kind="in_doubt") == []
        assert runs(user_id=user, tool="check_payment") == ids([external])
        assert runs(user_id=user, tool="issue_refund", kind="user_input") == ids([user_input])
        assert runs(user_id=user, tool="issue_refund", kind="confirmation") == []
        assert runs(user_id=user, tool="delete_records", agent_id="data_manager") == ids(
            [confirm])
        assert runs(agent_id="ops", user_id=other) == ids([ops])
        assert runs(agent_id="ops", tool="transfer_money", user_id=user) == ids([ops_too])
        assert runs(user_id="nobody") == []
        assert runs(user_id=user, agent_id="no_such_agent") == []

        # Each item says what kind of decision each call needs.
        items = {i["run_id"]: i for i in queue(c, user_id=user)["items"]}
        [w] = items[external["run_id"]]["waiting_for"]
        assert (w["tool_name"], w["tool_args"], w["kind"]) == (
            "check_payment", {"order_id": "77"}, "external_execution")
        [w] = items[user_input["run_id"]]["waiting_for"]
        assert (w["tool_name"], w["tool_args"], w["kind"]) == (
            "issue_refund", {"order_id": "A17", "amount": 30}, "user_input")

        assert_problem(c.get("/queue", params={"kind": "whatever"}), 422)
        assert_problem(c.get("/queue", params={"limit": 0}), 422)
        assert_problem(c.get("/queue", params={"limit": 501}), 422)

        for run in (confirm, external, user_input, ops, ops_too):  # leave the queue tidy
            assert c.post(f"/runs/{run['run_id']}/cancel").status_code == 200


def test_queue_is_oldest_first_and_pages_with_a_cursor(server: LiveServer) -> None:
    user = "paging-user"
    with server.client() as c:
        started = [start(c, "data_manager", f"Delete {n} old records from the users table",
                         user_id=user) for n in range(1, 6)]
        wait_caught_up(c)
        page = queue(c, user_id=user)
        assert ids(page["items"]) == ids(started)  # oldest first
        since = [ts(i["paused_since"]) for i in page["items"]]
        assert since == sorted(since)

        for limit in (1, 2, 3, 5, 6):
            items = all_pages(c, "/queue", limit, user_id=user)
            assert ids(items) == ids(started), limit

        # The whole queue (other tests' runs too): every paused run exactly once, in order.
        items = all_pages(c, "/queue", 2)
        assert len(set(ids(items))) == len(items)
        assert set(ids(started)) <= set(ids(items))
        assert [(ts(i["paused_since"]), i["run_id"]) for i in items] == sorted(
            (ts(i["paused_since"]), i["run_id"]) for i in items)

        # A run decided while a client pages leaves the later pages, and the total.
        first = queue(c, user_id=user, limit=2)
        assert first["total"] == 5
        [tool] = started[3]["tools"]
        continue_(c, started[3], [decided(tool, confirmed=True)])
        wait_caught_up(c)
        rest = queue(c, user_id=user, limit=2, cursor=first["next_cursor"])
        assert (ids(rest["items"]), rest["total"]) == (ids([started[2], started[4]]), 4)

        for run in started:
            c.post(f"/runs/{run['run_id']}/cancel")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("cursor", [
    "not a cursor!", "", "x" * 40, _b64(b"[1, 2]"), _b64(b'{"a": 1}'), _b64(b"[]"),
    _b64(b'["yesterday", "run"]'), _b64(b'["2024-01-01T00:00:00", "run"]'),
    _b64(b'["0001-01-01T00:00:00+05:00", "run"]'), _b64(b'["2024-01-01T00:00:00+00:00"]'),
    _b64(b"\xff\xfe"), "x" * 501,
])
def test_a_bad_queue_cursor_is_a_422(server: LiveServer, cursor: str) -> None:
    with server.client() as c:
        problem = assert_problem(c.get("/queue", params={"cursor": cursor}), 422)
        assert "cursor" in json.dumps(problem)


@pytest.mark.parametrize("cursor", ["abc", "-1", "1:", ":x", "1.5", "9" * 30, ""])
def test_a_bad_audit_cursor_is_a_422(server: LiveServer, cursor: str) -> None:
    with server.client() as c:
        problem = assert_problem(c.get("/audit/decisions", params={"cursor": cursor}), 422)
        assert "cursor" in json.dumps(problem)


def test_text_filters_with_a_nul_byte_are_refused(server: LiveServer) -> None:
    """PostgreSQL text cannot hold NUL: such a filter is a 422, not a 500."""
    with server.client() as c:
        for path, name in (("/queue", "agent_id"), ("/queue", "tool"),
                           ("/audit/decisions", "actor"), ("/audit/decisions", "run_id")):
            assert_problem(c.get(path, params={name: "a\x00b"}), 422)


# ------------------------------------------------------------------ audit

def _audit_story(c: httpx.Client, user: str) -> dict[str, Json]:
    """Decisions of every kind, each by one of two reviewers: the runs, by name."""
    runs = {}
    runs["edited"] = start(c, "data_manager", SEED, user_id=user)
    [tool] = runs["edited"]["tools"]
    continue_(c, runs["edited"], [decided(tool, confirmed=True, confirmation_note="only 5",
                                          tool_args={"table_name": "users", "count": 5})],
              user_id="aud-ann")
    runs["rejected"] = start(c, "data_manager", NOTIFY, user_id=user)
    [tool] = runs["rejected"]["tools"]
    continue_(c, runs["rejected"], [decided(tool, confirmed=False, confirmation_note="spam")],
              user_id="aud-ben")
    runs["external"] = start(c, "support_desk", EXTERNAL, user_id=user)
    [tool] = runs["external"]["tools"]
    continue_(c, runs["external"], [decided(tool, result="paid in full")], user_id="aud-ann")
    runs["input"] = start(c, "support_desk", INPUT, user_id=user)
    [tool] = runs["input"]["tools"]
    schema = [{**f, "value": "ana@example.com"} for f in tool["user_input_schema"]]
    continue_(c, runs["input"], [decided(tool, user_input_schema=schema)], user_id="aud-ben")
    runs["cancelled"] = start(c, "data_manager", TWO, user_id=user)
    r = c.post(f"/runs/{runs['cancelled']['run_id']}/cancel",
               json={"actor": "aud-cat", "reason": "stop"})
    assert r.status_code == 200, r.text
    wait_caught_up(c)
    return runs


def test_audit_rows_filters_and_paging(server: LiveServer) -> None:
    with server.client() as c:
        runs = _audit_story(c, "audit-user")
        rows = {name: audit(c, run_id=run["run_id"])["items"] for name, run in runs.items()}

        # Arguments as requested and as approved (the reviewer edited them).
        [edited] = rows["edited"]
        assert (edited["decision"], edited["actor"], edited["note"]) == (
            "confirmed", "aud-ann", "only 5")
        assert edited["args_requested"] == {"table_name": "users", "count": 50}
        assert edited["args_approved"] == {"table_name": "users", "count": 5}
        assert edited["details"] is None
        [rejected] = rows["rejected"]
        assert (rejected["decision"], rejected["actor"], rejected["note"],
                rejected["args_approved"]) == ("rejected", "aud-ben", "spam", None)
        # An external result and a user input carry what was supplied.
        [external] = rows["external"]
        assert (external["decision"], external["actor"], external["details"]) == (
            "external_result", "aud-ann", {"result": "paid in full"})
        assert external["args_requested"] == {"order_id": "77"}
        [user_input] = rows["input"]
        assert (user_input["decision"], user_input["actor"], user_input["details"]) == (
            "user_input", "aud-ben", {"values": {"email": "ana@example.com"}})
        assert user_input["args_requested"] == {"order_id": "A17", "amount": 30}
        cancelled = rows["cancelled"]
        assert [(r["decision"], r["actor"], r["note"]) for r in cancelled] == [
            ("cancelled", "aud-cat", "stop")] * 2

        mine = [r for name in runs for r in rows[name]]
        for row in mine:
            assert row["user_id"] == "audit-user"
            assert ts(row["decided_at"]) >= ts(row["requested_at"])
            assert row["time_to_decision_ms"] >= 0
            assert row["time_to_decision_ms"] == pytest.approx(
                (ts(row["decided_at"]) - ts(row["requested_at"]))
                / timedelta(milliseconds=1), abs=0.01)
        # In log order.
        positions = [r["position"] for r in mine]
        assert positions == sorted(positions)

        def keys(items: list[Json]) -> list[tuple[int, str]]:
            return [(r["position"], r["tool_call_id"]) for r in items]

        # Filters.
        assert keys(audit(c, actor="aud-ann")["items"]) == keys([edited, external])
        assert keys(audit(c, actor="aud-ben")["items"]) == keys([rejected, user_input])
        assert keys(audit(c, actor="aud-ann", tool="check_payment")["items"]) == keys(
            [external])
        assert keys(audit(c, actor="aud-ann", decision="confirmed")["items"]) == keys(
            [edited])
        assert keys(audit(c, actor="aud-cat", decision="cancelled")["items"]) == keys(
            cancelled)
        assert audit(c, actor="aud-cat", decision="confirmed")["total"] == 0
        assert audit(c, run_id=runs["input"]["run_id"], decision="user_input")["total"] == 1
        page = audit(c, actor="aud-ben", tool="send_notification", decision="rejected")
        assert (keys(page["items"]), page["total"]) == (keys([rejected]), 1)
        # since is inclusive, until exclusive (times of the decisions).
        window = audit(c, since=rejected["decided_at"],
                       until=user_input["decided_at"])["items"]
        assert keys(window) == keys([rejected, external])
        window = audit(c, actor="aud-ann", since=rejected["decided_at"])["items"]
        assert keys(window) == keys([external])
        window = audit(c, actor="aud-ann", until=external["decided_at"])["items"]
        assert keys(window) == keys([edited])
        # A time without a zone is UTC.
        naive = ts(external["decided_at"]).astimezone(UTC).replace(tzinfo=None).isoformat()
        assert keys(audit(c, actor="aud-ann", since=naive)["items"]) == keys([external])
        assert audit(c, since=now().isoformat())["total"] == 0
        assert_problem(c.get("/audit/decisions", params={"decision": "approved"}), 422)
        assert_problem(c.get("/audit/decisions", params={"since": "yesterday"}), 422)

        # Paging: every decision exactly once, in log order, whatever the page size; the
        # two cancelled calls share one position and a page may end between them.
        everything = audit(c, limit=1000)
        assert everything["next_cursor"] is None
        assert everything["total"] == len(everything["items"])
        for limit in (1, 2, 3, 7):
            assert keys(all_pages(c, "/audit/decisions", limit)) == keys(
                everything["items"]), limit
        assert keys(all_pages(c, "/audit/decisions", 1, actor="aud-cat")) == (
            keys(cancelled))
        # A cursor that is just a log position continues after every row at it.
        after = audit(c, cursor=str(cancelled[0]["position"] - 1), actor="aud-cat")
        assert keys(after["items"]) == keys(cancelled)
        assert audit(c, cursor=str(cancelled[0]["position"]), actor="aud-cat")["items"] == []


def _csv_rows(text: str) -> list[Json]:
    """CSV cells back into the JSON API's values."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = []
    for cells in reader:
        row: Json = {}
        for k, v in cells.items():
            if k in ("args_requested", "args_approved", "details"):
                row[k] = json.loads(v) if v else None
            elif k == "position":
                row[k] = int(v)
            elif k == "time_to_decision_ms":
                row[k] = float(v)
            else:
                row[k] = v if v != "" else None
        rows.append(row)
    assert reader.fieldnames == [
        "position", "run_id", "tool_call_id", "agent_id", "user_id", "session_id",
        "tool_name", "args_requested", "args_approved", "decision", "actor", "note",
        "details", "requested_at", "decided_at", "time_to_decision_ms"]
    return rows


def test_exports_have_the_rows_of_the_json_pages(server: LiveServer) -> None:
    with server.client() as c:
        _audit_story(c, "export-user")
        for params in ({}, {"actor": "aud-ann"}, {"decision": "cancelled"},
                       {"tool": "issue_refund", "actor": "aud-ben"}, {"actor": "nobody"}):
            pages = all_pages(c, "/audit/decisions", 3, **params)

            r = c.get("/audit/decisions", params={**params, "format": "csv"})
            assert r.status_code == 200, r.text
            assert r.headers["content-type"].startswith("text/csv")
            assert 'filename="decisions.csv"' in r.headers["content-disposition"]
            assert _csv_rows(r.text) == pages, params

            r = c.get("/audit/decisions", params={**params, "format": "jsonl"})
            assert r.status_code == 200, r.text
            assert r.headers["content-type"].startswith("application/x-ndjson")
            assert 'filename="decisions.jsonl"' in r.headers["content-disposition"]
            lines = r.text.splitlines()
            assert r.text.endswith("\n") or not lines
            assert [json.loads(line) for line in lines] == pages, params

        # Streamed: sent in chunks as it is read, not as one buffered document.
        for fmt in ("csv", "jsonl"):
            r = c.get("/audit/decisions", params={"format": fmt})
            assert r.headers.get("transfer-encoding") == "chunked", r.headers
            assert "content-length" not in r.headers
        assert_problem(c.get("/audit/decisions", params={"format": "xml"}), 422)


# ------------------------------------------------------------------ totals

def test_totals_say_whether_they_are_exact(server: LiveServer) -> None:
    """Unfiltered, ``total`` is a counter the projection keeps: exact, equal to what
    paging through finds. Filtered, it is counted up to a cap (far above what a test
    makes), so exact here too. The OpenAPI document declares both fields."""
    with server.client() as c:
        user = "total-user"
        started = [start(c, "data_manager", SEED, user_id=user) for _ in range(3)]
        continue_(c, started[0], [decided(started[0]["tools"][0], confirmed=True)],
                  user_id="total-rev")
        wait_caught_up(c)
        page = queue(c, limit=1)
        assert page["total_exact"] is True
        assert page["total"] == len(all_pages(c, "/queue", 50)) >= 2
        page = queue(c, user_id=user, limit=1)
        assert (page["total"], page["total_exact"]) == (2, True)
        page = audit(c, limit=1)
        assert page["total_exact"] is True
        assert page["total"] == len(all_pages(c, "/audit/decisions", 1000)) >= 1
        page = audit(c, actor="total-rev", limit=1)
        assert (page["total"], page["total_exact"]) == (1, True)
        for run in started[1:]:
            assert c.post(f"/runs/{run['run_id']}/cancel").status_code == 200

        doc = c.get("/openapi.json").json()
        for path in ("/queue", "/audit/decisions"):
            ref = doc["paths"][path]["get"]["responses"]["200"]["content"][
                "application/json"]["schema"]["$ref"]
            schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
            assert set(schema["required"]) == {"items", "total", "total_exact",
                                               "next_cursor"}, path
            assert schema["properties"]["total_exact"]["type"] == "boolean"


# ------------------------------------------------------------ projections

def test_projections_report_their_position_and_lag(server: LiveServer) -> None:
    with server.client() as c:
        start(c, "data_manager", SEED, user_id="proj-user")
        status = wait_caught_up(c)
        assert sorted(p["name"] for p in status) == sorted(projection_names())
        head = c.get("/health").json()["log_head"]
        for p in status:
            assert set(p) == {"name", "position", "head", "lag"}
            assert p["position"] == p["head"] == head > 0
            assert p["lag"] == 0
        # Every event counts: one more write moves the head, and the projections follow.
        [item] = queue(c, user_id="proj-user")["items"]
        assert c.post(f"/runs/{item['run_id']}/cancel").status_code == 200
        after = wait_caught_up(c)
        assert all(p["position"] == p["head"] > head for p in after)
        assert Counter(p["name"] for p in after) == Counter(projection_names())
