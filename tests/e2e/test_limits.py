"""Limits and timeouts over real HTTP: a real ``signoff serve`` with small limits.

* A request body over ``SIGNOFF_MAX_BODY_BYTES`` is a 413 problem, whether it declares
  its length (refused before it is read) or streams without one (counted as it comes,
  refused once past the limit): the server never holds it, and records nothing.
* A message over ``SIGNOFF_MAX_MESSAGE_CHARS``, a decision's arguments, input or result
  over ``SIGNOFF_MAX_ARGS_BYTES``: 413, nothing recorded, the run still waits.
* A model's proposed arguments over the limit are recorded cut and marked, and shown so
  to the client; confirmed as they came they are refused (422), with arguments of the
  reviewer's own the call runs.
* A model that does not answer within ``SIGNOFF_MODEL_TIMEOUT`` and a tool that does not
  finish within ``SIGNOFF_TOOL_TIMEOUT`` end as events of the run.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.flows import (
    assert_problem,
    continue_,
    decided,
    events,
    pending,
    post_continue,
    post_start,
    start,
    types,
)
from tests.support.fake_openai import FakeOpenAI, text_reply
from tests.support.server import LiveServer, live_server

pytestmark = pytest.mark.e2e

BODY = 4096
MESSAGE = 400
ARGS = 256
DELETE = "Delete 50 old records from the users table"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("limits")
    with live_server(f"sqlite:///{tmp / 's.db'}", tmp / "server.log",
                     SIGNOFF_MAX_BODY_BYTES=str(BODY), SIGNOFF_MAX_MESSAGE_CHARS=str(MESSAGE),
                     SIGNOFF_MAX_ARGS_BYTES=str(ARGS)) as s:
        yield s


@pytest.fixture
def c(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def head(c: httpx.Client) -> int:
    log_head: int = c.get("/health").json()["log_head"]
    return log_head


def rss_kb(server: LiveServer) -> int:
    assert server.proc is not None
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


FORM = {"content-type": "application/x-www-form-urlencoded"}


def form_body(size: int) -> bytes:
    """A start-run form of exactly ``size`` bytes."""
    prefix = b"stream=false&message="
    return prefix + b"x" * (size - len(prefix))


def chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    """A body sent without Content-Length (chunked), ``total`` bytes in all."""
    yield b"stream=false&message="
    sent = 0
    while sent < total:
        yield b"x" * min(size, total - sent)
        sent += size


# --------------------------------------------------------------- the body

def test_a_body_declared_over_the_limit_is_a_413_problem(c: httpx.Client) -> None:
    before = head(c)
    r = c.post("/agents/data_manager/runs", content=form_body(BODY + 1), headers=FORM)
    body = assert_problem(r, 413)
    assert body["detail"] == f"the request body is larger than {BODY} bytes"
    assert body["instance"] == "/agents/data_manager/runs"
    assert head(c) == before
    # The connection is still good for the next request.
    assert c.get("/health").status_code == 200
    # Refused before routing, it is still counted under its route.
    assert 'signoff_http_requests_total{method="POST",route="/agents/{agent_id}/runs",' \
           'status="413"}' in c.get("/metrics").text


def test_a_body_at_the_limit_is_read(c: httpx.Client) -> None:
    r = c.post("/agents/data_manager/runs", content=form_body(BODY), headers=FORM)
    # Past the body limit, the message limit (400 characters) is what refuses it.
    assert assert_problem(r, 413)["detail"].startswith("the message has")


def test_a_streamed_body_is_counted_and_refused_once_past_the_limit(
        server: LiveServer, c: httpx.Client) -> None:
    before, rss = head(c), rss_kb(server)
    started = time.monotonic()
    r = c.post("/agents/data_manager/runs", content=chunks(8 * 1024 * 1024), headers=FORM)
    assert "content-length" not in r.request.headers
    assert_problem(r, 413)
    assert time.monotonic() - started < 10
    assert head(c) == before
    # 8 MiB went by; the server kept none of it.
    assert rss_kb(server) - rss < 4 * 1024
    # Every route that reads a body is covered, not only the forms: the cancel's JSON.
    run = start(c, "data_manager", DELETE)
    r = c.post(f"/runs/{run['run_id']}/cancel", content=chunks(BODY),
               headers={"content-type": "application/json"})
    assert_problem(r, 413)
    assert c.get(f"/runs/{run['run_id']}").json()["status"] == "PAUSED"


def test_a_large_declared_body_gets_its_answer_not_a_reset(c: httpx.Client) -> None:
    for size in (64 * 1024, 4 * 1024 * 1024):
        r = c.post("/agents/data_manager/runs", content=form_body(size), headers=FORM)
        assert_problem(r, 413)


def test_the_document_declares_413_for_bodies_and_503_everywhere(c: httpx.Client) -> None:
    doc = c.get("/openapi.json").json()
    for path, methods in doc["paths"].items():
        for method, operation in methods.items():
            responses = operation["responses"]
            assert "503" in responses, (method, path)
            assert ("413" in responses) == ("requestBody" in operation), (method, path)
            for status in ("413", "503"):
                if status in responses:
                    assert list(responses[status]["content"]) == ["application/problem+json"]


# ------------------------------------------------------- what a run records

def test_a_message_over_the_limit_is_a_413_and_nothing_is_recorded(c: httpx.Client) -> None:
    before = head(c)
    r = post_start(c, "data_manager", message="x" * (MESSAGE + 1), stream="false")
    body = assert_problem(r, 413)
    assert body["detail"] == f"the message has {MESSAGE + 1} characters; at most {MESSAGE} " \
                             "are accepted"
    assert head(c) == before
    r = post_start(c, "data_manager", message="x" * MESSAGE, stream="false")
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(("message", "decision"), [
    (DELETE, {"confirmed": True, "tool_args": {"table_name": "t" * ARGS, "count": 1}}),
    ("check payment for order 77", {"result": "r" * (ARGS + 1)}),
    ("Issue a refund of 30 for order A17",
     {"user_input_schema": [{"name": "email", "value": "e" * ARGS}]}),
], ids=["tool_args", "external result", "user input"])
def test_a_decision_over_the_limit_is_a_413_and_the_run_still_waits(
        c: httpx.Client, message: str, decision: dict[str, Any]) -> None:
    agent = "data_manager" if message == DELETE else "support_desk"
    run = start(c, agent, message)
    [tool] = pending(run)
    before = head(c)
    r = post_continue(c, agent, run["run_id"], tools=[decided(tool, **decision)],
                      stream="false")
    assert f"at most {ARGS} are accepted" in assert_problem(r, 413)["detail"]
    assert head(c) == before
    assert c.get(f"/runs/{run['run_id']}").json()["status"] == "PAUSED"


def test_proposed_arguments_over_the_limit_are_shown_cut_and_need_the_reviewers_own(
        c: httpx.Client) -> None:
    table = "t" * (ARGS + 10)
    run = start(c, "ops", f'call slow_delete {{"table_name": "{table}"}}')
    [tool] = pending(run)
    cut = tool["tool_args"]
    assert set(cut) == {"_cut"}
    assert cut["_cut"]["bytes"] == len(json.dumps({"table_name": table},
                                                  separators=(",", ":")))
    assert cut["_cut"]["head"].startswith('{"table_name":"ttt')
    history = events(c, run["run_id"])
    requested = [e["payload"] for e in history if e["type"] == "ToolCallRequested"]
    assert requested[0]["tool_args"] == cut
    # Only the user's own message (RunStarted) holds the whole value.
    assert table not in json.dumps(history[1:])
    # Confirmed as it came: refused, nothing recorded.
    before = head(c)
    r = post_continue(c, "ops", run["run_id"], tools=[decided(tool, confirmed=True)],
                      stream="false")
    assert "were cut" in assert_problem(r, 422)["detail"]
    assert head(c) == before
    # With arguments of the reviewer's own, it runs with them.
    done = continue_(c, run, [decided(tool, confirmed=True, tool_args={"table_name": "users"})])
    assert done["status"] == "COMPLETED"
    executed = [e["payload"] for e in events(c, run["run_id"]) if e["type"] == "ToolExecuted"]
    assert executed[0]["result"] == "Dropped users"


# ---------------------------------------------------------------- timeouts

def test_a_tool_that_does_not_finish_in_time_is_in_doubt_and_a_person_decides(
        tmp_path: Path) -> None:
    block = tmp_path / "block"
    block.touch()
    try:
        with live_server(f"sqlite:///{tmp_path / 's.db'}", tmp_path / "server.log",
                         SIGNOFF_TOOL_TIMEOUT="1", SIGNOFF_TEST_BLOCK=str(block)) as server, \
                server.client() as c:
            run = start(c, "ops", 'call slow_delete {"table_name": "users"}')
            doubt = continue_(c, run, [decided(t, confirmed=True) for t in pending(run)])
            assert doubt["status"] == "PAUSED"  # it may still delete: not the model's call
            kinds = [e["type"] for e in events(c, run["run_id"])]
            assert kinds[kinds.index("ToolExecutionStarted") + 1] == "ToolCallInDoubt"
            [call] = pending(doubt)
            assert call["requires_confirmation"] is True  # the in-doubt call, to decide
            done = continue_(c, doubt, [decided(call, result="deleted after all")])
            assert done["status"] == "COMPLETED"
    finally:
        block.unlink(missing_ok=True)


def test_a_model_that_does_not_answer_in_time_fails_the_run_as_an_event(
        fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    late = dataclasses.replace(text_reply("too late"), delay=5.0)
    fake_openai.script(late, late, late)
    with live_server(f"sqlite:///{tmp_path / 's.db'}", tmp_path / "server.log",
                     SIGNOFF_MODEL="openai:fake-model", OPENAI_API_KEY="sk-test",
                     OPENAI_BASE_URL=fake_openai.base_url,
                     SIGNOFF_MODEL_TIMEOUT="0.5") as server, server.client() as c:
        started = time.monotonic()
        r = post_start(c, "data_manager", message="hello", stream="false")
        assert r.status_code == 200, r.text
        assert time.monotonic() - started < 3
        assert r.json()["status"] == "ERROR"
        assert types(c, r.json()["run_id"]) == ["RunStarted", "RunFailed"]
        [failed] = [e["payload"] for e in events(c, r.json()["run_id"])
                    if e["type"] == "RunFailed"]
        assert failed["error"] == "model error: model 'fake-model' did not answer within 0.5 s"
