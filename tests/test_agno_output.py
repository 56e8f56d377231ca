"""Agno's wire format, in process: message times read off the run's events (with a clock
that moves only when told), the pause's words, ``GET /agents``'s view of an agent and
``GET /config``'s of the service."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

from agent.models.offline import OfflineModel
from agent.tools import Agent, tool
from api.agno import agent_info, paused_content, run_output, stream_events
from api.metrics import TimedModel
from api.routes.agno_os import os_config
from domain.calls import ToolCall
from domain.run import Run
from domain.values import Requirement

T0 = datetime(2030, 3, 10, 21, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def at(self, seconds: int) -> None:
        self.t = T0 + timedelta(seconds=seconds)


@contextlib.contextmanager
def clock() -> Iterator[Clock]:
    c = Clock()
    with mock.patch("eventsourcing.domain.datetime_now_with_tzinfo", lambda: c.t):
        yield c


def at(seconds: int) -> int:
    return int((T0 + timedelta(seconds=seconds)).timestamp())


def call(call_id: str, requires: Requirement | None) -> dict[str, Any]:
    return {"tool_call_id": call_id, "tool_name": f"tool_{call_id}", "tool_args": {},
            "requires": requires}


def test_each_message_carries_the_time_of_the_event_it_comes_from() -> None:
    with clock() as c:
        run = Run.start(agent_id="a", agent_name="A", user_id="u", session_id="s",
                        input="go", instructions="Be brief.")
        c.at(5)
        calls = [call("r", Requirement.CONFIRMATION), call("x", Requirement.EXTERNAL_EXECUTION),
                 call("n", None)]
        run.record_model_response(model="m", provider="p", content=None, tool_calls=[
            {"id": k["tool_call_id"], "name": k["tool_name"], "args": {}} for k in calls])
        for k in calls:
            run.request_tool_call(**k)
        c.at(6)
        run.pause()
        assert run_output(run)["content"] == (
            "I have tools to execute, but it needs external execution.")  # the last waiting
        c.at(30)
        run.reject_tool("r", decided_by="rita", reason="no")
        c.at(40)
        run.provide_external_result("x", decided_by="ext", result="42")
        c.at(41)
        run.continue_run()
        c.at(45)
        run.start_tool("n", deadline=T0 + timedelta(minutes=5))
        c.at(50)
        run.record_tool_result("n", "done")
        c.at(60)
        run.record_model_response(model="m", provider="p", content="All done.", tool_calls=[])
        run.complete("All done.")
    out = run_output(run)
    assert [(m["role"], m.get("tool_call_id"), m["created_at"]) for m in out["messages"]] == [
        ("system", None, at(0)), ("user", None, at(0)), ("assistant", None, at(5)),
        ("tool", "r", at(30)), ("tool", "x", at(40)), ("tool", "n", at(50)),
        ("assistant", None, at(60))]
    assert out["created_at"] == at(0)
    assert out["content"] == "All done."

    # A run restored from a snapshot taken before turns and outcomes had times: the run's
    # start for a turn, the call's request for a tool's outcome.
    for turn in run.turns:
        del turn["at"]
    run.calls["n"] = ToolCall.of({k: v for k, v in run.calls["n"].as_dict().items()
                                  if k != "outcome_at"})
    stamps = [m["created_at"] for m in run_output(run)["messages"]]
    assert stamps == [at(0), at(0), at(0), at(30), at(40), at(5), at(0)]


def test_a_paused_runs_content_is_agnos_unless_the_model_said_something() -> None:
    run = Run.start(agent_id="a", agent_name="A", user_id="u", session_id="s", input="go",
                    instructions="")
    run.record_model_response(model="m", provider="p", content=None, tool_calls=[
        {"id": "c1", "name": "tool_c1", "args": {}}])
    run.request_tool_call(**call("c1", Requirement.CONFIRMATION))
    run.pause()
    [data] = [d for n, d in stream_events(run, run.collect_events()) if n == "RunPaused"]
    assert data["content"] == run_output(run)["content"] == (
        "I have tools to execute, but I need confirmation.")

    said = Run.start(agent_id="a", agent_name="A", user_id="u", session_id="s", input="go",
                     instructions="")
    said.record_model_response(model="m", provider="p", content="Let me check.", tool_calls=[
        {"id": "c1", "name": "tool_c1", "args": {}}])
    said.request_tool_call(**call("c1", Requirement.USER_INPUT))
    said.pause()
    assert run_output(said)["content"] == "Let me check."


def test_paused_content_follows_agnos_words_for_each_need() -> None:
    def t(**flags: Any) -> dict[str, Any]:
        return {"requires_confirmation": flags.get("c", False), "confirmed": None,
                "requires_user_input": flags.get("u"), "external_execution_required":
                flags.get("x")}

    assert paused_content([]) == ""
    assert paused_content([t(u=True)]) == "I have tools to execute, but I need user input."
    assert paused_content([t(c=True), t()]) == (
        "I have tools to execute, but I need confirmation.")  # a call with no needs: passed
    assert paused_content([t(c=True, x=True)]) == (
        "I have tools to execute, but I need confirmation or external execution.")


@tool(requires_confirmation=lambda args: args["amount"] > 100)
def pay(to: str, amount: int) -> str:
    """Pay someone."""
    return "paid"


@tool
def look(name: str) -> str:
    """Look something up."""
    return name


def test_agents_name_the_model_class_and_a_function_valued_confirmation_is_true() -> None:
    agent = Agent(id="p", name="Payments", tools=[pay, look], instructions=["Be careful"],
                  model=TimedModel(TimedModel(OfflineModel())))
    info = agent_info(agent, default_model=None)
    assert info["model"] == {"name": "OfflineModel", "model": "offline", "provider": "signoff"}
    pay_info, look_info = info["tools"]["tools"]
    assert pay_info["requires_confirmation"] is True  # some calls wait: the flag says so
    assert set(look_info) == {"name", "description", "parameters"}
    assert info["system_message"] == {"instructions": ["Be careful"]}
    assert "description" not in info and "confirm_before_run" not in info
    default = agent_info(Agent(id="q", name="Q"), default_model=TimedModel(OfflineModel()))
    assert default["model"]["name"] == "OfflineModel"


def test_config_describes_the_agents_as_an_agentos_with_a_sessions_database() -> None:
    """``GET /config`` as Agno 3.1.10 answers it for an AgentOS with agents and an OS
    database: the sessions in it (signoff's sessions read model), each other storage
    feature with no database, no queue, no teams; the agents with their database and
    their models' id and provider, each model listed once in ``available_models``."""
    timed = TimedModel(OfflineModel())
    agents = [Agent(id="p", name="Payments", tools=[pay], model=timed),
              Agent(id="q", name="Q", description="Answers questions")]
    config = os_config(agents, default_model=TimedModel(OfflineModel()))
    model = {"id": "offline", "provider": "signoff"}
    assert config == {
        "os_id": "signoff",
        "available_models": [model],
        "os_database": "signoff",
        "databases": ["signoff"],
        "session": {"dbs": [{"db_id": "signoff", "domain_config": {"display_name": "signoff"},
                             "tables": ["signoff_sessions"]}]},
        "metrics": {"dbs": []},
        "memory": {"dbs": []},
        "learning": {"dbs": []},
        "filesystem": {"namespaces": []},
        "knowledge": {"dbs": [], "knowledge_instances": []},
        "evals": {"dbs": []},
        "traces": {"dbs": []},
        "queue": {"durable": False, "queue_per_session": False},
        "agents": [
            {"id": "p", "name": "Payments", "db_id": "signoff", "model": model,
             "sandboxed": False},
            {"id": "q", "name": "Q", "description": "Answers questions", "db_id": "signoff",
             "model": model, "sandboxed": False},
        ],
        "teams": [],
        "workflows": [],
        "interfaces": [],
        "company": None,
    }
    # The keys in Agno's order (its captured answer).
    assert list(config) == [
        "os_id", "available_models", "os_database", "databases", "session", "metrics",
        "memory", "learning", "filesystem", "knowledge", "evals", "traces", "queue",
        "agents", "teams", "workflows", "interfaces", "company"]
