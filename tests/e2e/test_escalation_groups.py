"""Escalation to a group of reviewers, over HTTP with API keys and JWTs: a call whose
decision expired and was escalated to ``leads`` is listed by ``GET /queue?group=leads``
and decided by a reviewer of that group only (``signoff keys create --group leads``, or
a JWT's ``signoff_groups`` claim); anyone else gets 403.

The server runs without a sweeper (``SIGNOFF_EXPIRY_INTERVAL=0``); the test records the
expiry itself, through a run lifecycle over the same store (the tool's decision may wait
a millisecond: it is past by then), so nothing waits for a sweep.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from agent.loop import AgentLoop
from agent.models.offline import OfflineModel
from service.config import Settings, eventsourcing_env
from service.runs import RunService
from tests.e2e.flows import assert_problem, decided, form, pending
from tests.e2e.test_roles import _cli
from tests.support.expiring import escalating
from tests.support.runs import Runs
from tests.support.server import LiveServer, live_server

pytestmark = pytest.mark.e2e

JWT_SECRET = "a-shared-secret-of-the-identity-provider-0123456789"
KEYS = {"adm": ["--role", "admin"], "ann": ["--role", "client"], "rita": ["--role", "reviewer"],
        "lee": ["--role", "reviewer", "--group", "leads", "--group", "ops"]}


class World:
    def __init__(self, url: str, server: LiveServer, secrets: dict[str, str]) -> None:
        self.url = url
        self.server = server
        self.secrets = secrets

    def as_(self, who: str) -> httpx.Client:
        token = self.secrets.get(who) or who
        return self.server.client(headers={"Authorization": f"Bearer {token}"})

    def escalated_run(self) -> dict[str, Any]:
        with self.as_("ann") as c:
            r = c.post("/agents/escalating/runs", files=form(
                message='call grant_role {"user": "zoe", "role": "admin"}', stream="false"))
            assert r.status_code == 200, r.text
            run = r.json()
        # What the sweeper would do, by a lifecycle over the same store: escalated.
        app = RunService(env=eventsourcing_env(Settings(database_url=self.url)))
        loop = AgentLoop({"escalating": escalating}, OfflineModel())
        try:
            after = Runs(app, loop).expire(run["run_id"])
            [call] = after.pending_calls()
            assert call.escalated_to == "leads"
        finally:
            loop.close()
            app.close()
        return run


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("groups")
    url = f"sqlite:///{tmp / 'signoff.db'}"
    secrets = {name: _cli(url, "keys", "create", "--name", name, *options)
               for name, options in KEYS.items()}
    with live_server(url, tmp / "server.log", SIGNOFF_JWT_KEY=JWT_SECRET,
                     SIGNOFF_EXPIRY_INTERVAL="0",
                     SIGNOFF_AGENTS="agent.demo,tests.support.expiring") as server:
        yield World(url, server, secrets)


def confirm(run: dict[str, Any]) -> dict[str, Any]:
    return form(tools=[decided(t, confirmed=True) for t in pending(run)], stream="false")


def queue_for(c: httpx.Client, group: str) -> list[str]:
    deadline = time.monotonic() + 10  # the server's projections follow the log
    while True:
        items = c.get("/queue", params={"group": group}).json()["items"]
        if items or time.monotonic() > deadline:
            return [i["run_id"] for i in items]
        time.sleep(0.05)


def test_only_the_group_decides_an_escalated_call(world: World) -> None:
    run = world.escalated_run()
    path = f"/agents/escalating/runs/{run['run_id']}/continue"
    for outsider in ("rita", "ann"):  # a reviewer of no group; the run's own client
        with world.as_(outsider) as c:
            problem = assert_problem(c.post(path, files=confirm(run)), 403)
            assert "escalated to the reviewers of 'leads'" in problem["detail"]
    with world.as_("lee") as c:
        assert run["run_id"] in queue_for(c, "leads")
        [item] = [i for i in c.get("/queue", params={"group": "leads"}).json()["items"]
                  if i["run_id"] == run["run_id"]]
        assert item["waiting_for"][0]["escalated_to"] == "leads"
        assert item["waiting_for"][0]["expires_at"] is not None
        r = c.post(path, files=confirm(run))
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "COMPLETED"
        history = c.get(f"/runs/{run['run_id']}/events").json()
    assert [e["type"] for e in history if e["type"] in ("DecisionExpired", "ToolConfirmed")] \
        == ["DecisionExpired", "ToolConfirmed"]
    assert history[-1]["type"] == "RunCompleted"
    assert next(e for e in history if e["type"] == "ToolConfirmed")["payload"][
        "decided_by"] == "lee"


def test_only_the_group_cancels_a_run_with_an_escalated_call(world: World) -> None:
    """A cancel ends every call the run leaves open: it is authorized as a decision on
    each, so a call escalated to a group keeps everyone else out (the run's client too)."""
    run = world.escalated_run()
    for who in ("rita", "ann"):
        with world.as_(who) as c:
            r = c.post(f"/runs/{run['run_id']}/cancel", json={"reason": "not mine"})
            assert "only they decide it" in assert_problem(r, 403)["detail"]
            assert_problem(c.post(f"/agents/escalating/runs/{run['run_id']}/cancel"), 403)
    with world.as_("lee") as lee:
        r = lee.post(f"/runs/{run['run_id']}/cancel", json={"reason": "not needed"})
        assert r.status_code == 200, r.text
        assert (r.json()["status"], r.json()["cancelled_by"]) == ("CANCELLED", "lee")


def test_a_jwt_names_its_groups(world: World) -> None:
    def token(**claims: Any) -> str:
        return jwt.encode({"sub": "jo", "role": "reviewer", "exp": int(time.time()) + 300,
                           **claims}, JWT_SECRET, algorithm="HS256")

    run = world.escalated_run()
    path = f"/agents/escalating/runs/{run['run_id']}/continue"
    with world.as_(token(signoff_groups=["ops"])) as c:
        assert_problem(c.post(path, files=confirm(run)), 403)
    with world.as_(token(signoff_groups=["leads"])) as c:
        r = c.post(path, files=confirm(run))
        assert r.status_code == 200, r.text


def test_keys_list_their_groups(world: World) -> None:
    listed = _cli(world.url, "keys", "list")
    assert "group=leads group=ops" in listed
    with world.as_("adm") as c:
        r = c.post("/keys", json={"name": "max", "role": "reviewer", "groups": ["leads"]})
        assert r.status_code == 201, r.text
        assert r.json()["key"]["groups"] == ["leads"]
        assert_problem(c.post("/keys", json={"name": "cy", "role": "client",
                                              "groups": ["leads"]}), 422)
        lee = next(k for k in c.get("/keys").json() if k["name"] == "lee")
        assert lee["groups"] == ["leads", "ops"]
