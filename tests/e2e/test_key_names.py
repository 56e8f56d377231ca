"""A key's name is who its holder is (the actor recorded, the user whose runs a client
reads): one live key per name, never a name signoff records for itself (``SYSTEM``) or
for a caller without authentication (``ANONYMOUS``), and a reviewer's scope is all or
some agents and tools, never none. Over HTTP (``POST /keys``) and the CLI (``signoff
keys create``), with the same words; and two issues of one name at the same time, in
two workers over one store, give one key."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from domain.keys import Role
from domain.values import SYSTEM
from service.auth import ANONYMOUS, Authenticator, Unauthenticated
from service.config import Settings, eventsourcing_env
from service.keys import KeyNameTaken, create_key, list_keys, revoke_key
from service.runs import RunService
from tests.e2e.flows import assert_problem
from tests.support.server import ROOT, LiveServer, live_server

pytestmark = pytest.mark.e2e


def _store(url: str) -> RunService:
    return RunService(env=eventsourcing_env(Settings(database_url=url)))


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", "keys", "create", *args], cwd=ROOT,
                          env={**os.environ, "SIGNOFF_DATABASE_URL": url},
                          capture_output=True, text=True, timeout=60)


class World:
    def __init__(self, url: str, server: LiveServer, admin: str) -> None:
        self.url, self.server, self.admin = url, server, admin

    def admin_client(self) -> httpx.Client:
        return self.server.client(headers={"Authorization": f"Bearer {self.admin}"})

    def head(self) -> int:
        with self.server.client() as c:
            return int(c.get("/health").json()["log_head"])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("key_names")
    url = f"sqlite:///{tmp / 'signoff.db'}"
    app = _store(url)
    try:
        admin, _ = create_key(app, name="adm", role=Role.ADMIN, created_by="test")
        create_key(app, name="ann", role=Role.CLIENT, created_by="test")
    finally:
        app.close()
    with live_server(url, tmp / "server.log", SIGNOFF_EXPIRY_INTERVAL="0") as server:
        yield World(url, server, admin)


def _name() -> str:
    return f"k-{time.monotonic_ns()}"


# ---------------------------------------------------------------- over HTTP

def test_a_name_held_by_a_live_key_is_409_and_nothing_is_written(world: World) -> None:
    head = world.head()
    with world.admin_client() as c:
        for role in ("client", "reviewer", "admin"):
            r = c.post("/keys", json={"name": "ann", "role": role})
            detail = assert_problem(r, 409)["detail"]
            assert "a live key is already named 'ann'" in detail, detail
        names = [k["name"] for k in c.get("/keys").json() if not k["revoked"]]
    assert names.count("ann") == 1
    assert world.head() == head


def test_revoking_a_key_frees_its_name(world: World) -> None:
    name = _name()
    with world.admin_client() as c:
        first = c.post("/keys", json={"name": name, "role": "client"})
        assert first.status_code == 201, first.text
        assert_problem(c.post("/keys", json={"name": name, "role": "client"}), 409)
        revoked = c.post(f"/keys/{first.json()['key']['id']}/revoke")
        assert revoked.status_code == 200, revoked.text
        again = c.post("/keys", json={"name": name, "role": "reviewer"})
        assert again.status_code == 201, again.text
        assert_problem(c.post("/keys", json={"name": name, "role": "client"}), 409)


@pytest.mark.parametrize("name", [SYSTEM, ANONYMOUS, SYSTEM.upper(), ANONYMOUS.title()])
def test_the_names_signoff_records_for_itself_are_422(world: World, name: str) -> None:
    head = world.head()
    with world.admin_client() as c:
        for role in ("reviewer", "client"):
            detail = assert_problem(c.post("/keys", json={"name": name, "role": role}),
                                    422)["detail"]
            assert f"the name {name!r} is reserved" in detail, detail
    assert world.head() == head


@pytest.mark.parametrize("scope", ["agents", "tools"])
def test_an_empty_scope_is_422_and_an_absent_one_is_all(world: World, scope: str) -> None:
    other = {"agents": {"tools": ["delete_records"]}, "tools": {"agents": ["data_manager"]}}
    bodies: list[dict[str, list[str]]] = [{scope: []}, {**other[scope], scope: []}]
    head = world.head()
    with world.admin_client() as c:
        for body in bodies:
            r = c.post("/keys", json={"name": _name(), "role": "reviewer", **body})
            problem = assert_problem(r, 422)
            assert [e["loc"][-1] for e in problem["errors"]] == [scope], problem
            assert (f"an empty list of {scope} would limit the reviewer to none"
                    in problem["errors"][0]["msg"]), problem
        assert world.head() == head
        for unlimited in ({}, {scope: None}):
            r = c.post("/keys", json={"name": _name(), "role": "reviewer", **unlimited})
            assert r.status_code == 201, r.text
            assert r.json()["key"][scope] is None


def test_a_blank_agent_or_tool_is_422(world: World) -> None:
    with world.admin_client() as c:
        for body in ({"agents": [""]}, {"tools": [" delete_records"]}):
            assert_problem(c.post("/keys", json={"name": _name(), "role": "reviewer",
                                                 **body}), 422)


# ----------------------------------------------------------------- the CLI

def test_the_cli_refuses_the_same_names_in_the_same_words(world: World,
                                                         tmp_path: Path) -> None:
    taken = _cli(world.url, "--name", "ann", "--role", "client")
    assert taken.returncode == 1 and taken.stdout == ""
    assert "signoff: a live key is already named 'ann'" in taken.stderr, taken.stderr
    fresh = tmp_path / "none.db"
    for name in (SYSTEM, ANONYMOUS):
        reserved = _cli(f"sqlite:///{fresh}", "--name", name, "--role", "reviewer")
        assert reserved.returncode == 2 and reserved.stdout == ""
        assert f"signoff: the name {name!r} is reserved" in reserved.stderr, reserved.stderr
    assert not fresh.exists()  # refused before a store is opened (or made)
    blank = _cli(f"sqlite:///{fresh}", "--name", "bo", "--role", "reviewer", "--agent", " ")
    assert blank.returncode == 2 and "not a blank" in blank.stderr, blank.stderr


# --------------------------------------------------- two issues of one name

@pytest.fixture
def workers(store_url: str) -> Iterator[tuple[RunService, RunService]]:
    """Two workers (Applications, each its own connections) over one store."""
    one, two = _store(store_url), _store(store_url)
    try:
        yield one, two
    finally:
        one.close()
        two.close()


def test_of_two_issues_that_both_found_the_name_free_the_later_one_loses(
        workers: tuple[RunService, RunService], monkeypatch: pytest.MonkeyPatch) -> None:
    """The second issue checked the name before the first was saved (its first look
    finds nothing), and saves after it: its check once saved finds the earlier key, so
    it revokes its own and answers 409; its secret is never shown or accepted."""
    one, two = workers
    import service.keys as keys

    looks: list[int] = []
    real = keys.live_keys_named

    def stale_first_look(app: RunService, name: str) -> list[Any]:
        looks.append(1)
        return [] if len(looks) == 1 else real(app, name)

    create_key(one, name="bo", role=Role.REVIEWER, created_by="one")
    monkeypatch.setattr(keys, "live_keys_named", stale_first_look)
    secrets: list[str] = []
    real_secret = keys.new_secret

    def remembered() -> str:
        secrets.append(real_secret())
        return secrets[-1]

    monkeypatch.setattr(keys, "new_secret", remembered)
    with pytest.raises(KeyNameTaken, match="a live key is already named 'bo'"):
        create_key(two, name="bo", role=Role.CLIENT, created_by="two")
    monkeypatch.undo()
    assert len(looks) == 2
    named = [k for k in list_keys(one) if k.name == "bo"]
    assert [(k.role, k.revoked) for k in named] == [(Role.REVIEWER, False), (Role.CLIENT, True)]
    with pytest.raises(Unauthenticated):
        Authenticator(one).identify(secrets[0])
    revoke_key(one, "bo", revoked_by="test")  # the name's one live key
    create_key(two, name="bo", role=Role.CLIENT, created_by="two")


def _issue(app: RunService, name: str, barrier: threading.Barrier,
           outcomes: list[str]) -> None:
    barrier.wait()
    try:
        create_key(app, name=name, role=Role.CLIENT, created_by="test")
        outcomes.append("issued")
    except KeyNameTaken:
        outcomes.append("taken")


def test_concurrent_issues_of_one_name_give_one_live_key(
        workers: tuple[RunService, RunService]) -> None:
    """Four issues of each name at once, two in each worker: one key, three 409s."""
    one, two = workers
    for attempt in range(6):
        name, barrier = f"twin-{attempt}", threading.Barrier(4)
        outcomes: list[str] = []
        threads = [threading.Thread(target=_issue, args=(app, name, barrier, outcomes))
                   for app in (one, two, one, two)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(outcomes) == ["issued", "taken", "taken", "taken"], (attempt, outcomes)
        live = [k for k in list_keys(one) if k.name == name and not k.revoked]
        assert len(live) == 1, (attempt, live)
