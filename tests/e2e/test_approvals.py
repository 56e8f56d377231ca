"""Agno's approvals API over HTTP, on a real ``signoff serve`` over SQLite and PostgreSQL.

The story is Agno's own (``shared/notes/agno-samples`` 22 to 31): a run pauses for a
confirmation, the approval is listed, counted, read and polled; a reviewer resolves it;
a second resolve is refused with 409; the client continues the run with ``tools=[]``
and it has completed. signoff's part: resolving is a decision through the run lifecycle,
made by the authenticated caller whatever ``resolved_by`` says, exactly once (two
resolves at the same moment: one wins), and it is in the audit trail.

One server per store serves the module, with API keys: a client (``ann``, ``bob``),
reviewers (``rita``, ``rex``; ``sam`` for ``support_desk`` only), an auditor and an
admin. Tests do not interfere: each reads through filters on its own runs (``run_id``)
or its own client. The approvals API reads the read models once they have applied the
log as it was when the request came: a test lists what it just did without waiting.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from projections.approvals import approval_id
from tests.e2e.flows import Json, assert_problem, form, pending, post_continue
from tests.e2e.sse import names, parse
from tests.support.server import ROOT, LiveServer, live_server

pytestmark = pytest.mark.e2e

SEED = "Delete 50 old records from the users table"  # delete_records(users, 50)
TWO = ('call delete_records {"table_name": "logs", "count": 3}\n'
       'call send_notification {"recipient": "ops", "message": "bye"}')
# An item of GET /approvals, in Agno's order (agno-samples/23-approvals-list-pending.json).
APPROVAL_KEYS = [
    "id", "run_id", "session_id", "status", "source_type", "approval_type", "pause_type",
    "tool_name", "tool_args", "expires_at", "agent_id", "team_id", "workflow_id", "user_id",
    "schedule_id", "schedule_run_id", "source_name", "requirements", "context",
    "resolution_data", "resolved_by", "resolved_at", "created_at", "updated_at", "run_status"]
META_KEYS = ["page", "limit", "total_pages", "total_count", "search_time_ms"]
KEYS = {"ann": ("client", None), "bob": ("client", None), "rita": ("reviewer", None),
        "rex": ("reviewer", None), "sam": ("reviewer", ["support_desk"]),
        "audrey": ("auditor", None)}


class World:
    def __init__(self, server: LiveServer, secrets: dict[str, str]) -> None:
        self.server = server
        self.secrets = secrets

    def as_(self, who: str) -> httpx.Client:
        return self.server.client(headers={"Authorization": f"Bearer {self.secrets[who]}"})

    def paused(self, message: str = SEED, user: str = "ann", agent: str = "data_manager",
               ) -> Json:
        """A run of ``user``'s, paused for its confirmations."""
        with self.as_(user) as c:
            r = c.post(f"/agents/{agent}/runs", files=form(
                message=message, stream="false", session_id=f"s-{uuid.uuid4().hex[:8]}"))
        assert r.status_code == 200, r.text
        run: Json = r.json()
        assert run["status"] == "PAUSED", run
        return run


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          ) -> Iterator[World]:
    """``signoff serve`` with keys (the admin's made by the CLI, the others by it)."""
    tmp = tmp_path_factory.mktemp(f"approvals-{request.param}")
    db = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'signoff.db'}"
    else:
        db = request.getfixturevalue("pg_server").create_database(
            f"approvals_{uuid.uuid4().hex[:12]}")
        url = db.url
    admin = subprocess.run(
        [sys.executable, "-m", "cli", "keys", "create", "--name", "adm", "--role", "admin"],
        cwd=ROOT, env={**os.environ, "SIGNOFF_DATABASE_URL": url}, check=True,
        capture_output=True, text=True, timeout=60).stdout.strip()
    try:
        with live_server(url, tmp / "server.log",
                         SIGNOFF_AGENTS="agent.demo,tests.support.agents,tests.support.expiring",
                         SIGNOFF_EXPIRY_INTERVAL="0.05") as server:
            secrets = {"adm": admin}
            with server.client(headers={"Authorization": f"Bearer {admin}"}) as c:
                for name, (role, agents) in KEYS.items():
                    body = {"name": name, "role": role, **({"agents": agents} if agents else {})}
                    r = c.post("/keys", json=body)
                    assert r.status_code == 201, r.text
                    secrets[name] = r.json()["secret"]
            yield World(server, secrets)
    finally:
        if db is not None:
            db.drop_database()


# ------------------------------------------------------------------ helpers

def listed(c: httpx.Client, **params: Any) -> Json:
    r = c.get("/approvals", params=params)
    assert r.status_code == 200, r.text
    body: Json = r.json()
    return body


def approval_of(run: Json, index: int = 0) -> str:
    return approval_id(run["run_id"], pending(run)[index]["tool_call_id"])


def resolve(c: httpx.Client, approval: str, status: str, **body: Any) -> httpx.Response:
    return c.post(f"/approvals/{approval}/resolve", json={"status": status, **body})


def eventually(check: Any, what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.02)
    return found


# -------------------------------------------------------------- the story

def test_agnos_approval_story(world: World) -> None:
    run = world.paused(user="ann")
    [tool] = pending(run)
    approval = approval_of(run)

    with world.as_("rita") as rita, world.as_("ann") as ann, world.as_("audrey") as audrey:
        # Listed (sample 23), in Agno's shape: the call as the paused run listed it.
        page = listed(rita, status="pending", run_id=run["run_id"])
        assert list(page["meta"])[:5] == META_KEYS
        assert {k: page["meta"][k] for k in META_KEYS[:4]} == {
            "page": 1, "limit": 100, "total_pages": 1, "total_count": 1}
        [item] = page["data"]
        assert list(item) == APPROVAL_KEYS
        assert {k: item[k] for k in APPROVAL_KEYS if k not in ("requirements", "created_at",
                                                                "updated_at")} == {
            "id": approval, "run_id": run["run_id"], "session_id": run["session_id"],
            "status": "pending", "source_type": "agent", "approval_type": "required",
            "pause_type": "confirmation", "tool_name": "delete_records",
            "tool_args": {"table_name": "users", "count": 50}, "expires_at": None,
            "agent_id": "data_manager", "team_id": None, "workflow_id": None,
            "user_id": "ann", "schedule_id": None, "schedule_run_id": None,
            "source_name": "Data Manager",
            "context": {"tool_names": ["delete_records"], "source_name": "Data Manager"},
            "resolution_data": None, "resolved_by": None, "resolved_at": None,
            "run_status": "PAUSED"}
        assert item["created_at"] == item["updated_at"] == tool["created_at"]
        [requirement] = item["requirements"]
        [paused_requirement] = run["requirements"]
        # The run names the approval (sample 22); the approval's own copy does not.
        assert (tool["approval_type"], tool["approval_id"]) == ("required", approval)
        assert paused_requirement["tool_execution"]["approval_id"] == approval
        assert requirement == {**paused_requirement, "tool_execution": {
            **paused_requirement["tool_execution"], "approval_id": None}}

        # Counted (24), read (25) and polled (26): the client sees its own.
        assert ann.get("/approvals/count").json() == {
            "count": listed(ann, status="pending")["meta"]["total_count"]}
        assert ann.get(f"/approvals/{approval}").json() == item
        assert ann.get(f"/approvals/{approval}/status").json() == {
            "approval_id": approval, "status": "pending", "run_id": run["run_id"],
            "resolved_at": None, "resolved_by": None}

        # Resolved (27): by the caller, not by whoever the body names; the run goes on.
        r = resolve(rita, approval, "approved", resolved_by="admin_alice")
        assert r.status_code == 200, r.text
        resolved = r.json()
        assert (resolved["status"], resolved["resolved_by"], resolved["run_status"]) == (
            "approved", "rita", "COMPLETED")
        assert resolved["updated_at"] == resolved["resolved_at"] >= item["created_at"]
        assert {k: v for k, v in resolved.items() if k not in (
            "status", "resolved_by", "resolved_at", "updated_at", "run_status")} == {
            k: v for k, v in item.items() if k not in (
                "status", "resolved_by", "resolved_at", "updated_at", "run_status")}

        # Again (28): 409 in Agno's words, with the decision that stands.
        r = resolve(rita, approval, "rejected", resolved_by="admin_bob")
        problem = assert_problem(r, 409)
        assert problem["detail"] == "Approval is already 'approved' and cannot be resolved"
        assert (problem["decision"]["kind"], problem["decision"]["decided_by"]) == (
            "confirmed", "rita")
        assert ann.get(f"/approvals/{approval}/status").json() == {  # 29
            "approval_id": approval, "status": "approved", "run_id": run["run_id"],
            "resolved_at": resolved["resolved_at"], "resolved_by": "rita"}

        # The client continues as Agno's does (30): nothing to decide; the run as the
        # resolve left it, the tool run with its confirmation.
        r = post_continue(ann, "data_manager", run["run_id"], tools="[]", stream="false",
                          session_id=run["session_id"])
        assert r.status_code == 200, r.text
        done = r.json()
        assert done["status"] == "COMPLETED"
        [ran] = done["tools"]
        assert (ran["confirmed"], ran["result"]) == (True, "Deleted 50 records from users")

        # Read after (31), and listed as resolved once the read models have it.
        after = ann.get(f"/approvals/{approval}").json()
        assert after == resolved
        assert listed(rita, run_id=run["run_id"])["data"] == [after]
        assert listed(rita, status="approved", run_id=run["run_id"])["data"] == [after]
        assert listed(rita, status="pending", run_id=run["run_id"])["data"] == []

        # In the audit trail, with the caller as the actor.
        rows = audrey.get("/audit/decisions", params={"run_id": run["run_id"]}).json()
        assert [(d["decision"], d["actor"], d["tool_call_id"]) for d in rows["items"]] == [
            ("confirmed", "rita", tool["tool_call_id"])]


def test_a_rejection_records_its_note_and_the_model_is_told(world: World) -> None:
    run = world.paused(user="bob")
    approval = approval_of(run)
    with world.as_("rita") as rita, world.as_("audrey") as audrey:
        r = resolve(rita, approval, "rejected", resolution_data={"values": {"x": 1}})
        assert assert_problem(r, 422)["errors"][0]["loc"][-1] == "values"
        r = resolve(rita, approval, "maybe")
        assert_problem(r, 422)

        r = resolve(rita, approval, "rejected", resolution_data={"note": "too many rows"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["status"], body["resolution_data"], body["run_status"]) == (
            "rejected", {"note": "too many rows"}, "COMPLETED")
        problem = assert_problem(resolve(rita, approval, "approved"), 409)
        assert problem["detail"] == "Approval is already 'rejected' and cannot be resolved"
        assert problem["decision"]["reason"] == "too many rows"
        assert listed(rita, run_id=run["run_id"])["data"] == [body]
        [row] = audrey.get("/audit/decisions", params={"run_id": run["run_id"]}).json()[
            "items"]
        assert (row["decision"], row["actor"], row["note"]) == (
            "rejected", "rita", "too many rows")
    with world.as_("bob") as bob:
        done = bob.get(f"/agents/data_manager/runs/{run['run_id']}").json()
    assert "too many rows" in done["content"]


@pytest.mark.parametrize("rounds", [5])
def test_two_resolves_at_once_exactly_one_wins(world: World, rounds: int) -> None:
    """Two reviewers resolve one approval at the same moment, one approving and one
    rejecting: one gets 200, the other 409 with the winner's decision; one decision is
    recorded, by the winner."""
    for _ in range(rounds):
        run = world.paused(user="bob")
        approval = approval_of(run)
        barrier = threading.Barrier(2)
        answers: dict[str, httpx.Response] = {}

        def race(who: str, status: str, approval: str = approval,
                 barrier: threading.Barrier = barrier,
                 answers: dict[str, httpx.Response] = answers) -> None:
            with world.as_(who) as c:
                barrier.wait()
                answers[who] = resolve(c, approval, status)

        threads = [threading.Thread(target=race, args=args)
                   for args in (("rita", "approved"), ("rex", "rejected"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        codes = sorted(r.status_code for r in answers.values())
        assert codes == [200, 409], {k: (r.status_code, r.text) for k, r in answers.items()}
        [winner] = [k for k, r in answers.items() if r.status_code == 200]
        [loser] = [k for k, r in answers.items() if r.status_code == 409]
        won = answers[winner].json()
        assert won["resolved_by"] == winner
        problem = answers[loser].json()
        assert problem["detail"] == (
            f"Approval is already '{won['status']}' and cannot be resolved")
        assert problem["decision"]["decided_by"] == winner
        with world.as_("rita") as rita:  # (the list waits for the read models)
            assert listed(rita, run_id=run["run_id"])["data"] == [won]
        with world.as_("audrey") as audrey:
            rows = audrey.get("/audit/decisions", params={"run_id": run["run_id"]}).json()
        assert [r["actor"] for r in rows["items"]] == [winner]


def test_continue_with_no_tools_after_a_resolve_streams_what_it_caused(world: World,
                                                                        ) -> None:
    run = world.paused(user="ann")
    with world.as_("ann") as ann:
        # Still waiting: a continue that decides nothing is refused, as ever.
        r = post_continue(ann, "data_manager", run["run_id"], tools="[]", stream="false")
        assert_problem(r, 422)
        with world.as_("rita") as rita:
            assert resolve(rita, approval_of(run), "approved").status_code == 200
        r = post_continue(ann, "data_manager", run["run_id"], tools="[]")
        assert r.status_code == 200, r.text
        sent = names(parse(r.text))
    assert sent[0] == "RunContinued" and sent[-1] == "RunCompleted", sent
    assert {"ToolCallStarted", "ToolCallCompleted"} <= set(sent), sent


def test_one_of_two_resolved_the_run_waits_for_the_other(world: World) -> None:
    run = world.paused(message=TWO, user="bob")
    first, second = approval_of(run, 0), approval_of(run, 1)
    assert first != second
    with world.as_("rita") as rita:
        r = resolve(rita, first, "approved")
        assert (r.json()["status"], r.json()["run_status"]) == ("approved", "PAUSED")
        assert rita.get(f"/approvals/{second}/status").json()["status"] == "pending"
        page = listed(rita, run_id=run["run_id"])
        assert [(a["id"], a["status"]) for a in page["data"]] == [
            (second, "pending"), (first, "approved")] or [
            (a["id"], a["status"]) for a in page["data"]] == [
            (first, "approved"), (second, "pending")]
        assert [a["run_status"] for a in page["data"]] == ["PAUSED", "PAUSED"]
        r = resolve(rita, second, "approved")
        assert (r.json()["status"], r.json()["run_status"]) == ("approved", "COMPLETED")


def test_lists_filter_page_and_keep_to_what_the_caller_may_see(world: World) -> None:
    runs = [world.paused(user="bob") for _ in range(3)]
    ids = [approval_of(r) for r in runs]
    support = world.paused(user="bob", agent="support_desk",
                           message='call check_payment {"order_id": "o-1"}')
    with world.as_("bob") as bob:
        mine = listed(bob, status="pending", limit=2)
        assert mine["meta"]["limit"] == 2 and mine["meta"]["total_count"] >= 3
        assert mine["meta"]["total_pages"] == -(-mine["meta"]["total_count"] // 2)
        assert {a["user_id"] for a in mine["data"]} == {"bob"}
        # Newest first, pages without overlap.
        everything = [a for p in range(1, mine["meta"]["total_pages"] + 1)
                      for a in listed(bob, status="pending", limit=2, page=p)["data"]]
        assert len({a["id"] for a in everything}) == len(everything) == mine["meta"][
            "total_count"]
        assert [a["created_at"] for a in everything] == sorted(
            (a["created_at"] for a in everything), reverse=True)
        assert set(ids) <= {a["id"] for a in everything}
        assert bob.get("/approvals/count").json()["count"] == mine["meta"]["total_count"]
        # Only confirmations are approvals (an external execution is not one).
        assert listed(bob, run_id=support["run_id"])["data"] == []
        for none in ({"approval_type": "audit"}, {"team_id": "t"}, {"pause_type": "user_input"},
                     {"source_type": "team"}, {"workflow_id": "w"}, {"schedule_id": "s"}):
            assert listed(bob, **none)["data"] == [], none
        assert [a["id"] for a in listed(bob, run_id=runs[1]["run_id"])["data"]] == [ids[1]]
        assert listed(bob, agent_id="support_desk")["data"] == []
        assert_problem(bob.get("/approvals", params={"user_id": "ann"}), 403)
        assert_problem(bob.get("/approvals", params={"limit": 1000, "page": 11}), 422)
        assert_problem(bob.get("/approvals", params={"limit": 1001}), 422)
        assert_problem(bob.get("/approvals", params={"status": "open"}), 422)
        # Another user's approval does not exist for a client.
    with world.as_("ann") as ann:
        assert listed(ann, run_id=runs[0]["run_id"])["data"] == []
        for path in (f"/approvals/{ids[0]}", f"/approvals/{ids[0]}/status"):
            assert assert_problem(ann.get(path), 404)["detail"] == "Approval not found"
        assert_problem(resolve(ann, ids[0], "approved"), 403)  # clients do not resolve
    # A reviewer limited to support_desk sees and resolves none of data_manager's.
    with world.as_("sam") as sam:
        assert listed(sam, run_id=runs[0]["run_id"])["data"] == []
        assert_problem(sam.get(f"/approvals/{ids[0]}"), 403)
        assert_problem(resolve(sam, ids[0], "approved"), 403)
    with world.as_("rita") as rita:
        for unknown in (str(uuid.uuid4()), "not-an-id", ids[0][:-1] + "0"
                        if ids[0][-1] != "0" else ids[0][:-1] + "1"):
            for r in (rita.get(f"/approvals/{unknown}"), resolve(rita, unknown, "approved")):
                assert assert_problem(r, 404)["detail"] == "Approval not found"
        assert rita.get(f"/approvals/{ids[0]}/status").json()["status"] == "pending"
    with world.as_("audrey") as audrey:
        assert [a["id"] for a in listed(audrey, run_id=runs[2]["run_id"])["data"]] == [ids[2]]
        assert_problem(resolve(audrey, ids[2], "approved"), 403)


def test_expired_and_cancelled_approvals(world: World) -> None:
    with world.as_("bob") as bob:
        r = bob.post("/agents/expiring/runs", files=form(
            message='call drop_cache {"name": "home"}', stream="false"))
        expiring = r.json()
        r = bob.post("/agents/expiring/runs", files=form(
            message='call grant_access {"user": "ann"}', stream="false"))
        escalating = r.json()
    cancelled = world.paused(user="bob")
    with world.as_("rita") as rita:
        assert rita.post(f"/runs/{cancelled['run_id']}/cancel",
                         json={"reason": "not now"}).status_code == 200
        for run in (expiring, escalating):
            eventually(lambda run=run: rita.get(f"/runs/{run['run_id']}").json()[
                "status"] == "COMPLETED", "the sweeper expires the call")
        for run, by in ((expiring, "system"), (escalating, "system"),
                        (cancelled, "rita")):
            # Once each (an escalation is no resolution), the same in the list and alone.
            [item] = listed(rita, run_id=run["run_id"])["data"]
            status = "cancelled" if run is cancelled else "expired"
            assert (item["status"], item["resolved_by"]) == (status, by), item
            assert item["run_status"] == ("CANCELLED" if run is cancelled else "COMPLETED")
            assert rita.get(f"/approvals/{item['id']}").json() == item
            problem = assert_problem(resolve(rita, item["id"], "approved"), 409)
            assert problem["detail"] == f"Approval is already '{status}' and cannot be resolved"
        [expired] = listed(rita, run_id=expiring["run_id"])["data"]
        assert expired["expires_at"] is not None and expired["resolution_data"] is None
        assert listed(rita, status="cancelled", run_id=cancelled["run_id"])["data"]
        assert listed(rita, status="expired", run_id=cancelled["run_id"])["data"] == []


def test_without_authentication_resolved_by_names_the_actor(tmp_path: Path) -> None:
    with live_server(f"sqlite:///{tmp_path / 'open.db'}", tmp_path / "server.log") as server, \
            server.client() as c:
        actors = []
        for named in ("admin_alice", None):
            r = c.post("/agents/data_manager/runs", files=form(message=SEED, stream="false"))
            run = r.json()
            approval = approval_of(run)
            eventually(lambda approval=approval: c.get(
                f"/approvals/{approval}/status").status_code == 200, "listed")
            r = resolve(c, approval, "approved",
                        **({"resolved_by": named} if named else {}))
            assert r.status_code == 200, r.text
            actors.append(r.json()["resolved_by"])
            row = eventually(lambda run=run: c.get("/audit/decisions", params={
                "run_id": run["run_id"]}).json()["items"], "audited")
            assert row[0]["actor"] == actors[-1]
        assert actors == ["admin_alice", "anonymous"]


def test_a_resolve_sent_again_with_its_idempotency_key_answers_as_the_first(
        world: World) -> None:
    """``Idempotency-Key`` on a resolve, as on ``continue``: the same request again by
    the same caller gets the approval as it now is (nothing recorded); the key with
    another request (another status, note or approval) or by another caller, 422."""
    run = world.paused(message=TWO, user="bob")  # two calls: one resolve leaves it paused
    first, second = approval_of(run, 0), approval_of(run, 1)
    key = {"Idempotency-Key": f"resolve-{uuid.uuid4()}"}
    body = {"status": "approved", "resolution_data": {"note": "fine"}}

    def events() -> int:
        with world.as_("audrey") as audrey:
            return len(audrey.get(f"/runs/{run['run_id']}/events").json())

    with world.as_("rita") as rita, world.as_("rex") as rex:
        r = rita.post(f"/approvals/{first}/resolve", json=body, headers=key)
        assert r.status_code == 200, r.text
        answered = r.json()
        assert (answered["status"], answered["run_status"]) == ("approved", "PAUSED")
        recorded = events()
        again = rita.post(f"/approvals/{first}/resolve", json=body, headers=key)
        assert (again.status_code, again.json()) == (200, answered)
        for other in ({**body, "status": "rejected"}, {"status": "approved"},
                      {**body, "resolution_data": {"note": "other"}}):
            r = rita.post(f"/approvals/{first}/resolve", json=other, headers=key)
            assert "another request" in assert_problem(r, 422)["detail"], other
        r = rex.post(f"/approvals/{first}/resolve", json=body, headers=key)
        assert "another actor" in assert_problem(r, 422)["detail"]
        assert_problem(rita.post(f"/approvals/{second}/resolve", json=body, headers=key), 422)
        # Without the key, or with another, it is a second resolve: 409, as ever.
        for headers in ({}, {"Idempotency-Key": f"other-{uuid.uuid4()}"}):
            r = rita.post(f"/approvals/{first}/resolve", json=body, headers=headers)
            problem = assert_problem(r, 409)
            assert problem["decision"]["request_key"] == key["Idempotency-Key"]
        assert events() == recorded
        assert rita.get(f"/approvals/{second}/status").json()["status"] == "pending"

        # Once the other is resolved and the run has gone on, the key's answer is the
        # approval as it now is.
        assert resolve(rita, second, "approved").json()["run_status"] == "COMPLETED"
        again = rita.post(f"/approvals/{first}/resolve", json=body, headers=key)
        assert again.status_code == 200, again.text
        assert again.json() == {**answered, "run_status": "COMPLETED"}
        # The run's tools name their approvals, resolved as pending.
        done = rita.get(f"/agents/data_manager/runs/{run['run_id']}").json()
        assert [(t["approval_type"], t["approval_id"]) for t in done["tools"]] == [
            ("required", first), ("required", second)]


def test_an_approval_is_never_deleted(world: World) -> None:
    """Agno's ``DELETE /approvals/{id}``: 405 with ``Allow: GET``, a problem that says
    why, whoever asks and whatever the id; the approval stays."""
    run = world.paused(user="bob")
    approval = approval_of(run)
    for who in (None, "bob", "rita", "audrey", "adm"):
        client = world.as_(who) if who else world.server.client()
        with client:
            for target in (approval, str(uuid.uuid4())):
                r = client.delete(f"/approvals/{target}")
                problem = assert_problem(r, 405)
                assert r.headers["allow"] == "GET"
                assert problem["detail"].startswith(
                    "signoff never deletes an approval: it is the record of a decision")
    with world.as_("rita") as rita:
        assert rita.get(f"/approvals/{approval}/status").json()["status"] == "pending"
