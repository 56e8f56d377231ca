"""Agno's wire details over HTTP: when each message was made, what a pause says, how
``GET /agents`` names the model, ``GET /config``, the 404 of the AgentOS features signoff
does not serve, ``HEAD`` on the public pages, and ``GET /``.

What Agno 3.1.10 answers (captured from a real AgentOS): a paused run's and its
``RunPaused`` event's ``content`` is ``"I have tools to execute, but I need
confirmation."``; ``GET /agents`` names the model ``{"name": <model class>, "model":
<id>, "provider": ...}``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from tests.e2e.flows import (
    assert_problem,
    continue_,
    decided,
    events,
    pending,
    start,
    start_stream,
)
from tests.support.server import LiveServer

pytestmark = pytest.mark.e2e

MESSAGE = "Delete 50 old records from the users table"
NEEDS_CONFIRMATION = "I have tools to execute, but I need confirmation."


def epoch(history: list[dict[str, Any]], event_type: str) -> list[int]:
    """The times (whole seconds, as Agno writes them) of a run's events of one type."""
    return [int(datetime.fromisoformat(e["timestamp"]).timestamp())
            for e in history if e["type"] == event_type]


def test_each_message_is_stamped_with_the_time_of_its_event(server: LiveServer) -> None:
    with server.client() as c:
        paused = start(c, "data_manager", MESSAGE)
        done = continue_(c, paused, [decided(t, confirmed=True) for t in pending(paused)])
        assert done["status"] == "COMPLETED"
        history = events(c, done["run_id"])
    stamps = [(m["role"], m["created_at"]) for m in done["messages"]]
    [started] = epoch(history, "RunStarted")
    first, second = epoch(history, "ModelResponded")
    [executed] = epoch(history, "ToolExecuted")
    assert stamps == [("system", started), ("user", started), ("assistant", first),
                      ("tool", executed), ("assistant", second)]


def test_a_rejected_calls_message_is_stamped_with_the_rejection(server: LiveServer) -> None:
    with server.client() as c:
        paused = start(c, "data_manager", MESSAGE)
        done = continue_(c, paused, [decided(t, confirmed=False, confirmation_note="no")
                                     for t in pending(paused)])
        history = events(c, done["run_id"])
    [tool_message] = [m for m in done["messages"] if m["role"] == "tool"]
    assert tool_message["created_at"] == epoch(history, "ToolRejected")[0]


def test_a_pause_says_what_it_needs_as_agno_does(server: LiveServer) -> None:
    with server.client() as c:
        stream = start_stream(c, "data_manager", MESSAGE)
        name, data = stream[-1]
        assert name == "RunPaused"
        assert data["content"] == NEEDS_CONFIRMATION
        paused = start(c, "data_manager", MESSAGE)
        assert paused["content"] == NEEDS_CONFIRMATION
        again = c.get(f"/agents/data_manager/runs/{paused['run_id']}").json()
        assert again["content"] == NEEDS_CONFIRMATION
        external = start(c, "support_desk", 'call check_payment {"order_id": "o-1"}')
        assert external["content"] == "I have tools to execute, but it needs external execution."
        done = continue_(c, paused, [decided(t, confirmed=True) for t in pending(paused)])
        assert done["content"] != NEEDS_CONFIRMATION  # the model's last words


def test_agents_name_the_model_class_not_a_wrapper(server: LiveServer) -> None:
    with server.client() as c:
        agents = {a["id"]: a for a in c.get("/agents").json()}
    assert agents["data_manager"]["model"] == {"name": "OfflineModel", "model": "offline",
                                               "provider": "signoff"}
    for agent in agents.values():
        assert "Timed" not in agent["model"]["name"]
        for t in agent["tools"]["tools"]:
            assert set(t) <= {"name", "description", "parameters", "requires_confirmation",
                              "external_execution", "requires_user_input",
                              "user_input_fields"}
            assert None not in t.values()  # unset flags are left out, as Agno does
    desk = {t["name"]: t for t in agents["support_desk"]["tools"]["tools"]}
    assert desk["check_payment"].get("external_execution") is True
    assert "requires_confirmation" not in desk["check_payment"]
    assert desk["issue_refund"]["requires_user_input"] is True
    assert desk["issue_refund"]["user_input_fields"] == ["email"]


@pytest.mark.parametrize("path", ["/health", "/inbox"])
def test_head_answers_like_get_without_a_body(server: LiveServer, path: str) -> None:
    with server.client() as c:
        got = c.get(path)
        head = c.head(path)
    assert (got.status_code, head.status_code) == (200, 200)
    assert head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]


def test_the_root_points_to_the_inbox_and_the_docs(server: LiveServer) -> None:
    with server.client() as c:
        r = c.get("/")
        assert r.status_code == 200
        body = r.json()
        assert (body["inbox"], body["docs"]) == ("/inbox", "/docs")
        for path in body.values():
            if path.startswith("/"):
                assert c.get(path).status_code == 200, path


def test_config_lists_the_served_agents_as_agno_does(server: LiveServer) -> None:
    with server.client() as c:
        r = c.get("/config")
        agents = c.get("/agents").json()
    assert r.status_code == 200, r.text
    config = r.json()
    assert config["os_id"] == "signoff"
    assert [(a["id"], a["name"], a["model"]) for a in config["agents"]] == [
        (a["id"], a["name"], {"id": a["model"]["model"], "provider": a["model"]["provider"]})
        for a in agents]
    assert config["available_models"] == [{"id": "offline", "provider": "signoff"}]
    assert (config["teams"], config["workflows"], config["interfaces"]) == ([], [], [])
    # One database, of sessions: what the sessions API answers from.
    assert (config["os_database"], config["databases"]) == ("signoff", ["signoff"])
    assert config["session"] == {"dbs": [{"db_id": "signoff", "domain_config": {
        "display_name": "signoff"}, "tables": ["signoff_sessions"]}]}
    assert {a["db_id"] for a in config["agents"]} == {"signoff"}
    assert config["memory"] == {"dbs": []}
    assert "company" in config and config["company"] is None  # present, as Agno writes it


NOT_SERVED = [  # (method, path, the feature the problem names)
    ("GET", "/teams", "teams"), ("POST", "/teams/t1/runs", "teams"),
    ("POST", "/teams/t1/runs/r1/continue", "teams"),
    ("GET", "/workflows", "workflows"), ("POST", "/workflows/w1/runs", "workflows"),
    ("GET", "/memories", "memories"), ("DELETE", "/memories/m1", "memories"),
    ("GET", "/memory_topics", "memories"), ("GET", "/user_memory_stats", "memories"),
    ("POST", "/optimize-memories", "memories"),
    ("GET", "/knowledge/content", "knowledge"), ("POST", "/knowledge/search", "knowledge"),
    ("GET", "/eval-runs", "evals"), ("PATCH", "/eval-runs/e1", "evals"),
]


def test_agnos_other_features_answer_a_404_that_says_signoff_does_not_serve_them(
        server: LiveServer) -> None:
    with server.client() as c:
        for method, path, feature in NOT_SERVED:
            problem = assert_problem(c.request(method, path), 404)
            assert problem["detail"].startswith(f"signoff does not serve Agno's {feature} ")
            assert problem["not_served"] == feature
            assert problem["instance"] == path
        assert c.head("/teams").status_code == 404
        # A path that only starts like one of them is just not found.
        assert assert_problem(c.get("/teamsters"), 404)["detail"] == "Not Found"
