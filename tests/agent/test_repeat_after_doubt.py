"""A decision sent again with its Idempotency-Key after its call fell in doubt.

The first attempt's decision was recorded and the tool started; then the store (or the
process) went away, so the client got no answer (a 503) and the call's outcome was never
recorded. Once its deadline passed the call is in doubt: whether to run it again is a
new question. The client's retry of its first request must not answer it: it is refused
(409, with the decision its key made), and nothing is recorded. A new decision (a new
key, or none) decides the call in doubt.

Found by tests/e2e/test_faults.py: the retry confirmed the call a second time, and the
tool ran twice on one acknowledged decision.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agent.loop import AgentLoop
from agent.models.base import ModelTurn, ToolCallProposal, ToolSpec
from agent.tools import Agent, tool
from domain.errors import ToolCallNotPending
from domain.values import CallState, Decision, DecisionKind, RunStatus
from service.runs import RunService
from tests.support.runs import Runs

RAN: list[str] = []


@tool(requires_confirmation=True)
def delete_records(table_name: str) -> str:
    """Delete records.

    Args:
        table_name: The table
    """
    RAN.append(table_name)
    return f"Deleted from {table_name}"


class Proposes:
    name = "scripted"
    provider = "tests"

    def respond(self, messages: list[dict[str, Any]], tools: list[ToolSpec]) -> ModelTurn:
        if any(m["role"] == "tool" for m in messages):
            return ModelTurn(content="done")
        return ModelTurn(content=None, tool_calls=[
            ToolCallProposal("call_1", "delete_records", {"table_name": "users"})])


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def confirm() -> list[Decision]:
    return [Decision("call_1", DecisionKind.CONFIRMED)]


def test_a_retry_after_the_call_fell_in_doubt_does_not_decide_it_again(
        app: RunService) -> None:
    RAN.clear()
    clock = Clock()
    agent = Agent(id="ops", name="Ops", tools=[delete_records])
    runs = Runs(app, AgentLoop({"ops": agent}, Proposes(), tool_timeout=1, clock=clock))
    run = runs.start("ops", "delete users")
    assert run.status == RunStatus.PAUSED

    # The first attempt: its decision and the tool's start are committed, then the store
    # goes away (the outcome is never recorded; the client got a 503).
    run = runs.decide(run.id, confirm(), actor="alice", request_key="key-1")
    run.start_tool("call_1", deadline=clock.now + timedelta(seconds=1))
    app.save(run)

    # Past the deadline, the next touch puts the call in doubt.
    clock.now += timedelta(seconds=5)
    run = runs.settle(run.id)
    assert run.status == RunStatus.PAUSED
    assert run.calls["call_1"].state == CallState.IN_DOUBT

    # The client sends its first request again: refused, with the decision its key made.
    head = app.head()
    with pytest.raises(ToolCallNotPending, match="earlier request with this Idempotency-Key"
                       ) as refused:
        runs.decide(run.id, confirm(), actor="alice", request_key="key-1")
    assert refused.value.decision is not None
    assert refused.value.decision.request_key == "key-1"
    assert refused.value.decision.kind == "confirmed"
    assert app.head() == head
    assert RAN == []

    # A new decision on the call in doubt is recorded, and the tool runs (once).
    run = runs.drive(runs.decide(run.id, confirm(), actor="alice", request_key="key-2"))
    assert run.status == RunStatus.COMPLETED
    assert RAN == ["users"]
    keys = [getattr(e, "request_key", None) for e in app.run_events(run.id)
            if type(e).__name__ == "ToolConfirmed"]
    assert keys == ["key-1", "key-2"]
