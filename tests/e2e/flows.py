"""Small helpers for the end-to-end tests: the requests an Agno client sends, as forms.

Agno clients post multipart forms (``curl -F``); every helper here does the same. The
``*_stream`` helpers leave ``stream`` out, so the server's default (true: SSE) applies;
the others send ``stream=false`` and return the run as JSON.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.e2e.sse import Event, parse

USER = "test_user"
SESSION = "test_session"
PROBLEM = "application/problem+json"

Json = dict[str, Any]


def form(**fields: Any) -> dict[str, tuple[None, str]]:
    """Multipart form fields (``curl -F``): strings as they are, the rest as JSON."""
    return {k: (None, v if isinstance(v, str) else json.dumps(v))
            for k, v in fields.items() if v is not None}


# ------------------------------------------------------------------- start

def post_start(client: httpx.Client, agent: str, **fields: Any) -> httpx.Response:
    return client.post(f"/agents/{agent}/runs", files=form(**fields))


def start(client: httpx.Client, agent: str, message: str, *, user_id: str = USER,
          session_id: str = SESSION) -> Json:
    """Start a run with ``stream=false``; the run as JSON."""
    r = post_start(client, agent, message=message, user_id=user_id, session_id=session_id,
                   stream="false")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    run: Json = r.json()
    return run


def start_stream(client: httpx.Client, agent: str, message: str, *, user_id: str = USER,
                 session_id: str = SESSION) -> list[Event]:
    """Start a run with no ``stream`` field (the default: SSE); the stream's events."""
    r = post_start(client, agent, message=message, user_id=user_id, session_id=session_id)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    return parse(r.text)


# ---------------------------------------------------------------- continue

def post_continue(client: httpx.Client, agent: str, run_id: str, **fields: Any,
                  ) -> httpx.Response:
    """``tools`` may be a list (sent as JSON) or a raw string (sent as it is)."""
    return client.post(f"/agents/{agent}/runs/{run_id}/continue", files=form(**fields))


def continue_(client: httpx.Client, run: Json, tools: list[Json], *, user_id: str = USER,
              session_id: str = SESSION) -> Json:
    """Continue ``run`` with ``tools`` and ``stream=false``; the run as JSON."""
    r = post_continue(client, run["agent_id"], run["run_id"], tools=tools, user_id=user_id,
                      session_id=session_id, stream="false")
    assert r.status_code == 200, r.text
    out: Json = r.json()
    return out


def continue_stream(client: httpx.Client, run: Json, tools: list[Json], *,
                    user_id: str = USER, session_id: str = SESSION) -> list[Event]:
    """Continue ``run`` with no ``stream`` field (SSE); the stream's events."""
    r = post_continue(client, run["agent_id"], run["run_id"], tools=tools, user_id=user_id,
                      session_id=session_id)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    return parse(r.text)


def decided(tool: Json, **decision: Any) -> Json:
    """A paused tool execution sent back as it came, with the decision filled in."""
    return {**tool, **decision}


def pending(run: Json) -> list[Json]:
    """The tool executions that wait for a decision, as the paused run lists them."""
    return [t["tool_execution"] for t in run["requirements"]
            if t["tool_execution"]["requires_confirmation"]
            or t["tool_execution"]["requires_user_input"]
            or t["tool_execution"]["external_execution_required"]]


# ------------------------------------------------------------------ history

def events(client: httpx.Client, run_id: str) -> list[Json]:
    """``GET /runs/{id}/events``: signoff's own history of the run."""
    r = client.get(f"/runs/{run_id}/events")
    assert r.status_code == 200, r.text
    out: list[Json] = r.json()
    return out


def types(client: httpx.Client, run_id: str) -> list[str]:
    return [e["type"] for e in events(client, run_id)]


def payloads(history: list[Json], event_type: str) -> list[Json]:
    return [e["payload"] for e in history if e["type"] == event_type]


# ------------------------------------------------------------------- errors

def assert_problem(r: httpx.Response, status: int) -> Json:
    """An RFC 9457 problem with this status."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].split(";")[0] == PROBLEM, r.headers["content-type"]
    body: Json = r.json()
    assert {"type", "title", "status", "detail"} <= body.keys(), body
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    return body
