"""The run lifecycle in one process, with a scripted model and a fake clock: what a save
that loses a race keeps, and what a read settles.

A tool that cancels its own run while it runs makes the race deterministic: the cancel
is committed between the tool's start and its outcome, exactly as a cancel request
arriving from another client while the tool runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agent.loop import AgentLoop
from agent.models.base import ModelTurn, ToolCallProposal, ToolSpec
from agent.tools import Agent, tool
from domain.values import CallState, Decision, DecisionKind, RunStatus
from service.auth import OPEN
from service.runs import RunService
from tests.support.runs import Runs

EFFECTS: list[str] = []
RUNS: list[Runs] = []  # the lifecycle the tool cancels its run through
CURRENT: list[str] = []  # the run it cancels


@tool(requires_confirmation=True)
def send_letter(to: str) -> str:
    """Send a letter; its run is cancelled while it is being sent.

    Args:
        to: The recipient
    """
    RUNS[0].cancel(CURRENT[0], actor="bob", reason="changed my mind")
    EFFECTS.append(to)
    return f"Sent to {to}"


class Proposes:
    name = "scripted"
    provider = "tests"

    def __init__(self) -> None:
        self.turns = 0

    def respond(self, messages: list[dict[str, Any]], tools: list[ToolSpec]) -> ModelTurn:
        self.turns += 1
        if any(m["role"] == "tool" for m in messages):
            return ModelTurn(content="sent")
        return ModelTurn(content=None, tool_calls=[
            ToolCallProposal("call_1", "send_letter", {"to": "ann"})])


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def store() -> Iterator[RunService]:
    s = RunService(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    yield s
    s.close()


def names(store: RunService, run_id: Any) -> list[str]:
    return [type(e).__name__ for e in store.run_events(run_id)]


def test_a_cancel_while_the_tool_runs_keeps_the_tools_outcome(store: RunService) -> None:
    EFFECTS.clear()
    model = Proposes()
    loop = AgentLoop({"mailer": Agent(id="mailer", name="Mailer", tools=[send_letter])}, model)
    runs = Runs(store, loop)
    RUNS[:] = [runs]
    run = runs.start("mailer", "write to ann")
    CURRENT[:] = [run.run_id]
    assert run.status == RunStatus.PAUSED

    after = runs.decide(run.id, [Decision("call_1", DecisionKind.CONFIRMED)], actor="rita",
                        drive=True)

    assert EFFECTS == ["ann"]
    assert names(store, run.id)[-3:] == ["ToolExecutionStarted", "RunCancelled", "ToolExecuted"]
    assert after.status == RunStatus.CANCELLED
    assert after.calls["call_1"].state == CallState.EXECUTED
    assert model.turns == 1  # the outcome's save found the run ended: no model turn after
    loop.close()


def test_a_stale_run_of_an_agent_no_longer_served_is_read_as_it_is(store: RunService) -> None:
    clock = Clock()
    agent = Agent(id="mailer", name="Mailer", tools=[send_letter])
    runs = Runs(store, AgentLoop({"mailer": agent}, Proposes(), clock=clock, tool_timeout=1))
    run = runs.start("mailer", "write to ann")
    run.confirm_tool("call_1", decided_by="rita")
    run.continue_run()
    run.start_tool("call_1", deadline=clock.now + timedelta(seconds=1))
    store.save(run)  # as a process that died while the tool ran
    clock.now += timedelta(seconds=2)
    elsewhere = Runs(store, AgentLoop({}, Proposes(), clock=clock, tool_timeout=1))

    seen = elsewhere.lifecycle.get(OPEN, run.run_id)

    # Its call's deadline passed: in doubt, whatever serves the agent.
    assert seen.status == RunStatus.PAUSED
    assert seen.calls["call_1"].state == CallState.IN_DOUBT


def test_an_idle_run_of_an_agent_no_longer_served_is_left_running(store: RunService) -> None:
    clock = Clock()
    agent = Agent(id="mailer", name="Mailer", tools=[send_letter])
    runs = Runs(store, AgentLoop({"mailer": agent}, Proposes(), clock=clock, tool_timeout=1))
    run = runs.start("mailer", "write to ann")
    runs.decide(run.id, [Decision("call_1", DecisionKind.REJECTED)], actor="rita")
    clock.now += timedelta(seconds=2)  # RUNNING, nothing recorded since: idle
    elsewhere = Runs(store, AgentLoop({}, Proposes(), clock=clock, tool_timeout=1))
    head = store.head()

    seen = elsewhere.lifecycle.get(OPEN, run.run_id)

    assert seen.status == RunStatus.RUNNING  # nothing here can drive it
    assert store.head() == head
    settled = runs.settle(run.id)  # where the agent is served, it goes on
    assert settled.status == RunStatus.COMPLETED
