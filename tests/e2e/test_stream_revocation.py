"""A stream outlives no revocation: ``/queue/stream``, ``/runs/{id}/stream`` and an Agno
streamed answer, opened with a key that is then revoked, end (as a stream ends) once the
key is refused, and send nothing the key could not read by then; the same for a JWT past
its ``exp``, and for a stream opened without authentication once authentication is on.

One SQLite ``signoff serve`` for the module; its first keys are issued in-process before
it starts (as ``signoff keys create`` would), each test's own key over ``POST /keys``. A
revocation is in force once a new request with the key is refused (this process's key
cache keeps a key for 5 seconds); the JWT's clock is the service's, injected in-process.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI

from api.app import create_app
from domain.keys import Role
from service.config import Settings, eventsourcing_env
from service.keys import create_key
from service.runs import RunService
from tests.e2e.flows import decided, form, pending
from tests.support.server import LiveServer, live_server

pytestmark = pytest.mark.e2e

DELETE = "Delete 50 old records from the users table"
SLOW_DELETE = 'call slow_delete {"table_name": "users"}'
KEYS = {"adm": Role.ADMIN, "ann": Role.CLIENT, "rita": Role.REVIEWER}
JWT_SECRET = "a-shared-secret-of-the-identity-provider-0123456789"


class World:
    def __init__(self, server: LiveServer, secrets: dict[str, str], block: Path) -> None:
        self.server = server
        self.secrets = secrets
        self.block = block  # while this file exists, slow_delete blocks

    def as_(self, who: str) -> httpx.Client:
        token = self.secrets.get(who, who)
        return self.server.client(headers={"Authorization": f"Bearer {token}"})

    def paused(self, user: str = "ann", agent: str = "data_manager",
               message: str = DELETE) -> dict[str, Any]:
        with self.as_(user) as c:
            r = c.post(f"/agents/{agent}/runs", files=form(message=message, stream="false"))
        assert r.status_code == 200, r.text
        run: dict[str, Any] = r.json()
        assert run["status"] == "PAUSED", run
        return run

    def issue(self, name: str, role: str) -> tuple[str, str]:
        """A new key: its secret and id."""
        with self.as_("adm") as adm:
            r = adm.post("/keys", json={"name": name, "role": role})
        assert r.status_code == 201, r.text
        return r.json()["secret"], r.json()["key"]["id"]

    def revoke(self, secret: str, key_id: str, path: str) -> None:
        """Revoke the key, and return once this server refuses it on ``path``."""
        with self.as_("adm") as adm:
            assert adm.post(f"/keys/{key_id}/revoke").status_code == 200
        with self.as_(secret) as c:
            assert until(lambda: c.get(path).status_code == 401, 15), \
                f"the revoked key is still accepted on GET {path}"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("stream_revocation")
    url = f"sqlite:///{tmp / 'signoff.db'}"
    app = RunService(env=eventsourcing_env(Settings(database_url=url)))
    try:
        secrets = {name: create_key(app, name=name, role=role, created_by="test")[0]
                   for name, role in KEYS.items()}
    finally:
        app.close()
    block = tmp / "block"
    with live_server(url, tmp / "server.log", SIGNOFF_EXPIRY_INTERVAL="0",
                     SIGNOFF_TEST_BLOCK=str(block)) as server:
        yield World(server, secrets, block)


def until(fn: Callable[[], Any], timeout: float = 10.0) -> Any:
    """``fn()`` once it is true, or its last value after ``timeout`` seconds (a server
    in another process: its clock cannot be moved)."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


class Listener:
    """A streamed request read in a thread as it comes: its messages (``event``, ``data``
    as sent), and ``ended`` once the server ended the stream (``error``: how else it
    stopped)."""

    def __init__(self, client: httpx.Client, method: str, path: str, **kw: Any) -> None:
        self.client = client
        self.status: int | None = None
        self.messages: list[dict[str, str]] = []
        self.opened = threading.Event()
        self.ended = threading.Event()
        self.error: Exception | None = None
        threading.Thread(target=self._listen, args=(method, path), kwargs=kw,
                         daemon=True).start()
        assert self.opened.wait(10), "the stream never opened"
        assert self.status == 200, self.status

    def _listen(self, method: str, path: str, **kw: Any) -> None:
        try:
            with self.client.stream(method, path, **kw) as r:
                self.status = r.status_code
                self.opened.set()
                fields: dict[str, str] = {}
                for line in r.iter_lines():
                    if not line:
                        if "data" in fields:
                            self.messages.append(fields)
                        fields = {}
                    elif not line.startswith(":"):
                        name, _, value = line.partition(":")
                        fields[name] = value.removeprefix(" ")
            self.ended.set()
        except Exception as e:  # the client closed (the test is over), or a broken stream
            self.error = e
            self.opened.set()

    def events(self) -> list[str]:
        return [m.get("event", "") for m in self.messages]

    def heard(self, text: str) -> bool:
        return any(text in m["data"] for m in self.messages)

    def assert_ended(self) -> None:
        assert self.ended.wait(10), (
            f"the stream is still open; it sent {self.events()}")
        assert self.error is None, self.error


def _confirm(run: dict[str, Any], stream: str | None = "false", **extra: Any,
             ) -> dict[str, Any]:
    return form(tools=[decided(t, confirmed=True, **extra) for t in pending(run)],
                stream=stream)


def test_a_revoked_reviewer_key_stops_hearing_the_queue_stream(world: World) -> None:
    secret, key_id = world.issue("vic", "reviewer")
    with world.as_(secret) as c:
        listener = Listener(c, "GET", "/queue/stream")
        before = world.paused()
        assert until(lambda: listener.heard(before["run_id"])), listener.messages
        world.revoke(secret, key_id, "/queue")
        run = world.paused()  # paused once the revocation is in force
        listener.assert_ended()
    assert not listener.heard(run["run_id"]), (
        f"the revoked key's /queue/stream told of the pause of {run['run_id']}")


def test_a_revoked_client_key_stops_reading_its_run_stream(world: World) -> None:
    secret, key_id = world.issue("carl", "client")
    run = world.paused(user=secret)
    with world.as_(secret) as c:
        listener = Listener(c, "GET", f"/runs/{run['run_id']}/stream")
        assert until(lambda: "RunPaused" in listener.events()), listener.messages
        world.revoke(secret, key_id, f"/runs/{run['run_id']}")
        with world.as_("rita") as rita:  # a reviewer decides once the revocation is in force
            r = rita.post(f"/agents/data_manager/runs/{run['run_id']}/continue",
                          files=_confirm(run, confirmation_note="a note for reviewers"))
        assert r.status_code == 200, r.text
        listener.assert_ended()
    assert listener.events()[-1] == "RunPaused", listener.events()
    assert not listener.heard("a note for reviewers")


def test_a_revoked_reviewers_agno_stream_ends_while_its_run_goes_on(world: World) -> None:
    """A streamed continue sends the run's events as the drive commits them: the tool
    blocks, the reviewer's key is revoked, the tool ends; the stream ends without its
    result, and the run completes (the drive does not depend on the stream)."""
    secret, key_id = world.issue("vera", "reviewer")
    run = world.paused(agent="ops", message=SLOW_DELETE)
    world.block.touch()
    try:
        with world.as_(secret) as c:
            listener = Listener(c, "POST", f"/agents/ops/runs/{run['run_id']}/continue",
                                files=_confirm(run, stream=None))  # stream: the default
            assert until(lambda: "ToolCallStarted" in listener.events()), listener.messages
            world.revoke(secret, key_id, f"/runs/{run['run_id']}")
            world.block.unlink()  # the tool ends, the run goes on
            listener.assert_ended()
    finally:
        world.block.unlink(missing_ok=True)
    assert "ToolCallCompleted" not in listener.events(), listener.events()
    assert "RunCompleted" not in listener.events(), listener.events()
    with world.as_("rita") as rita:
        assert until(lambda: rita.get(f"/runs/{run['run_id']}").json()["status"]
                     == "COMPLETED")


def test_a_stream_opened_without_authentication_ends_once_it_is_on(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'open.db'}"
    with live_server(url, tmp_path / "server.log", SIGNOFF_EXPIRY_INTERVAL="0") as server, \
            server.client() as anyone:
        listener = Listener(anyone, "GET", "/queue/stream")
        app = RunService(env=eventsourcing_env(Settings(database_url=url)))
        try:  # the first key: authentication is on, for the running server too
            client = create_key(app, name="ann", role=Role.CLIENT, created_by="test")[0]
        finally:
            app.close()
        assert until(lambda: anyone.get("/queue").status_code == 401, 15)
        world = World(server, {"ann": client}, tmp_path / "block")
        run = world.paused()
        listener.assert_ended()
    assert not listener.heard(run["run_id"])


# ------------------------------------------------------- a JWT past its exp

class AsgiStream:
    """A GET to an app in this process, its answer read as it comes (httpx's
    ASGITransport reads a whole answer before it returns one: a stream never would)."""

    def __init__(self, app: FastAPI, path: str, headers: dict[str, str]) -> None:
        self.body = ""
        self.status: int | None = None
        self._grew = asyncio.Event()
        self._gone = asyncio.Event()
        self._asked = False
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
                 "query_string": b"", "root_path": "", "client": ("127.0.0.1", 50000),
                 "server": ("127.0.0.1", 7777),
                 "headers": [(k.lower().encode(), v.encode()) for k, v in
                             {"host": "127.0.0.1:7777", **headers}.items()]}
        self.task = asyncio.ensure_future(app(scope, self._receive, self._send))

    async def _receive(self) -> dict[str, Any]:
        if not self._asked:
            self._asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"").decode()
        self._grew.set()

    async def opened(self, timeout: float = 10.0) -> bool:
        """The answer has begun: the route has taken the log position it follows from."""
        return await self._until(lambda: self.status is not None, timeout)

    async def until(self, text: str, timeout: float = 10.0) -> bool:
        return await self._until(lambda: text in self.body, timeout)

    async def _until(self, done: Callable[[], bool], timeout: float) -> bool:
        async def grown() -> None:
            while not done():
                self._grew.clear()
                await self._grew.wait()

        try:
            await asyncio.wait_for(grown(), timeout)
        except TimeoutError:
            return False
        return True

    async def ended(self, timeout: float = 10.0) -> bool:
        done, _ = await asyncio.wait([self.task], timeout=timeout)
        return bool(done)

    async def close(self) -> None:
        self._gone.set()
        await asyncio.wait([self.task], timeout=5)
        self.task.cancel()


def _jwt(sub: str, role: str, exp: datetime) -> dict[str, str]:
    token = jwt.encode({"sub": sub, "role": role, "exp": int(exp.timestamp())},
                       JWT_SECRET, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


def test_a_jwt_stream_ends_once_the_token_is_past_its_exp(tmp_path: Path) -> None:
    """The service's clock (the lifecycle's) moves past the token's ``exp``: the queue
    stream ends at its next wake (a run pausing), without telling of that run."""
    settings = Settings(database_url=f"sqlite:///{tmp_path / 's.db'}", jwt_key=JWT_SECRET,
                        expiry_interval=0, agents="agent.demo", model="offline")
    app = create_app(settings)
    now = [datetime.now(UTC)]
    exp = now[0] + timedelta(minutes=10)

    async def start(http: httpx.AsyncClient) -> str:
        r = await http.post("/agents/data_manager/runs", headers=_jwt("cli", "client", exp),
                            files=form(message=DELETE, stream="false"))
        assert r.status_code == 200, r.text
        return str(r.json()["run_id"])

    async def scenario() -> None:
        async with app.router.lifespan_context(app):
            app.state.container.runs.clock = lambda: now[0]
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport,
                                         base_url="http://127.0.0.1:7777") as http:
                stream = AsgiStream(app, "/queue/stream", _jwt("rev", "reviewer", exp))
                try:
                    assert await stream.opened(), "the stream never answered"
                    first = await start(http)
                    assert await stream.until(first), (stream.status, stream.body)
                    now[0] = exp + timedelta(seconds=1)
                    second = await start(http)
                    assert await stream.ended(), f"the stream is still open: {stream.body}"
                    assert second not in stream.body
                finally:
                    await stream.close()

    asyncio.run(scenario())
