"""Who may do what, over HTTP against a real server with API keys: every role against
every route (allowed and refused), clients confined to their own runs, reviewers to
their agents, and the recorded actor always the authenticated caller."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from api.app import create_app
from api.auth import ADMIN, allow, policy
from projections.approvals import approval_id
from tests.e2e.flows import assert_problem, decided, form, pending
from tests.support.server import ROOT, LiveServer, live_server

SEED = "Delete 50 old records from the users table"
EXTERNAL = 'call check_payment {"order_id": "A-1"}'
KEYS = {  # name: (role, extra options)
    "adm": ("admin", []), "ann": ("client", []), "bob": ("client", []),
    "rita": ("reviewer", []), "sam": ("reviewer", ["--agent", "support_desk"]),
    "audrey": ("auditor", []),
}
ROLE_OF = {"admin": "adm", "client": "ann", "reviewer": "rita", "auditor": "audrey"}
JWT_SECRET = "a-shared-secret-of-the-identity-provider-0123456789"


def _cli(url: str, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, check=True,
                         env={**os.environ, "SIGNOFF_DATABASE_URL": url},
                         capture_output=True, text=True, timeout=60)
    return out.stdout.strip()


class World:
    def __init__(self, server: LiveServer, secrets: dict[str, str]) -> None:
        self.server = server
        self.secrets = secrets

    def as_(self, who: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.secrets[who]}"} if who else {}
        return self.server.client(headers=headers)

    def paused(self, agent: str = "data_manager", message: str = SEED,
               user: str = "ann") -> dict[str, Any]:
        with self.as_(user) as c:
            r = c.post(f"/agents/{agent}/runs", files=form(message=message, stream="false"))
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("roles")
    url = f"sqlite:///{tmp / 'signoff.db'}"
    secrets = {name: _cli(url, "keys", "create", "--name", name, "--role", role, *extra)
               for name, (role, extra) in KEYS.items()}
    with live_server(url, tmp / "server.log", SIGNOFF_JWT_KEY=JWT_SECRET) as server:
        yield World(server, secrets)


def _confirm(run: dict[str, Any]) -> dict[str, Any]:
    return form(tools=[decided(t, confirmed=True) for t in pending(run)], stream="false")


# One request per route: (method, path template) -> build(world) -> (method, url, kwargs)
Request = Callable[[World], tuple[str, str, dict[str, Any]]]


def _run_route(method: str, suffix: str = "", **kw: Any) -> Request:
    def build(w: World) -> tuple[str, str, dict[str, Any]]:
        run = w.paused()
        path = suffix.format(run=run["run_id"], agent=run["agent_id"])
        return method, path, kw
    return build


def _continue(w: World) -> tuple[str, str, dict[str, Any]]:
    """A continue that answers what the run asks of its user (an external result):
    what a client may decide, as a reviewer may."""
    run = w.paused("support_desk", EXTERNAL)
    answers = [decided(t, result="paid") for t in pending(run)]
    return "POST", f"/agents/support_desk/runs/{run['run_id']}/continue", {
        "files": form(tools=answers, stream="false")}


def _session_route(method: str, suffix: str, **kw: Any) -> Request:
    def build(w: World) -> tuple[str, str, dict[str, Any]]:
        run = w.paused()  # in a session of its own
        return method, suffix.format(session=run["session_id"], run=run["run_id"]), kw
    return build


def _delete_sessions(w: World) -> tuple[str, str, dict[str, Any]]:
    session = w.paused()["session_id"]
    return "DELETE", "/sessions", {"json": {"session_ids": [session],
                                            "session_types": ["agent"]}}


def _approval_route(method: str, suffix: str, **kw: Any) -> Request:
    def build(w: World) -> tuple[str, str, dict[str, Any]]:
        run = w.paused()
        found = approval_id(run["run_id"], pending(run)[0]["tool_call_id"])
        deadline = time.monotonic() + 10  # until the read models have the paused run
        with w.as_("rita") as c:
            while c.get(f"/approvals/{found}/status").status_code != 200:
                assert time.monotonic() < deadline, "the approval never showed"
                time.sleep(0.02)
        return method, suffix.format(approval=found), kw
    return build


def _agent_runs(w: World) -> tuple[str, str, dict[str, Any]]:
    run = w.paused()
    return "GET", "/agents/data_manager/runs", {"params": {"session_id": run["session_id"]}}


REQUESTS: dict[tuple[str, str], Request] = {
    ("GET", "/"): lambda w: ("GET", "/", {}),
    ("GET", "/health"): lambda w: ("GET", "/health", {}),
    ("GET", "/ready"): lambda w: ("GET", "/ready", {}),
    ("GET", "/metrics"): lambda w: ("GET", "/metrics", {}),
    ("GET", "/agents"): lambda w: ("GET", "/agents", {}),
    ("GET", "/config"): lambda w: ("GET", "/config", {}),
    ("GET", "/agents/{agent_id}"): lambda w: ("GET", "/agents/data_manager", {}),
    ("POST", "/agents/{agent_id}/runs"): lambda w: (
        "POST", "/agents/data_manager/runs", {"files": form(message=SEED, stream="false")}),
    ("POST", "/agents/{agent_id}/runs/{run_id}/continue"): _continue,
    ("GET", "/agents/{agent_id}/runs/{run_id}"): _run_route("GET", "/agents/{agent}/runs/{run}"),
    ("POST", "/agents/{agent_id}/runs/{run_id}/cancel"):
        _run_route("POST", "/agents/{agent}/runs/{run}/cancel"),
    ("GET", "/runs/{run_id}"): _run_route("GET", "/runs/{run}"),
    ("GET", "/runs/{run_id}/events"): _run_route("GET", "/runs/{run}/events"),
    ("POST", "/runs/{run_id}/cancel"): _run_route("POST", "/runs/{run}/cancel"),
    ("GET", "/runs/{run_id}/verify"): _run_route("GET", "/runs/{run}/verify"),
    ("GET", "/runs/{run_id}/stream"): _run_route("GET", "/runs/{run}/stream"),
    ("GET", "/queue/stream"): lambda w: ("GET", "/queue/stream", {}),
    ("GET", "/queue"): lambda w: ("GET", "/queue", {}),
    ("GET", "/audit/decisions"): lambda w: ("GET", "/audit/decisions", {}),
    ("GET", "/analytics/decisions"): lambda w: ("GET", "/analytics/decisions",
                                                {"params": {"group_by": "tool"}}),
    ("GET", "/analytics/queue"): lambda w: ("GET", "/analytics/queue",
                                            {"params": {"group_by": "tool,group"}}),
    ("GET", "/audit/verify"): lambda w: ("GET", "/audit/verify", {}),
    ("GET", "/audit/anchors"): lambda w: ("GET", "/audit/anchors", {}),
    ("GET", "/audit/public-key"): lambda w: ("GET", "/audit/public-key", {}),
    ("GET", "/projections"): lambda w: ("GET", "/projections", {}),
    ("GET", "/keys"): lambda w: ("GET", "/keys", {}),
    ("POST", "/keys"): lambda w: ("POST", "/keys", {"json": {"name": "new", "role": "client"}}),
    ("POST", "/keys/{key_id}/revoke"): lambda w: ("POST", _new_key_path(w), {}),
    ("GET", "/inbox"): lambda w: ("GET", "/inbox", {}),
    ("GET", "/webhooks"): lambda w: ("GET", "/webhooks", {}),
    ("POST", "/webhooks"): lambda w: ("POST", "/webhooks",
                                      {"json": {"url": "http://127.0.0.1:9/hook"}}),
    ("GET", "/webhooks/{webhook_id}"): lambda w: ("GET", _new_webhook_path(w), {}),
    ("DELETE", "/webhooks/{webhook_id}"): lambda w: ("DELETE", _new_webhook_path(w), {}),
    ("GET", "/webhooks/{webhook_id}/deliveries"):
        lambda w: ("GET", _new_webhook_path(w) + "/deliveries", {}),
    ("GET", "/sessions"): lambda w: ("GET", "/sessions", {}),
    ("POST", "/sessions"): lambda w: ("POST", "/sessions", {"json": {"session_name": "new"}}),
    ("DELETE", "/sessions"): _delete_sessions,
    ("GET", "/sessions/{session_id}"): _session_route("GET", "/sessions/{session}"),
    ("PATCH", "/sessions/{session_id}"):
        _session_route("PATCH", "/sessions/{session}", json={"session_name": "renamed"}),
    ("DELETE", "/sessions/{session_id}"): _session_route("DELETE", "/sessions/{session}"),
    ("POST", "/sessions/{session_id}/rename"):
        _session_route("POST", "/sessions/{session}/rename", json={"session_name": "x"}),
    ("GET", "/sessions/{session_id}/runs"): _session_route("GET", "/sessions/{session}/runs"),
    ("GET", "/sessions/{session_id}/run-previews"):
        _session_route("GET", "/sessions/{session}/run-previews"),
    ("GET", "/sessions/{session_id}/runs/{run_id}"):
        _session_route("GET", "/sessions/{session}/runs/{run}"),
    ("GET", "/agents/{agent_id}/runs"): _agent_runs,
    ("GET", "/approvals"): lambda w: ("GET", "/approvals", {}),
    ("GET", "/approvals/count"): lambda w: ("GET", "/approvals/count", {}),
    ("GET", "/approvals/{approval_id}"): _approval_route("GET", "/approvals/{approval}"),
    ("GET", "/approvals/{approval_id}/status"):
        _approval_route("GET", "/approvals/{approval}/status"),
    ("POST", "/approvals/{approval_id}/resolve"):
        _approval_route("POST", "/approvals/{approval}/resolve", json={"status": "approved"}),
}


def _new_webhook_path(w: World) -> str:
    with w.as_("adm") as c:
        r = c.post("/webhooks", json={"url": "http://127.0.0.1:9/hook", "event_types": ["*"]})
    return f"/webhooks/{r.json()['webhook']['id']}"


def _new_key_path(w: World) -> str:
    name = f"doomed-{time.monotonic_ns()}"  # one live key per name: a name of its own
    with w.as_("adm") as c:
        key = c.post("/keys", json={"name": name, "role": "client"}).json()["key"]
    return f"/keys/{key['id']}/revoke"


POLICY = policy(create_app())  # each route's roles, as it declares them


def test_every_route_declares_its_roles_and_has_a_request() -> None:
    spec = create_app().openapi()
    routes = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    assert routes == set(POLICY) == set(REQUESTS)


def test_a_route_that_declares_no_roles_is_refused() -> None:
    from fastapi import FastAPI

    app = FastAPI()
    app.get("/declared", dependencies=[allow(ADMIN)])(lambda: None)
    assert policy(app) == {("GET", "/declared"): frozenset({ADMIN})}
    app.get("/forgotten")(lambda: None)
    with pytest.raises(ValueError, match="/forgotten declares 0 authorizations"):
        policy(app)


CASES = [(route, role) for route in sorted(POLICY) for role in ["anonymous", *ROLE_OF]]


@pytest.mark.parametrize(("route", "role"), CASES, ids=[f"{m} {p} as {r}"
                                                        for (m, p), r in CASES])
def test_role_against_route(world: World, route: tuple[str, str], role: str) -> None:
    """Every route as every role: allowed, or refused before anything is written (the
    log's head does not move)."""
    method, path, kwargs = REQUESTS[route](world)
    head = _head(world)
    with world.as_(ROLE_OF.get(role)) as c, c.stream(method, path, **kwargs) as r:
        if not r.headers.get("content-type", "").startswith("text/event-stream"):
            r.read()  # a stream that is allowed may go on: its headers are enough
    allowed = POLICY[route]
    if not allowed:  # public
        assert r.status_code == 200, r.text
    elif role == "anonymous":
        assert_problem(r, 401)
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert _head(world) == head
    elif role in allowed:
        assert r.status_code in (200, 201, 204), (r.status_code, r.text)
    else:
        problem = assert_problem(r, 403)
        assert f"{'an' if role[0] in 'aeiou' else 'a'} {role} may not" in problem["detail"]
        assert _head(world) == head


def _head(w: World) -> int:
    with w.server.client() as c:
        return int(c.get("/health").json()["log_head"])


def test_a_client_cannot_read_or_continue_another_users_run(world: World) -> None:
    run = world.paused(user="ann")
    with world.as_("bob") as bob:
        for method, path, kw in [
            ("GET", f"/runs/{run['run_id']}", {}),
            ("GET", f"/runs/{run['run_id']}/events", {}),
            ("GET", f"/agents/data_manager/runs/{run['run_id']}", {}),
            ("POST", f"/agents/data_manager/runs/{run['run_id']}/continue",
             {"files": _confirm(run)}),
            ("POST", f"/runs/{run['run_id']}/cancel", {}),
        ]:
            assert_problem(bob.request(method, path, **kw), 404)
    with world.as_("ann") as ann:
        assert ann.get(f"/runs/{run['run_id']}").json()["status"] == "PAUSED"


def test_a_body_that_names_another_actor_is_refused(world: World) -> None:
    with world.as_("ann") as ann:
        r = ann.post("/agents/data_manager/runs",
                     files=form(message=SEED, user_id="bob", stream="false"))
        assert "you are 'ann'" in assert_problem(r, 403)["detail"]
        run = world.paused(user="ann")
        fields = _confirm(run) | form(user_id="mallory")
        r = ann.post(f"/agents/data_manager/runs/{run['run_id']}/continue", files=fields)
        assert_problem(r, 403)
        r = ann.post(f"/runs/{run['run_id']}/cancel", json={"actor": "mallory"})
        assert_problem(r, 403)
        assert ann.get(f"/runs/{run['run_id']}").json()["status"] == "PAUSED"


def test_a_client_answers_what_its_run_asks_of_it_and_a_reviewer_decides_the_rest(
        world: World) -> None:
    """A client gives the input and the external results its own run asks for; the
    confirmation of a sensitive call (or its rejection) is a reviewer's: 403, with
    nothing recorded, whatever arguments the client sends."""
    run = world.paused(user="ann")  # data_manager: delete_records needs a confirmation
    [tool] = pending(run)
    head = _head(world)
    with world.as_("ann") as ann:
        for decision in ({"confirmed": True},
                         {"confirmed": True, "tool_args": {**tool["tool_args"], "count": 9}},
                         {"confirmed": False, "confirmation_note": "no"}):
            r = ann.post(f"/agents/data_manager/runs/{run['run_id']}/continue",
                         files=form(tools=[decided(tool, **decision)], stream="false"))
            assert "reviewer" in assert_problem(r, 403)["detail"]
        assert _head(world) == head
        assert ann.get(f"/runs/{run['run_id']}").json()["status"] == "PAUSED"
    with world.as_("rita") as rita:
        r = rita.post(f"/agents/data_manager/runs/{run['run_id']}/continue",
                      files=_confirm(run))
        assert r.json()["status"] == "COMPLETED", r.text
    # What the run asks of its user: the client answers it.
    asks = world.paused("support_desk", EXTERNAL, user="ann")
    with world.as_("ann") as ann:
        r = ann.post(f"/agents/support_desk/runs/{asks['run_id']}/continue",
                     files=form(tools=[decided(t, result="paid") for t in pending(asks)],
                                stream="false"))
        assert r.json()["status"] == "COMPLETED", r.text


def test_the_recorded_actor_is_the_authenticated_caller(world: World) -> None:
    run = world.paused(user="ann")
    assert run["user_id"] == "ann"  # the run's user is the caller who started it
    with world.as_("rita") as rita:
        r = rita.post(f"/agents/data_manager/runs/{run['run_id']}/continue",
                      files=_confirm(run) | form(user_id="rita"))
        assert r.status_code == 200, r.text
        history = rita.get(f"/runs/{run['run_id']}/events").json()
    confirmed = next(e for e in history if e["type"] == "ToolConfirmed")
    assert confirmed["payload"]["decided_by"] == "rita"
    with world.as_("audrey") as audrey:
        deadline = time.monotonic() + 10
        while True:
            rows = audrey.get("/audit/decisions", params={"run_id": run["run_id"]}).json()
            if rows["items"] or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert [row["actor"] for row in rows["items"]] == ["rita"]


def test_a_reviewer_limited_to_an_agent_decides_only_its_runs(world: World) -> None:
    other = world.paused()  # data_manager
    own = world.paused(agent="support_desk", message='call check_payment {"order_id": "o-1"}')
    with world.as_("sam") as sam:
        assert_problem(sam.get(f"/runs/{other['run_id']}"), 403)
        r = sam.post(f"/agents/data_manager/runs/{other['run_id']}/continue",
                     files=_confirm(other))
        assert_problem(r, 403)
        tools = [decided(t, result="paid") for t in pending(own)]
        r = sam.post(f"/agents/support_desk/runs/{own['run_id']}/continue",
                     files=form(tools=tools, stream="false"))
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "COMPLETED"


def test_bad_and_revoked_keys_are_refused(world: World) -> None:
    with world.server.client(headers={"Authorization": "Bearer sk_signoff_nope"}) as c:
        assert "unknown or revoked" in assert_problem(c.get("/agents"), 401)["detail"]
    with world.server.client(headers={"Authorization": "Basic YWxhZGRpbjpvcGVu"}) as c:
        assert_problem(c.get("/agents"), 401)
    secret = _cli(world.server.database_url, "keys", "create", "--name", "temp",
                  "--role", "auditor")
    with world.server.client(headers={"X-API-Key": secret}) as c:
        assert c.get("/agents").status_code == 200
        _cli(world.server.database_url, "keys", "revoke", "temp")
        deadline = time.monotonic() + 15  # keys are cached for 5 s per process
        while c.get("/agents").status_code == 200:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert_problem(c.get("/agents"), 401)


def _token(role: str, sub: str = "jo", **claims: Any) -> str:
    return jwt.encode({"sub": sub, "role": role, "exp": int(time.time()) + 300, **claims},
                      JWT_SECRET, algorithm="HS256")


def test_jwt_bearer_tokens(world: World) -> None:
    run = world.paused()
    with world.server.client(headers={"Authorization": f"Bearer {_token('reviewer')}"}) as c:
        r = c.post(f"/agents/data_manager/runs/{run['run_id']}/continue", files=_confirm(run))
        assert r.status_code == 200, r.text
        history = c.get(f"/runs/{run['run_id']}/events").json()
    assert next(e for e in history if e["type"] == "ToolConfirmed")["payload"][
        "decided_by"] == "jo"
    expired = _token("auditor", exp=int(time.time()) - 10)
    forged = jwt.encode({"sub": "x", "role": "admin", "exp": int(time.time()) + 60},
                        "another-secret-another-secret-another-secret", algorithm="HS256")
    for bad in (expired, forged, _token("superuser")):
        with world.server.client(headers={"Authorization": f"Bearer {bad}"}) as c:
            assert_problem(c.get("/agents"), 401)


def test_no_authentication_only_on_loopback(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'open.db'}"
    env = {**os.environ, "SIGNOFF_DATABASE_URL": url, "SIGNOFF_HOST": "0.0.0.0"}
    refused = subprocess.run([sys.executable, "-m", "cli", "serve"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert "refusing to listen on 0.0.0.0 without authentication" in refused.stderr
    with live_server(url, tmp_path / "s.log") as server:
        assert "no authentication" in server.log()
        with server.client() as c:  # open: Agno clients work as they are
            assert c.get("/agents").status_code == 200


def test_a_limited_reviewer_sees_the_queue_of_its_agents_only(world: World) -> None:
    world.paused()  # data_manager
    own = world.paused(agent="support_desk", message='call check_payment {"order_id": "o-9"}')
    with world.as_("sam") as sam:
        deadline = time.monotonic() + 10
        while True:
            page = sam.get("/queue").json()
            if any(i["run_id"] == own["run_id"] for i in page["items"]):
                break
            assert time.monotonic() < deadline, page
            time.sleep(0.05)
        assert {i["agent_id"] for i in page["items"]} == {"support_desk"}
        assert_problem(sam.get("/queue", params={"agent_id": "data_manager"}), 403)
    with world.as_("rita") as rita:  # an unlimited reviewer sees both agents
        # (on a page long enough for every run the module paused, the oldest first)
        page = rita.get("/queue", params={"limit": 500}).json()
        agents = {i["agent_id"] for i in page["items"]}
        assert {"support_desk", "data_manager"} <= agents


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralized(world: World) -> None:
    run = world.paused()
    tools = [decided(t, confirmed=False, confirmation_note="=HYPERLINK(\"http://x\")")
             for t in pending(run)]
    with world.as_("rita") as rita:
        r = rita.post(f"/agents/data_manager/runs/{run['run_id']}/continue",
                      files=form(tools=tools, stream="false"))
        assert r.status_code == 200, r.text
    with world.as_("audrey") as audrey:
        deadline = time.monotonic() + 10
        while run["run_id"] not in (csv := audrey.get(
                "/audit/decisions", params={"format": "csv", "run_id": run["run_id"]}).text):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert "'=HYPERLINK" in csv and ",=HYPERLINK" not in csv
