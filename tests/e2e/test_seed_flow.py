"""The seed's HITL example, end to end over HTTP, as an Agno AgentOS client drives it.

The seed (``003_…``) has two curl commands: start a run on ``data_manager`` with form
fields ``message``/``user_id``/``session_id`` (no ``stream``: Agno's default, true), then
continue it with ``tools=[{tool_call_id, tool_name, tool_args, confirmed: true}]`` and
``stream=false``. The other tests follow the captured Agno exchanges
(``shared/notes/agno-samples``): ``02`` paused run JSON, ``03`` the paused ``tools`` sent
back with ``confirmed: true``, ``04`` a streaming continue, ``06`` ``GET /agents``.
Each test runs on SQLite and on PostgreSQL (the ``server`` fixture).
"""

from __future__ import annotations

import json

import pytest

from tests.e2e.flows import (
    SESSION,
    USER,
    continue_,
    continue_stream,
    decided,
    events,
    form,
    payloads,
    start,
    types,
)
from tests.e2e.sse import names, parse
from tests.support.server import LiveServer

pytestmark = pytest.mark.e2e

MESSAGE = "Delete 50 old records from the users table"
ARGS = {"table_name": "users", "count": 50}

# The history of the seed's run, as GET /runs/{id}/events lists it.
SEED_HISTORY = [
    "RunStarted", "ModelResponded", "ToolCallRequested", "RunPaused",
    "ToolConfirmed", "RunContinued", "ToolExecutionStarted", "ToolExecuted",
    "ModelResponded", "RunCompleted",
]

# Keys of Agno's RunOutput.to_dict() for a paused run (agno-samples/02-start-paused.json).
RUN_OUTPUT_KEYS = {
    "run_id", "agent_id", "agent_name", "session_id", "user_id", "content", "content_type",
    "model", "model_provider", "session_state", "created_at", "status", "metrics",
    "messages", "tools", "requirements", "input",
}
# Keys of one ToolExecution (the same sample, ``tools[0]``).
TOOL_EXECUTION_KEYS = {
    "tool_call_id", "tool_name", "tool_args", "tool_call_error", "result", "metrics",
    "child_run_id", "stop_after_tool_call", "created_at", "requires_confirmation",
    "confirmed", "confirmation_note", "requires_user_input", "user_input_schema",
    "user_feedback_schema", "answered", "external_execution_required",
    "external_execution_silent", "approval_type", "approval_id", "parent_tool_call_id",
}
# delete_records as agno-samples/06-agents.json describes it.
DELETE_RECORDS_PARAMETERS = {
    "type": "object",
    "properties": {
        "table_name": {"type": "string", "description": "Name of the table"},
        "count": {"type": "integer", "description": "Number of records to delete"},
    },
    "required": ["table_name", "count"],
}


def test_seed_curl_flow(server: LiveServer) -> None:
    with server.client() as c:
        # curl -X POST /agents/data_manager/runs -F message=… -F user_id=… -F session_id=…
        r = c.post("/agents/data_manager/runs",
                   files=form(message=MESSAGE, user_id="test_user", session_id="test_session"))
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/event-stream")
        stream = parse(r.text)
        # The same sequence as Agno's (agno-samples/01-start-stream-default.sse).
        assert names(stream) == ["RunStarted", "ModelRequestStarted", "ModelRequestCompleted",
                                 "RunContentCompleted", "RunPaused"]
        run_id = stream[0][1]["run_id"]
        for name, data in stream:
            assert data["event"] == name
            assert data["run_id"] == run_id
            assert data["agent_id"] == "data_manager"
            assert data["session_id"] == "test_session"
            assert isinstance(data["created_at"], int)

        paused = stream[-1][1]
        [tool] = paused["tools"]
        assert tool["tool_name"] == "delete_records"
        assert tool["tool_args"] == ARGS
        assert tool["requires_confirmation"] is True
        assert tool["confirmed"] is None
        tool_call_id = tool["tool_call_id"]
        assert tool_call_id
        [requirement] = paused["requirements"]
        assert requirement["tool_execution"]["tool_call_id"] == tool_call_id
        assert requirement["tool_execution"]["requires_confirmation"] is True

        # curl -X POST /agents/data_manager/runs/{run_id}/continue -F tools=[…] -F stream=false
        # (only the four keys the seed writes: Agno 3.1.10 itself leaves this run PAUSED).
        tools = ('[{"tool_call_id": "' + tool_call_id + '", "tool_name": "delete_records", '
                 '"tool_args": {"table_name": "users", "count": 50}, "confirmed": true}]')
        assert json.loads(tools)[0]["tool_call_id"] == tool_call_id
        r = c.post(f"/agents/data_manager/runs/{run_id}/continue",
                   files=form(tools=tools, session_id="test_session", user_id="test_user",
                              stream="false"))
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/json")
        done = r.json()
        assert done["run_id"] == run_id
        assert done["status"] == "COMPLETED"
        assert done["content"] == "Done. Deleted 50 records from users"
        [ran] = done["tools"]
        assert ran["tool_call_id"] == tool_call_id
        assert ran["confirmed"] is True
        assert ran["requires_confirmation"] is False
        assert ran["result"] == "Deleted 50 records from users"
        assert ran["tool_call_error"] is False

        history = events(c, run_id)
        assert [e["type"] for e in history] == SEED_HISTORY
        assert [e["version"] for e in history] == list(range(1, len(SEED_HISTORY) + 1))
        [confirmed] = payloads(history, "ToolConfirmed")
        assert confirmed["tool_call_id"] == tool_call_id
        assert confirmed["decided_by"] == "test_user"
        assert confirmed["approved_args"] is None  # confirmed as proposed
        [executed] = payloads(history, "ToolExecuted")
        assert executed["result"] == "Deleted 50 records from users"


def test_agents_and_paused_run_are_shaped_like_agno(server: LiveServer) -> None:
    with server.client() as c:
        # GET /agents (agno-samples/06-agents.json)
        r = c.get("/agents")
        assert r.status_code == 200, r.text
        agents = {a["id"]: a for a in r.json()}
        assert {"data_manager", "support_desk"} <= agents.keys()
        dm = agents["data_manager"]
        assert dm["name"] == "Data Manager"
        assert {"name", "model", "provider"} <= dm["model"].keys()
        assert dm["model"]["model"] == "offline"
        tools = {t["name"]: t for t in dm["tools"]["tools"]}
        assert list(tools) == ["delete_records", "send_notification"]
        assert tools["delete_records"]["parameters"] == DELETE_RECORDS_PARAMETERS
        assert tools["delete_records"]["description"] == "Delete records from a database table."
        assert all(t["requires_confirmation"] is True for t in tools.values())
        assert c.get("/agents/data_manager").json() == dm

        # POST /agents/data_manager/runs with stream=false (agno-samples/02-start-paused.json)
        run = start(c, "data_manager", MESSAGE)
        assert run.keys() >= RUN_OUTPUT_KEYS
        assert run["status"] == "PAUSED"
        assert (run["agent_id"], run["agent_name"]) == ("data_manager", "Data Manager")
        assert (run["user_id"], run["session_id"]) == (USER, SESSION)
        assert run["content_type"] == "str"
        assert isinstance(run["created_at"], int)
        assert run["input"] == {"input_content": MESSAGE}
        [tool] = run["tools"]
        assert tool.keys() == TOOL_EXECUTION_KEYS
        assert tool["tool_args"] == ARGS
        assert tool["requires_confirmation"] is True
        assert tool["confirmed"] is None
        [requirement] = run["requirements"]
        assert {"id", "created_at", "tool_execution"} <= requirement.keys()
        assert requirement["tool_execution"] == tool
        # The model's turn: the assistant message proposes the call with the same id.
        assert [m["role"] for m in run["messages"]] == ["system", "user", "assistant"]
        [call] = run["messages"][-1]["tool_calls"]
        assert call["id"] == tool["tool_call_id"]
        assert call["function"]["name"] == "delete_records"
        assert json.loads(call["function"]["arguments"]) == ARGS

        # GET /agents/{agent_id}/runs/{run_id}: the same run.
        r = c.get(f"/agents/data_manager/runs/{run['run_id']}")
        assert r.status_code == 200, r.text
        assert r.json() == run


def test_continue_with_the_paused_tools_sent_back(server: LiveServer) -> None:
    """agno-samples/03: the paused ``tools`` returned as they came, ``confirmed: true`` set."""
    with server.client() as c:
        run = start(c, "data_manager", MESSAGE)
        done = continue_(c, run, [decided(t, confirmed=True) for t in run["tools"]])
        assert done.keys() >= RUN_OUTPUT_KEYS
        assert done["status"] == "COMPLETED"
        assert done["content"] == "Done. Deleted 50 records from users"
        [tool] = done["tools"]
        assert tool.keys() == TOOL_EXECUTION_KEYS
        assert tool["tool_call_id"] == run["tools"][0]["tool_call_id"]
        assert (tool["requires_confirmation"], tool["confirmed"]) == (False, True)
        assert tool["result"] == "Deleted 50 records from users"
        assert tool["tool_call_error"] is False
        assert [m["role"] for m in done["messages"]] == [
            "system", "user", "assistant", "tool", "assistant"]
        tool_message = done["messages"][3]
        assert tool_message["tool_call_id"] == tool["tool_call_id"]
        assert tool_message["content"] == "Deleted 50 records from users"
        assert done["messages"][-1]["content"] == "Done. Deleted 50 records from users"

        assert c.get(f"/agents/data_manager/runs/{run['run_id']}").json() == done
        assert types(c, run["run_id"]) == SEED_HISTORY


def test_streaming_continue(server: LiveServer) -> None:
    """agno-samples/04: continue with no ``stream`` field answers with server-sent events."""
    with server.client() as c:
        # Rejected with a note: the very sequence Agno streams.
        run = start(c, "data_manager", MESSAGE)
        stream = continue_stream(c, run, [decided(t, confirmed=False,
                                                  confirmation_note="not today")
                                          for t in run["tools"]])
        assert names(stream) == ["RunContinued", "ModelRequestStarted", "RunContent",
                                 "ModelRequestCompleted", "RunContentCompleted",
                                 "RunCompleted"]
        assert all(data["run_id"] == run["run_id"] for _, data in stream)
        assert stream[2][1]["content"] == "Done. not today"
        assert stream[-1][1]["content"] == "Done. not today"
        assert c.get(f"/agents/data_manager/runs/{run['run_id']}").json()["status"] == \
            "COMPLETED"

        # Confirmed: the tool's start and result are streamed too.
        run = start(c, "data_manager", MESSAGE)
        stream = continue_stream(c, run, [decided(t, confirmed=True) for t in run["tools"]])
        assert names(stream) == ["RunContinued", "ToolCallStarted", "ToolCallCompleted",
                                 "ModelRequestStarted", "RunContent", "ModelRequestCompleted",
                                 "RunContentCompleted", "RunCompleted"]
        started, completed = stream[1][1], stream[2][1]
        assert started["tool"]["tool_call_id"] == run["tools"][0]["tool_call_id"]
        assert completed["tool"]["result"] == "Deleted 50 records from users"
        assert completed["content"] == "Deleted 50 records from users"
        assert stream[-1][1]["content"] == "Done. Deleted 50 records from users"
        assert types(c, run["run_id"]) == SEED_HISTORY
