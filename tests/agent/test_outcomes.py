"""Every tool that ran ends with its outcome recorded, or in doubt: never lost.

- A tool's outcome is committed when the tools have run, before the model is asked
  again: a model turn (which may take a minute, fail, or die with its process) never
  holds it.
- A model that gives a call an id the run already holds (some OpenAI-compatible servers
  number calls per answer: ``call_0`` in every turn) gets a unique one, so its answer is
  recorded and the outcome before it kept.
- A tool that does not finish in time may still have its effect (its thread cannot be
  stopped): the call is in doubt and a person decides, unless the tool is idempotent.
- A run cancelled while its tool ran, whose process then died, gets the call in doubt
  once its deadline passes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agent.loop import AgentLoop
from agent.models.base import ModelTurn, ToolCallProposal, ToolSpec
from agent.tools import Agent, tool
from domain.values import CallState, RunStatus
from service.runs import RunService
from tests.support.runs import Runs

RAN: list[str] = []
RELEASE = threading.Event()


@tool
def send_payment(to: str) -> str:
    """Send a payment (runs at once).

    Args:
        to: Who is paid
    """
    RAN.append(to)
    return f"paid {to}"


@tool
def hang(key: str) -> str:
    """Blocks until the test releases it.

    Args:
        key: Anything
    """
    RELEASE.wait(10)
    RAN.append(key)
    return "finally"


@tool(idempotent=True)
def hang_idempotent(key: str) -> str:
    """Blocks until the test releases it; safe to run twice.

    Args:
        key: Anything
    """
    RELEASE.wait(10)
    return "finally"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class Model:
    """Proposes ``calls`` (one turn each); then answers in text. ``held``: a turn after a
    tool's result waits until the test lets it go."""

    name = "scripted"
    provider = "tests"

    def __init__(self, *calls: ToolCallProposal, held: bool = False) -> None:
        self.calls = list(calls)
        self.held = held
        self.asked = threading.Event()
        self.go = threading.Event()

    def respond(self, messages: list[dict[str, Any]], tools: list[ToolSpec]) -> ModelTurn:
        if self.held and any(m["role"] == "tool" for m in messages):
            self.asked.set()
            assert self.go.wait(10)
        if self.calls:
            return ModelTurn(content=None, tool_calls=[self.calls.pop(0)])
        return ModelTurn(content="done")


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    RAN.clear()
    RELEASE.clear()
    yield
    RELEASE.set()  # never leave a tool thread blocked


def runs_with(app: RunService, model: Any, **options: Any) -> Runs:
    agent = Agent(id="pay", name="Pay", tools=[send_payment, hang, hang_idempotent])
    return Runs(app, AgentLoop({"pay": agent}, model, **options))


def kinds(app: RunService, run_id: Any) -> list[str]:
    return [type(e).__name__ for e in app.run_events(run_id)]


def test_a_tools_outcome_is_committed_before_the_model_is_asked_again(app: RunService) -> None:
    model = Model(ToolCallProposal("call_1", "send_payment", {"to": "bob"}), held=True)
    runs = runs_with(app, model)
    run = runs.lifecycle.open_run(runs.caller, "pay", "pay bob")
    driving = threading.Thread(target=runs.drive, args=(run,))
    driving.start()
    try:
        assert model.asked.wait(10)
        # The model is thinking; what the store holds already says the payment was made.
        stored = app.get_run(run.id)
        assert stored.calls["call_1"].state == CallState.EXECUTED
        assert stored.calls["call_1"].result == "paid bob"
    finally:
        model.go.set()
        driving.join(10)
    assert app.get_run(run.id).status == RunStatus.COMPLETED


def test_a_model_that_reuses_a_call_id_gets_a_unique_one_and_the_outcome_is_kept(
        app: RunService) -> None:
    model = Model(ToolCallProposal("call_0", "send_payment", {"to": "bob"}),
                  ToolCallProposal("call_0", "send_payment", {"to": "eve"}))
    run = runs_with(app, model).start("pay", "pay bob, then eve")

    assert run.status == RunStatus.COMPLETED
    assert [(c.tool_call_id, c.args["to"], c.state) for c in run.calls.values()] == [
        ("call_0", "bob", CallState.EXECUTED), ("call_0~2", "eve", CallState.EXECUTED)]
    assert RAN == ["bob", "eve"]
    assert kinds(app, run.id).count("ToolExecuted") == 2


def test_a_tool_that_does_not_finish_in_time_is_in_doubt_and_a_person_decides(
        app: RunService) -> None:
    runs = runs_with(app, Model(ToolCallProposal("call_1", "hang", {"key": "x"})),
                     tool_timeout=0.3)
    run = runs.start("pay", "hang")

    assert kinds(app, run.id)[-3:] == ["ToolExecutionStarted", "ToolCallInDoubt", "RunPaused"]
    assert run.status == RunStatus.PAUSED
    assert [c.tool_call_id for c in run.pending_calls()] == ["call_1"]
    RELEASE.set()  # it had its effect after all: a person is asked, the model is not
    runs.loop._pool.shutdown(wait=True)
    assert RAN == ["x"]
    assert app.get_run(run.id).calls["call_1"].state == CallState.IN_DOUBT


def test_an_idempotent_tool_that_does_not_finish_in_time_fails_and_the_model_is_told(
        app: RunService) -> None:
    runs = runs_with(app, Model(ToolCallProposal("call_1", "hang_idempotent", {"key": "x"})),
                     tool_timeout=0.3)
    run = runs.start("pay", "hang")

    types = kinds(app, run.id)
    assert types[types.index("ToolExecutionStarted") + 1] == "ToolFailed"
    assert run.calls["call_1"].error == "TimeoutError: the tool did not finish within 0.3 s"
    assert run.status == RunStatus.COMPLETED


def test_a_run_cancelled_while_its_tool_ran_gets_the_call_in_doubt_when_its_process_died(
        app: RunService) -> None:
    clock = Clock()
    runs = runs_with(app, Model(ToolCallProposal("call_1", "send_payment", {"to": "bob"})),
                     tool_timeout=10, clock=clock)
    run = runs.lifecycle.open_run(runs.caller, "pay", "pay bob")
    # The process recorded the start, then died before the tool's outcome.
    run.record_model_response(model="m", provider="p", content=None,
                              tool_calls=[{"id": "call_1", "name": "send_payment",
                                           "args": {"to": "bob"}}])
    run.request_tool_call(tool_call_id="call_1", tool_name="send_payment",
                          tool_args={"to": "bob"})
    run.start_tool("call_1", deadline=clock.now + timedelta(seconds=10))
    app.save(run)
    runs.cancel(run.id, actor="ann")

    clock.now += timedelta(seconds=11)
    settled = runs.settle(run.id)

    assert settled.calls["call_1"].state == CallState.IN_DOUBT
    assert settled.status == RunStatus.CANCELLED
    assert kinds(app, run.id)[-2:] == ["RunCancelled", "ToolCallInDoubt"]
    assert RAN == []  # nothing ran again
