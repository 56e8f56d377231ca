"""Crash recovery over HTTP: a real ``signoff serve`` is SIGKILLed and restarted.

Each test runs on SQLite and on a throwaway PostgreSQL (``store_url``). The server runs
with a 1 s tool deadline; ``slow_delete`` and ``refresh_cache`` (tests/support/agents.py)
block while the block file exists, so a test can kill the server while a tool runs.

The rules under test (agent/loop.py): a decision and the tool's start are committed
before the tool's side effect; a call whose deadline passed with no recorded outcome is
in doubt and waits for a person, unless its tool is idempotent, when it is run again.
Nothing is lost or recorded twice: versions stay contiguous.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import LiveServer, live_server

pytestmark = pytest.mark.e2e

POLL_S = 0.02
WAIT_S = 15.0
DELETE = 'call slow_delete {"table_name": "users"}'
REFRESH = 'call refresh_cache {"name": "prices"}'


@dataclass
class Crashable:
    server: LiveServer
    block: Path  # while this file exists, slow_delete and refresh_cache block
    client: httpx.Client


@pytest.fixture
def crashable(store_url: str, tmp_path: Path) -> Iterator[Crashable]:
    block = tmp_path / "block"
    with live_server(store_url, tmp_path / "server.log", SIGNOFF_TOOL_TIMEOUT="1",
                     SIGNOFF_TEST_BLOCK=str(block)) as server:
        client = server.client()
        try:
            yield Crashable(server, block, client)
        finally:
            client.close()
            block.unlink(missing_ok=True)  # never leave a tool thread blocked


# ------------------------------------------------------------------ helpers

def start_run(c: httpx.Client, message: str) -> dict[str, Any]:
    r = c.post("/agents/ops/runs", data={"message": message, "stream": "false"})
    assert r.status_code == 200, r.text
    return r.json()


def decide_all(tools: list[dict[str, Any]], confirmed: bool,
               note: str | None = None) -> str:
    """The ``tools`` form field with every call that asks for confirmation decided."""
    out = []
    for t in tools:
        t = dict(t)
        if t["requires_confirmation"]:
            t["confirmed"] = confirmed
            if note is not None:
                t["confirmation_note"] = note
        out.append(t)
    return json.dumps(out)


def continue_run(c: httpx.Client, run_id: str, tools: str) -> httpx.Response:
    return c.post(f"/agents/ops/runs/{run_id}/continue", data={"tools": tools, "stream": "false"})


def get_run(c: httpx.Client, run_id: str) -> dict[str, Any]:
    """``GET /agents/ops/runs/{id}``: this touches the run (recovers it when due)."""
    r = c.get(f"/agents/ops/runs/{run_id}")
    assert r.status_code == 200, r.text
    return r.json()


def events(c: httpx.Client, run_id: str) -> list[dict[str, Any]]:
    r = c.get(f"/runs/{run_id}/events")
    assert r.status_code == 200, r.text
    return r.json()


def types(evs: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in evs]


def of_type(evs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in evs if e["type"] == name]


def assert_contiguous(evs: list[dict[str, Any]]) -> None:
    assert [e["version"] for e in evs] == list(range(1, len(evs) + 1))


def crash_while_tool_runs(x: Crashable, message: str) -> tuple[str, list[dict[str, Any]]]:
    """Start a run, confirm its calls while the tools block, SIGKILL once a tool started,
    unblock the tools and restart. Returns the run id and the events before the crash."""
    x.block.touch()
    out = start_run(x.client, message)
    assert out["status"] == "PAUSED"
    run_id = out["run_id"]
    tools = decide_all(out["tools"], confirmed=True)
    answers: list[Any] = []

    def confirm() -> None:
        try:
            with x.server.client() as c:
                answers.append(continue_run(c, run_id, tools))
        except httpx.HTTPError as e:  # the server dies under this request
            answers.append(e)

    thread = threading.Thread(target=confirm, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_S
    while "ToolExecutionStarted" not in types(before := events(x.client, run_id)):
        assert time.monotonic() < deadline, f"no tool started: {types(before)}"
        assert thread.is_alive(), f"the confirming request ended: {answers}"
        time.sleep(POLL_S)
    x.server.kill()
    thread.join(WAIT_S)
    assert not thread.is_alive()
    assert len(answers) == 1 and isinstance(answers[0], httpx.HTTPError), (
        f"the request should have died with the server, got {answers}")
    x.block.unlink()
    x.server.restart()
    return run_id, before


def wait_past_deadline(evs: list[dict[str, Any]]) -> None:
    """Sleep until every recorded tool deadline has passed (same machine, same clock)."""
    deadlines = [datetime.fromisoformat(e["payload"]["deadline"])
                 for e in of_type(evs, "ToolExecutionStarted")]
    left = (max(deadlines) - datetime.now(UTC)).total_seconds()
    if left > 0:
        time.sleep(left + 0.05)


# -------------------------------------------------------------------- tests

def test_paused_run_survives_sigkill(crashable: Crashable) -> None:
    x = crashable
    out = start_run(x.client, DELETE)
    run_id = out["run_id"]
    assert out["status"] == "PAUSED"
    pending = [t for t in out["tools"] if t["requires_confirmation"]]
    assert [t["tool_name"] for t in pending] == ["slow_delete"]

    x.server.kill()
    x.server.restart()

    again = get_run(x.client, run_id)
    assert again["status"] == "PAUSED"
    assert again["tools"] == out["tools"]
    assert [r["tool_execution"]["tool_call_id"] for r in again["requirements"]] == [
        pending[0]["tool_call_id"]]

    r = continue_run(x.client, run_id, decide_all(again["tools"], confirmed=True))
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "COMPLETED"
    assert r.json()["content"] == "Done. Dropped users"

    evs = events(x.client, run_id)
    assert_contiguous(evs)
    assert types(evs) == [
        "RunStarted", "ModelResponded", "ToolCallRequested", "RunPaused",
        "ToolConfirmed", "RunContinued", "ToolExecutionStarted", "ToolExecuted",
        "ModelResponded", "RunCompleted"]


def test_crash_while_tool_runs_puts_the_call_in_doubt_then_a_person_confirms(
        crashable: Crashable) -> None:
    x = crashable
    run_id, before = crash_while_tool_runs(x, DELETE)
    assert types(before)[-3:] == ["ToolConfirmed", "RunContinued", "ToolExecutionStarted"]
    wait_past_deadline(before)

    out = get_run(x.client, run_id)  # the first touch after the deadline recovers the run
    assert out["status"] == "PAUSED"
    [call] = out["tools"]
    assert call["requires_confirmation"] is True
    assert call["confirmed"] is None
    assert call["result"] is None
    assert [r["tool_execution"]["tool_call_id"] for r in out["requirements"]] == [
        call["tool_call_id"]]
    view = x.client.get(f"/runs/{run_id}").json()
    assert view["status"] == "PAUSED"
    assert [(c["tool_call_id"], c["state"], c["attempts"]) for c in view["pending"]] == [
        (call["tool_call_id"], "in_doubt", 1)]
    evs = events(x.client, run_id)
    assert "ToolExecuted" not in types(evs)  # the tool did not silently run again
    assert types(evs)[len(before):] == ["ToolCallInDoubt", "RunPaused"]
    assert get_run(x.client, run_id) == out  # touching it again changes nothing

    r = continue_run(x.client, run_id, decide_all(out["tools"], confirmed=True))
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "COMPLETED"
    assert r.json()["content"] == "Done. Dropped users"

    evs = events(x.client, run_id)
    assert_contiguous(evs)
    assert evs[:len(before)] == before  # nothing written before the crash was lost
    assert types(evs) == [
        "RunStarted", "ModelResponded", "ToolCallRequested", "RunPaused",
        "ToolConfirmed", "RunContinued", "ToolExecutionStarted",  # before the crash
        "ToolCallInDoubt", "RunPaused",  # recovery
        "ToolConfirmed", "RunContinued", "ToolExecutionStarted", "ToolExecuted",
        "ModelResponded", "RunCompleted"]
    assert [e["payload"]["attempt"] for e in of_type(evs, "ToolExecutionStarted")] == [1, 2]
    assert of_type(evs, "ToolExecuted")[0]["payload"]["result"] == "Dropped users"


def test_crash_while_tool_runs_then_a_person_rejects(crashable: Crashable) -> None:
    x = crashable
    run_id, before = crash_while_tool_runs(x, DELETE)
    wait_past_deadline(before)
    out = get_run(x.client, run_id)
    assert out["status"] == "PAUSED"
    assert out["tools"][0]["requires_confirmation"] is True

    reason = "it may have run already; checked by hand"
    r = continue_run(x.client, run_id, decide_all(out["tools"], confirmed=False, note=reason))
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["status"] == "COMPLETED"
    assert done["content"] == f"Done. {reason}"  # the model was told why
    assert done["tools"][0]["confirmed"] is False
    tool_messages = [m for m in done["messages"] if m["role"] == "tool"]
    assert [m["content"] for m in tool_messages] == [reason]

    evs = events(x.client, run_id)
    assert_contiguous(evs)
    assert evs[:len(before)] == before
    assert types(evs)[len(before):] == [
        "ToolCallInDoubt", "RunPaused", "ToolRejected", "RunContinued", "ModelResponded",
        "RunCompleted"]
    assert len(of_type(evs, "ToolExecutionStarted")) == 1  # never started again
    assert "ToolExecuted" not in types(evs)
    assert of_type(evs, "ToolRejected")[0]["payload"]["reason"] == reason


def test_idempotent_tool_is_run_again_after_a_crash(crashable: Crashable) -> None:
    x = crashable
    run_id, before = crash_while_tool_runs(x, REFRESH)
    wait_past_deadline(before)

    out = get_run(x.client, run_id)  # the touch that recovers it runs the tool again
    assert out["status"] == "COMPLETED"
    assert out["content"] == "Done. Refreshed prices"

    evs = events(x.client, run_id)
    assert_contiguous(evs)
    assert evs[:len(before)] == before
    assert types(evs)[len(before):] == [
        "ToolExecutionStarted", "ToolExecuted", "ModelResponded", "RunCompleted"]
    assert "ToolCallInDoubt" not in types(evs)
    assert len(of_type(evs, "ToolConfirmed")) == 1
    assert [e["payload"]["attempt"] for e in of_type(evs, "ToolExecutionStarted")] == [1, 2]


def test_a_crash_in_a_batch_puts_only_the_running_call_in_doubt(crashable: Crashable) -> None:
    """Two confirmed calls in one batch; each call's start is committed just before it
    runs, so the crash (while the first, non-idempotent call runs) leaves the second
    call not started: only the first is in doubt, and the second runs exactly once."""
    x = crashable
    run_id, before = crash_while_tool_runs(x, f"{DELETE}\n{REFRESH}")
    assert types(before)[-1] == "ToolExecutionStarted"
    assert len(of_type(before, "ToolExecutionStarted")) == 1
    wait_past_deadline(before)

    out = get_run(x.client, run_id)
    assert out["status"] == "PAUSED"
    assert [(t["tool_name"], t["requires_confirmation"]) for t in out["tools"]] == [
        ("slow_delete", True), ("refresh_cache", False)]
    assert types(events(x.client, run_id))[len(before):] == ["ToolCallInDoubt", "RunPaused"]

    r = continue_run(x.client, run_id, decide_all(out["tools"], confirmed=True))
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "COMPLETED"
    assert r.json()["content"] == "Done. Dropped users; Refreshed prices"

    evs = events(x.client, run_id)
    assert_contiguous(evs)
    assert evs[:len(before)] == before
    assert types(evs)[len(before):] == [
        "ToolCallInDoubt", "RunPaused", "ToolConfirmed", "RunContinued",
        "ToolExecutionStarted", "ToolExecuted", "ToolExecutionStarted", "ToolExecuted",
        "ModelResponded", "RunCompleted"]
    started = [(e["payload"]["tool_call_id"], e["payload"]["attempt"])
               for e in of_type(evs, "ToolExecutionStarted")]
    delete_id, refresh_id = (t["tool_call_id"] for t in out["tools"])
    assert started == [(delete_id, 1), (delete_id, 2), (refresh_id, 1)]


def test_a_crash_while_an_idempotent_call_runs_retries_it_and_runs_the_rest_once(
    crashable: Crashable,
) -> None:
    """The idempotent call runs first and the crash happens while it runs: after the
    deadline it is run again (attempt 2) and the batch's other call runs once."""
    x = crashable
    run_id, before = crash_while_tool_runs(x, f"{REFRESH}\n{DELETE}")
    wait_past_deadline(before)

    out = get_run(x.client, run_id)  # the touch that recovers it
    assert out["status"] == "COMPLETED"
    assert out["content"] == "Done. Refreshed prices; Dropped users"
    evs = events(x.client, run_id)
    assert_contiguous(evs)
    assert "ToolCallInDoubt" not in types(evs)
    refresh_id, delete_id = (t["tool_call_id"] for t in out["tools"])
    started = [(e["payload"]["tool_call_id"], e["payload"]["attempt"])
               for e in of_type(evs, "ToolExecutionStarted")]
    assert started == [(refresh_id, 1), (refresh_id, 2), (delete_id, 1)]
    assert len(of_type(evs, "ToolExecuted")) == 2
