"""Agno's sessions API and ``GET /agents/{agent_id}/runs`` over HTTP, on a real ``signoff
serve`` over SQLite and PostgreSQL: the shapes Agno 3.1.10 answers (its captured answers,
``agno-samples/11`` to ``21`` and ``32`` to ``35``, give the key sets below), sessions
renamed, changed, created and deleted as events, and, with API keys, each caller
confined to the sessions it may see.

As in the samples, a session holds one completed and one paused run of
``data_manager``. Each test uses sessions and users of its own.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.flows import (
    Json,
    assert_problem,
    continue_,
    decided,
    pending,
    post_start,
    start,
)
from tests.support.server import ROOT, LiveServer, live_server

pytestmark = pytest.mark.e2e

FIRST = "Delete 50 old records from the users table"
SECOND = "Delete 20 old records from the orders table"
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")

# The keys of Agno's answers (nulls left out where Agno leaves them out).
LIST_ITEM = {"session_id", "session_name", "session_state", "created_at", "updated_at",
             "session_type", "user_id", "agent_id", "metrics"}  # 11, 12, 20
META = {"page", "limit", "total_pages", "total_count", "search_time_ms"}
DETAIL = {"user_id", "agent_session_id", "session_id", "session_name", "session_state",
          "agent_id", "agent_data", "metrics", "chat_history", "created_at",
          "updated_at"}  # 13
DETAIL_WITH_NULLS = DETAIL | {"session_summary", "total_tokens", "metadata"}  # 18, 21
CREATED = DETAIL - {"agent_data"} | {"metadata"}  # 19
RUN = {"run_id", "parent_run_id", "agent_id", "user_id", "status", "run_input", "content",
       "run_response_format", "reasoning_content", "reasoning_steps", "metrics", "messages",
       "tools", "created_at", "references", "reasoning_messages", "session_state", "images",
       "videos", "audio", "files", "input_media"}  # 14
RUN_WITH_NULLS = RUN | {"cancellation_stage", "metadata", "events", "citations",
                        "response_audio", "followups", "forked_from_run_id",
                        "forked_from_message_index", "forked_from_session_id",
                        "regenerated_from", "last_checkpoint_at_message_index"}  # 15, 17
PREVIEW = {"run_id", "parent_run_id", "agent_id", "user_id", "status", "run_input",
           "content_preview", "created_at"}  # 16


def _new_store(request: pytest.FixtureRequest, tmp: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp / 'signoff.db'}"
    db = request.getfixturevalue("pg_server").create_database(
        f"sessions_{uuid.uuid4().hex[:12]}")
    return str(db.url)


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           ) -> Iterator[LiveServer]:
    """``signoff serve`` without authentication (as Agno's clients meet it), shared by
    the module."""
    tmp = tmp_path_factory.mktemp(f"sessions-{request.param}")
    with live_server(_new_store(request, tmp), tmp / "server.log") as s:
        yield s


def _ids() -> tuple[str, str]:
    """A session and a user of the test's own."""
    tag = uuid.uuid4().hex[:8]
    return f"session-{tag}", f"user-{tag}"


def _session_as_in_the_samples(c: httpx.Client, session: str, user: str,
                               ) -> tuple[Json, Json]:
    """One completed and one paused run of ``data_manager`` in ``session``."""
    first = start(c, "data_manager", FIRST, user_id=user, session_id=session)
    done = continue_(c, first, [decided(t, confirmed=True) for t in pending(first)],
                     user_id=user, session_id=session)
    assert done["status"] == "COMPLETED"
    paused = start(c, "data_manager", SECOND, user_id=user, session_id=session)
    assert paused["status"] == "PAUSED"
    return done, paused


def _ok(r: httpx.Response, status: int = 200) -> Any:
    assert r.status_code == status, r.text
    return r.json() if r.content else None


def test_a_session_and_its_runs_in_agnos_shapes(server: LiveServer) -> None:
    session, user = _ids()
    with server.client() as c:
        done, paused = _session_as_in_the_samples(c, session, user)
        # get_sessions sends these, in this order (12).
        page = _ok(c.get("/sessions", params={"type": "agent", "limit": 20, "page": 1,
                                              "sort_by": "created_at", "sort_order": "desc",
                                              "user_id": user}))
        detail = _ok(c.get(f"/sessions/{session}", params={"type": "agent"}))
        runs = _ok(c.get(f"/sessions/{session}/runs", params={"type": "agent"}))
        one = _ok(c.get(f"/sessions/{session}/runs/{paused['run_id']}",
                        params={"type": "agent"}))
        previews = _ok(c.get(f"/sessions/{session}/run-previews", params={"type": "agent"}))
        waiting = _ok(c.get("/agents/data_manager/runs",
                            params={"session_id": session, "status": "PAUSED"}))
    [item] = page["data"]
    assert item.keys() == LIST_ITEM and page["meta"].keys() == META
    assert (page["meta"]["total_count"], page["meta"]["total_pages"]) == (1, 1)
    assert item["session_name"] == FIRST  # a session is named by its first input
    assert (item["session_id"], item["user_id"], item["agent_id"], item["session_type"]) == (
        session, user, "data_manager", "agent")
    assert item["metrics"]["details"]["model"] == [{"id": "offline", "provider": "signoff"}]
    assert ISO.match(item["created_at"]) and ISO.match(item["updated_at"])

    assert detail.keys() == DETAIL
    assert detail["agent_data"] == {"name": "Data Manager", "agent_id": "data_manager",
                                    "model": {"provider": "signoff", "name": "OfflineModel",
                                              "id": "offline"}}
    # The user and assistant messages of both runs, in order (no system, no tool result).
    assert [(m["role"], m.get("content")) for m in detail["chat_history"]] == [
        ("user", FIRST), ("assistant", None), ("assistant", done["content"]),
        ("user", SECOND), ("assistant", None)]
    assert "tool_calls" in detail["chat_history"][1]

    assert [r.keys() for r in runs] == [RUN, RUN]
    assert [(r["run_id"], r["status"], r["run_input"]) for r in runs] == [
        (done["run_id"], "COMPLETED", FIRST), (paused["run_id"], "PAUSED", SECOND)]
    assert runs[1]["content"] == "I have tools to execute, but I need confirmation."
    assert runs[1]["tools"] == paused["tools"]  # Agno's ToolExecution, nulls included
    assert all(ISO.match(r["created_at"]) for r in runs)
    assert one.keys() == RUN_WITH_NULLS and one["run_id"] == paused["run_id"]
    assert [p.keys() for p in previews] == [PREVIEW, PREVIEW]
    assert previews[1]["content_preview"] == runs[1]["content"]
    assert [(r.keys(), r["run_id"]) for r in waiting] == [(RUN_WITH_NULLS, paused["run_id"])]


def test_filters_as_agno_has_them(server: LiveServer) -> None:
    session, user = _ids()
    with server.client() as c:
        done, paused = _session_as_in_the_samples(c, session, user)
        other = f"{session}-b"
        start(c, "data_manager", "Delete 5 old records from the Cleanup_Log table",
              user_id=user, session_id=other)

        def sessions(**params: Any) -> list[str]:
            page = _ok(c.get("/sessions", params={"user_id": user, **params}))
            return [s["session_id"] for s in page["data"]]

        def runs(path: str = "runs", **params: Any) -> list[str]:
            return [r["run_id"] for r in _ok(c.get(f"/sessions/{session}/{path}",
                                                   params=params))]

        assert sessions() == [other, session]  # newest first
        assert sessions(sort_order="asc") == [session, other]
        assert sessions(session_name="cleanup_log") == [other]  # a part, any case
        assert sessions(component_id="support_desk") == []
        assert sessions(type="team") == []  # signoff serves agent sessions only
        # limit=1&page=2 (20): the second of two.
        page = _ok(c.get("/sessions", params={"user_id": user, "limit": 1, "page": 2}))
        assert [s["session_id"] for s in page["data"]] == [session]
        assert {k: page["meta"][k] for k in ("page", "limit", "total_pages", "total_count")} \
            == {"page": 2, "limit": 1, "total_pages": 2, "total_count": 2}
        assert runs(status="paused") == [paused["run_id"]]  # any case here
        assert runs(status=["COMPLETED", "PAUSED"]) == [done["run_id"], paused["run_id"]]
        assert runs("run-previews", status="completed") == [done["run_id"]]
        assert runs(created_after=2**37) == [] and runs(created_before=0) == []
        bad = assert_problem(c.get(f"/sessions/{session}/runs", params={"status": "BOGUS"}),
                             400)
        assert bad["detail"].startswith("Invalid status value(s) ['BOGUS']; expected one of")
        # /agents/{agent_id}/runs compares the status exactly, as Agno does.
        path = "/agents/data_manager/runs"
        assert _ok(c.get(path, params={"session_id": session, "status": "paused"})) == []
        assert len(_ok(c.get(path, params={"session_id": session}))) == 2
        assert_problem(c.get(path), 422)  # session_id is required


def test_what_is_not_found_is_said_as_agno_says_it(server: LiveServer) -> None:
    session, user = _ids()
    with server.client() as c:
        _, paused = _session_as_in_the_samples(c, session, user)
        for path, params, detail in [
            ("/sessions/nope", {}, "Session with id 'nope' not found"),
            ("/sessions/nope", {"type": "agent"}, "Agent Session with id 'nope' not found"),
            (f"/sessions/{session}", {"user_id": "someone-else"},
             f"Session with id '{session}' not found"),
            ("/sessions/nope/runs", {}, "Session with ID nope not found"),
            ("/sessions/nope/run-previews", {}, "Session with ID nope not found"),
            (f"/sessions/{session}/runs/nope", {},
             f"Run with ID nope not found in session {session}"),
            ("/agents/data_manager/runs", {"session_id": "nope"}, "Session not found"),
            ("/agents/support_desk/runs", {"session_id": session}, "Session not found"),
            ("/sessions", {"db_id": "elsewhere"}, "No database found with id 'elsewhere'"),
        ]:
            assert assert_problem(c.get(path, params=params), 404)["detail"] == detail, path
        assert _ok(c.get("/sessions", params={"db_id": "signoff", "table": "signoff_sessions",
                                              "user_id": user}))["meta"]["total_count"] == 1
        assert_problem(c.get("/sessions", params={"table": "signoff_sessions"}), 400)
        assert_problem(c.get("/agents/nobody/runs", params={"session_id": session}), 404)
        r = c.post("/sessions/nope/rename", json={"session_name": "x"})
        assert assert_problem(r, 404)["detail"] == "Session with id 'nope' not found"
        r = c.request("DELETE", "/sessions", json={"session_ids": [session],
                                                   "session_types": ["agent", "agent"]})
        assert assert_problem(r, 400)["detail"] == \
            "Session IDs and session types must have the same length"
        assert _ok(c.get(f"/runs/{paused['run_id']}"))["status"] == "PAUSED"


def test_a_client_renames_creates_changes_and_deletes_sessions(server: LiveServer) -> None:
    session, user = _ids()
    made = f"{session}-made"
    with server.client() as c:
        done, paused = _session_as_in_the_samples(c, session, user)
        # rename (18): the session with its null fields.
        renamed = _ok(c.post(f"/sessions/{session}/rename", params={"type": "agent"},
                             json={"session_name": "Data cleanup"}))
        assert renamed.keys() == DETAIL_WITH_NULLS
        assert renamed["session_name"] == "Data cleanup" and renamed["metadata"] is None
        # create (19): all eight fields, nulls included, as the client sends them.
        body = {"session_id": made, "session_name": "Pre-created session",
                "session_state": {"stage": "draft"}, "metadata": {"source": "capture"},
                "user_id": user, "agent_id": "data_manager", "team_id": None,
                "workflow_id": None}
        created = _ok(c.post("/sessions", params={"type": "agent"}, json=body), 201)
        assert created.keys() == CREATED
        assert (created["metrics"], created["chat_history"]) == ({}, [])
        again = assert_problem(c.post("/sessions", params={"type": "agent"}, json=body), 409)
        assert again["detail"] == (f"Session with id '{made}' already exists. Use PATCH "
                                   f"/sessions/{made} to update it.")
        # update (21): only the fields given change.
        changed = _ok(c.patch(f"/sessions/{made}", params={"type": "agent"}, json={
            "session_name": "Updated via PATCH", "session_state": {"stage": "final"}}))
        assert changed.keys() == DETAIL_WITH_NULLS and changed["agent_data"] is None
        assert (changed["session_name"], changed["session_state"], changed["metadata"]) == (
            "Updated via PATCH", {"stage": "final"}, {"source": "capture"})
        page = _ok(c.get("/sessions", params={"user_id": user, "sort_by": "session_name",
                                              "sort_order": "asc"}))
        assert [s["session_name"] for s in page["data"]] == ["Data cleanup",
                                                              "Updated via PATCH"]
        # delete (32, 33), bulk delete (34, 35): 204, also for an id that does not list.
        assert c.delete(f"/sessions/{made}").status_code == 204
        assert c.delete("/sessions/never-was").status_code == 204
        gone = assert_problem(c.get(f"/sessions/{made}", params={"type": "agent"}), 404)
        assert gone["detail"] == f"Agent Session with id '{made}' not found"
        r = c.request("DELETE", "/sessions", json={"session_ids": [session, "never-was"],
                                                   "session_types": ["agent", "agent"]})
        assert r.status_code == 204, r.text
        page = _ok(c.get("/sessions", params={"user_id": user}))
        assert page == {"data": [], "meta": {**page["meta"], "total_pages": 0,
                                             "total_count": 0}}
        # Every change is an event in the log; the deleted session's runs stay there.
        assert _ok(c.get(f"/runs/{paused['run_id']}"))["status"] == "PAUSED"
        history = _ok(c.get(f"/runs/{done['run_id']}/events"))
        assert history[0]["type"] == "RunStarted"
        # A run started later with the same id begins a new session.
        later = start(c, "data_manager", "Delete 1 old records from the users table",
                      user_id=user, session_id=session)
        runs = _ok(c.get(f"/sessions/{session}/runs"))
        assert [r["run_id"] for r in runs] == [later["run_id"]]
        assert _ok(c.get(f"/sessions/{session}"))["session_name"] == \
            "Delete 1 old records from the users table"


# ------------------------------------------------------------------ ownership

KEYS = {  # name: (role, options)
    "ann": ("client", []), "bob": ("client", []),
    "sam": ("reviewer", ["--agent", "support_desk"]), "rita": ("reviewer", []),
    "audrey": ("auditor", []), "adm": ("admin", []),
}


class Keyed:
    def __init__(self, server: LiveServer, secrets: dict[str, str]) -> None:
        self.server = server
        self.secrets = secrets

    def as_(self, who: str) -> httpx.Client:
        return self.server.client(headers={"Authorization": f"Bearer {self.secrets[who]}"})


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keyed]:
    """``signoff serve`` with API keys, over SQLite."""
    tmp = tmp_path_factory.mktemp("sessions-keys")
    url = f"sqlite:///{tmp / 'signoff.db'}"
    env = {**os.environ, "SIGNOFF_DATABASE_URL": url}
    secrets = {name: subprocess.run(
        [sys.executable, "-m", "cli", "keys", "create", "--name", name, "--role", role,
         *extra], cwd=ROOT, env=env, check=True, capture_output=True, text=True,
        timeout=60).stdout.strip() for name, (role, extra) in KEYS.items()}
    with live_server(url, tmp / "server.log") as s:
        yield Keyed(s, secrets)


def test_a_client_sees_its_own_sessions_only(keyed: Keyed) -> None:
    mine, theirs = f"ann-{uuid.uuid4().hex[:8]}", f"bob-{uuid.uuid4().hex[:8]}"
    with keyed.as_("ann") as ann, keyed.as_("bob") as bob:
        own = start(ann, "data_manager", FIRST, user_id="ann", session_id=mine)
        start(bob, "data_manager", FIRST, user_id="bob", session_id=theirs)
        # bob cannot start a run under ann's session id (it says nothing of it), in a
        # streamed start neither: 409 before anything is recorded.
        for stream in ("false", "true"):
            r = post_start(bob, "data_manager", message=SECOND, session_id=mine,
                           stream=stream)
            assert assert_problem(r, 409)["detail"].startswith(
                "Could not create a session with the supplied session_id.")
        listed = {s["session_id"] for s in _ok(ann.get("/sessions"))["data"]}
        assert mine in listed and theirs not in listed
        assert [r["run_id"] for r in _ok(ann.get(f"/sessions/{mine}/runs"))] == [
            own["run_id"]]
        # A session bob created ahead is bob's: ann's run does not join it (nor does
        # her first message become its name).
        ahead = f"ahead-{uuid.uuid4().hex[:8]}"
        _ok(bob.post("/sessions", json={"session_id": ahead}), 201)
        assert_problem(post_start(ann, "data_manager", message="PIN 4321", session_id=ahead,
                                  stream="false"), 409)
        assert _ok(bob.get(f"/sessions/{ahead}"))["session_name"] != "PIN 4321"
        assert "you are 'ann'" in assert_problem(
            ann.get("/sessions", params={"user_id": "bob"}), 403)["detail"]
        # To bob, ann's session does not exist: not read, renamed, changed or deleted.
        for method, path, kw in [
            ("GET", f"/sessions/{mine}", {}), ("GET", f"/sessions/{mine}/runs", {}),
            ("GET", f"/sessions/{mine}/run-previews", {}),
            ("GET", f"/sessions/{mine}/runs/{own['run_id']}", {}),
            ("GET", "/agents/data_manager/runs", {"params": {"session_id": mine}}),
            ("POST", f"/sessions/{mine}/rename", {"json": {"session_name": "mine now"}}),
            ("PATCH", f"/sessions/{mine}", {"json": {"session_name": "mine now"}}),
        ]:
            assert_problem(bob.request(method, path, **kw), 404)
        assert bob.delete(f"/sessions/{mine}").status_code == 204
        assert bob.request("DELETE", "/sessions", json={
            "session_ids": [mine], "session_types": ["agent"]}).status_code == 204
        r = bob.post("/sessions", json={"session_id": mine})
        assert assert_problem(r, 409)["detail"].startswith(
            "Could not create a session with the supplied session_id.")
        assert_problem(bob.post("/sessions", json={"user_id": "ann"}), 403)
        detail = _ok(ann.get(f"/sessions/{mine}"))
        assert detail["session_name"] == FIRST  # nothing bob did changed it
        # What a client creates is its own.
        made = _ok(bob.post("/sessions", json={"session_name": "bob's"}), 201)
        assert made["user_id"] == "bob"


def test_reviewers_see_their_agents_sessions_and_auditors_all(keyed: Keyed) -> None:
    tag = uuid.uuid4().hex[:8]
    with keyed.as_("ann") as ann:
        start(ann, "data_manager", FIRST, user_id="ann", session_id=f"dm-{tag}")
        start(ann, "support_desk", 'call check_payment {"order_id": "o-1"}', user_id="ann",
              session_id=f"sd-{tag}")
    for who, expected in [("sam", {f"sd-{tag}"}), ("rita", {f"sd-{tag}", f"dm-{tag}"}),
                          ("audrey", {f"sd-{tag}", f"dm-{tag}"})]:
        with keyed.as_(who) as c:
            listed = {s["session_id"] for s in _ok(c.get(
                "/sessions", params={"user_id": "ann", "limit": 100}))["data"]}
            assert listed & {f"sd-{tag}", f"dm-{tag}"} == expected, who
            if who == "sam":
                assert_problem(c.get(f"/sessions/dm-{tag}"), 404)
            # Reading is all they may do.
            assert_problem(c.post(f"/sessions/sd-{tag}/rename", json={"session_name": "x"}),
                           403)
    with keyed.as_("adm") as adm:
        assert_problem(adm.get("/sessions"), 403)
