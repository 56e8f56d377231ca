"""Every error leaves as an RFC 9457 problem, never a 5xx, and records nothing.

A problem is ``application/problem+json`` with ``type``, ``title``, ``status`` and
``detail``. After each bad request the run's events are as they were (and, for a bad
start, the event log's head has not moved). One server per module and store (SQLite,
PostgreSQL): these requests are cheap, and each test starts its own runs.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.e2e.flows import (
    assert_problem,
    continue_,
    decided,
    events,
    form,
    post_continue,
    post_start,
    start,
)
from tests.support.server import LiveServer, live_server

pytestmark = pytest.mark.e2e

SEED_MESSAGE = "Delete 50 old records from the users table"
Json = dict[str, Any]


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared_server(request: pytest.FixtureRequest,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """``signoff serve`` shared by this module's tests, on a fresh SQLite file or database."""
    tmp: Path = tmp_path_factory.mktemp("problems")
    if request.param == "sqlite":
        with live_server(f"sqlite:///{tmp / 'signoff.db'}", tmp / "server.log") as s:
            yield s
        return
    db = request.getfixturevalue("pg_server").create_database(
        f"problems_{uuid.uuid4().hex[:12]}")
    try:
        with live_server(str(db.url), tmp / "server.log") as s:
            yield s
    finally:
        with contextlib.suppress(psycopg.OperationalError):
            db.drop_database()


@pytest.fixture
def c(shared_server: LiveServer) -> Iterator[httpx.Client]:
    """A client; after the test, the server has logged no unexpected error."""
    with shared_server.client() as client:
        yield client
    log = shared_server.log_path.read_text(errors="replace")
    assert "unexpected error" not in log and "Traceback" not in log, shared_server.log()


@pytest.fixture
def paused(c: httpx.Client) -> Json:
    """A fresh data_manager run, paused on delete_records."""
    run = start(c, "data_manager", SEED_MESSAGE)
    assert run["status"] == "PAUSED"
    return run


@contextlib.contextmanager
def unchanged(c: httpx.Client, run_id: str | None = None) -> Iterator[None]:
    """Nothing is recorded inside the block: the run's events and the log's head stay."""
    head = c.get("/health").json()["log_head"]
    before = events(c, run_id) if run_id else None
    yield
    if run_id:
        assert events(c, run_id) == before
    assert c.get("/health").json()["log_head"] == head


# ----------------------------------------------------------------- not found

def test_unknown_agent_is_404(c: httpx.Client, paused: Json) -> None:
    rid = paused["run_id"]
    with unchanged(c, rid):
        assert_problem(post_start(c, "nobody", message="hi", stream="false"), 404)
        assert_problem(post_start(c, "nobody", message="hi"), 404)  # SSE asked: still JSON
        assert_problem(c.get("/agents/nobody"), 404)
        assert_problem(c.get(f"/agents/nobody/runs/{rid}"), 404)
        assert_problem(post_continue(c, "nobody", rid, tools=paused["tools"]), 404)
        assert_problem(c.post(f"/agents/nobody/runs/{rid}/cancel"), 404)


@pytest.mark.parametrize("run_id", [str(uuid.UUID(int=1)), "not-a-run-id", "1"])
def test_unknown_or_malformed_run_is_404(c: httpx.Client, run_id: str) -> None:
    tools = [{"tool_call_id": "call_x", "confirmed": True}]
    with unchanged(c):
        assert_problem(c.get(f"/agents/data_manager/runs/{run_id}"), 404)
        assert_problem(post_continue(c, "data_manager", run_id, tools=tools), 404)
        assert_problem(post_continue(c, "data_manager", run_id, tools=tools,
                                     stream="false"), 404)
        assert_problem(c.post(f"/agents/data_manager/runs/{run_id}/cancel"), 404)
        assert_problem(c.get(f"/runs/{run_id}"), 404)
        assert_problem(c.get(f"/runs/{run_id}/events"), 404)
        assert_problem(c.post(f"/runs/{run_id}/cancel"), 404)


def test_run_of_another_agent_is_404(c: httpx.Client, paused: Json) -> None:
    rid = paused["run_id"]
    tools = [decided(t, confirmed=True) for t in paused["tools"]]
    with unchanged(c, rid):
        assert_problem(c.get(f"/agents/support_desk/runs/{rid}"), 404)
        assert_problem(post_continue(c, "support_desk", rid, tools=tools), 404)
        assert_problem(c.post(f"/agents/support_desk/runs/{rid}/cancel"), 404)
    assert c.get(f"/agents/data_manager/runs/{rid}").json()["status"] == "PAUSED"


def test_unknown_route_and_method(c: httpx.Client) -> None:
    assert_problem(c.get("/no/such/route"), 404)
    assert_problem(c.delete("/agents/data_manager"), 405)


# ------------------------------------------------------------ bad continues

def _tools(run: Json, **decision: Any) -> list[Json]:
    return [decided(t, **decision) for t in run["tools"]]


# (the ``tools`` field, or a function of the paused run giving it; expected status)
BAD_TOOLS: dict[str, tuple[Any, int]] = {
    "invalid JSON": ('[{"tool_call_id": ', 400),
    "not JSON at all": ("confirmed", 400),
    "an object, not a list": (lambda r: _tools(r, confirmed=True)[0], 422),
    "a list of strings": (["call_1"], 422),
    "an item without tool_call_id": ([{"tool_name": "delete_records", "confirmed": True}],
                                     422),
    "an unknown tool_call_id": ([{"tool_call_id": "call_nope", "confirmed": True}], 422),
    "confirmed not a boolean": (lambda r: _tools(r, confirmed="yes"), 422),
    "tool_args not an object": (lambda r: _tools(r, confirmed=True, tool_args=[1, 2]), 422),
    "no decision (sent back as it came)": (lambda r: r["tools"], 422),
    "no decision (empty list)": ([], 422),
    "a result on a confirmation call": (lambda r: _tools(r, result="done"), 409),
}


@pytest.mark.parametrize("stream", [None, "false"], ids=["stream-default", "stream-false"])
@pytest.mark.parametrize("case", list(BAD_TOOLS))
def test_bad_tools_field(c: httpx.Client, paused: Json, case: str, stream: str | None,
                         ) -> None:
    tools, status = BAD_TOOLS[case]
    if callable(tools):
        tools = tools(paused)
    with unchanged(c, paused["run_id"]):
        r = post_continue(c, "data_manager", paused["run_id"], tools=tools, stream=stream,
                          user_id="test_user")
        assert_problem(r, status)
    # The run still takes a good decision afterwards.
    assert continue_(c, paused, _tools(paused, confirmed=True))["status"] == "COMPLETED"


def test_bad_continue_body(c: httpx.Client, paused: Json) -> None:
    url = f"/agents/data_manager/runs/{paused['run_id']}/continue"
    with unchanged(c, paused["run_id"]):
        assert_problem(post_continue(c, "data_manager", paused["run_id"], user_id="u"),
                       422)  # no tools field
        assert_problem(post_continue(c, "data_manager", paused["run_id"], stream="maybe",
                                     tools=_tools(paused, confirmed=True)), 422)
        r = c.post(url)  # empty body, no content type
        assert r.status_code in (415, 422)
        assert_problem(r, r.status_code)
        r = c.post(url, content="tools=[]", headers={"content-type": "text/plain"})
        assert r.status_code in (415, 422)
        assert_problem(r, r.status_code)
        assert_problem(c.post(url, content="{", headers={"content-type": "application/json"}),
                       400)
        assert_problem(c.post(url, json=["tools"]), 422)
        r = c.post(url, headers={"Idempotency-Key": "k" * 201}, files=form(
            tools=_tools(paused, confirmed=True), stream="false"))
        assert assert_problem(r, 422)["errors"][0]["loc"] == ["header", "idempotency-key"]


@pytest.mark.parametrize(("agent", "message", "decide", "status"), [
    pytest.param("support_desk", "check payment for order 77",
                 # As in Agno, ``confirmed`` on an external call is no decision: nothing to do.
                 lambda t: decided(t, confirmed=True), 422, id="confirm-external-call"),
    pytest.param("support_desk", "Issue a refund of 30 for order A17",
                 lambda t: decided(t, result="done"), 409, id="result-for-user-input"),
    pytest.param("support_desk", "Issue a refund of 30 for order A17",
                 lambda t: decided(t, user_input_schema=[{"name": "phone", "value": "1"}]),
                 422, id="input-field-unknown"),
    pytest.param("data_manager", SEED_MESSAGE,
                 lambda t: decided(t, confirmed=True, confirmation_note=3), 422,
                 id="note-not-a-string"),
    pytest.param("data_manager", SEED_MESSAGE,
                 lambda t: decided(t, confirmed=True, tool_args={"nope": 1}), 422,
                 id="edited-args-unknown-parameter"),
    pytest.param("data_manager", SEED_MESSAGE,
                 lambda t: decided(t, confirmed=True,
                                   tool_args={"table_name": "users", "count": "fifty"}), 422,
                 id="edited-args-wrong-type"),
    pytest.param("data_manager", SEED_MESSAGE,
                 lambda t: decided(t, confirmed=True, tool_args={"table_name": "users"}), 422,
                 id="edited-args-missing-required"),
])
def test_wrong_decision(c: httpx.Client, agent: str, message: str,
                        decide: Callable[[Json], Json], status: int) -> None:
    run = start(c, agent, message)
    assert run["status"] == "PAUSED"
    with unchanged(c, run["run_id"]):
        r = post_continue(c, agent, run["run_id"], tools=[decide(t) for t in run["tools"]],
                          stream="false")
        assert_problem(r, status)


def test_decision_on_a_completed_run_is_409(c: httpx.Client, paused: Json) -> None:
    done = continue_(c, paused, _tools(paused, confirmed=True))
    assert done["status"] == "COMPLETED"
    rid = paused["run_id"]
    with unchanged(c, rid):
        for tools in (_tools(paused, confirmed=True), _tools(paused, confirmed=False),
                      paused["tools"], done["tools"]):
            for stream in (None, "false"):
                assert_problem(post_continue(c, "data_manager", rid, tools=tools,
                                             stream=stream), 409)
        assert_problem(c.post(f"/agents/data_manager/runs/{rid}/cancel"), 409)
        assert_problem(c.post(f"/runs/{rid}/cancel"), 409)
    assert c.get(f"/agents/data_manager/runs/{rid}").json() == done


# --------------------------------------------------------------- bad starts

def test_bad_start(c: httpx.Client) -> None:
    url = "/agents/data_manager/runs"
    with unchanged(c):
        assert_problem(post_start(c, "data_manager", user_id="u", session_id="s"), 422)
        assert_problem(post_start(c, "data_manager", message=""), 422)
        assert_problem(post_start(c, "data_manager", message="hi", stream="maybe"), 422)
        assert_problem(post_start(c, "data_manager", message="hi", background="true"), 422)
        assert_problem(c.post(url, data={"message": "hi"},
                              files={"files": ("a.txt", b"hello", "text/plain")}), 422)
        r = c.post(url)  # empty body, no content type
        assert r.status_code in (415, 422)
        assert_problem(r, r.status_code)
        r = c.post(url, content="message=hi", headers={"content-type": "text/plain"})
        assert r.status_code in (415, 422)
        assert_problem(r, r.status_code)
        assert_problem(c.post(url, content="{", headers={"content-type": "application/json"}),
                       400)
        assert_problem(c.post(url, json=["message"]), 422)
