"""A run followed live (the lifecycle's ``Live``: a streamed response): committed before
each model turn, told of the turn and its text as they come; the events committed are
those of the same run driven with nobody following."""

from __future__ import annotations

import time
from typing import Any

from agent.loop import AgentLoop
from agent.models.base import TEXT_SINK, ModelTurn, ToolCallProposal, ToolSpec
from agent.tools import Agent, tool
from domain.run import Run
from domain.values import Decision, DecisionKind, RunStatus
from service.runs import RunService
from tests.support.runs import Runs


@tool(requires_confirmation=True)
def delete_records(table_name: str) -> str:
    """Delete records.

    Args:
        table_name: The table
    """
    return f"Deleted from {table_name}"


class Streaming:
    """A model that answers the given turns in order, its text a word at a time to
    whoever follows (``TEXT_SINK``), waiting ``gap`` seconds before each word."""

    name = "streaming"
    provider = "tests"

    def __init__(self, *turns: ModelTurn, gap: float = 0.0,
                 timeout: float | None = None) -> None:
        self.turns = list(turns)
        self.gap = gap
        if timeout is not None:
            self.timeout = timeout

    def respond(self, messages: list[dict[str, Any]], tools: list[ToolSpec]) -> ModelTurn:
        turn = self.turns.pop(0)
        sink = TEXT_SINK.get()
        for word in (turn.content or "").split(" "):
            time.sleep(self.gap)
            if sink is not None:
                sink(word + " ")
        return turn


def script() -> list[ModelTurn]:
    return [ModelTurn(content="Deleting the users", tool_calls=[
                ToolCallProposal("call_1", "delete_records", {"table_name": "users"})],
                input_tokens=12, output_tokens=3),
            ModelTurn(content="All done", input_tokens=20, output_tokens=2)]


class Timeline:
    """The lifecycle's ``Live``, and the saves: one list, in the order they happen."""

    def __init__(self, app: RunService) -> None:
        self.seen: list[tuple[str, Any]] = []
        app.on_commit.append(lambda _objs, recordings: self.seen.append(
            ("save", [type(r.domain_event).__name__ for r in recordings])))

    def model_started(self, run: Run, model: str, provider: str) -> None:
        self.seen.append(("started", (run.version + 1, model, provider)))

    def model_text(self, run: Run, delta: str) -> None:
        self.seen.append(("text", delta))


def runs_with(app: RunService, model: Any, **options: Any) -> Runs:
    agent = Agent(id="ops", name="Ops", tools=[delete_records], model=model)
    return Runs(app, AgentLoop({"ops": agent}, model, **options))


def payloads(app: RunService, run: Run) -> list[tuple[str, dict[str, Any]]]:
    """Each event's type and fields, its times and the run's own ids aside."""
    out = []
    for e in app.run_events(run.id):
        fields = {k: v for k, v in vars(e).items()
                  if k not in {"originator_id", "originator_version", "timestamp", "hash",
                               "deadline", "decided_at"}}
        out.append((type(e).__name__, fields))
    return out


def confirm(runs: Runs, run: Run, live: Timeline | None) -> Run:
    """Confirm the call (committed), then drive the run on (as a streamed continue)."""
    after = runs.decide(run.id, [Decision("call_1", DecisionKind.CONFIRMED)], actor="alice")
    return runs.lifecycle.drive(after, live=live)


def test_a_followed_run_is_committed_before_each_model_turn_with_the_same_events(
        app: RunService) -> None:
    timeline = Timeline(app)
    followed = runs_with(app, Streaming(*script()))
    run = followed.lifecycle.drive(followed.lifecycle.open_run(
        followed.caller, "ops", "Delete the users", session_id="s"), live=timeline)
    assert run.status == RunStatus.PAUSED
    # The start is committed before the model is asked; its text comes as it is said.
    assert timeline.seen == [
        ("save", ["RunStarted"]),
        ("started", (2, "streaming", "tests")),
        ("text", "Deleting "), ("text", "the "), ("text", "users "),
        ("save", ["ModelResponded", "ToolCallRequested", "RunPaused"])]

    timeline.seen.clear()
    run = confirm(followed, run, timeline)
    assert run.status == RunStatus.COMPLETED
    # The tool's outcome is committed before the model is asked again.
    assert timeline.seen == [
        ("save", ["ToolConfirmed", "RunContinued"]),
        ("save", ["ToolExecutionStarted"]),
        ("save", ["ToolExecuted"]),
        ("started", (run.version - 1, "streaming", "tests")),
        ("text", "All "), ("text", "done "),
        ("save", ["ModelResponded", "RunCompleted"])]

    # Nobody following: the start is committed with the model's first answer; the same
    # events.
    timeline.seen.clear()
    alone = runs_with(app, Streaming(*script()))
    other = alone.lifecycle.drive(alone.lifecycle.open_run(
        alone.caller, "ops", "Delete the users", session_id="s"))
    other = confirm(alone, other, None)
    assert [s for s in timeline.seen if s[0] != "save"] == []
    assert timeline.seen == [
        ("save", ["RunStarted", "ModelResponded", "ToolCallRequested", "RunPaused"]),
        ("save", ["ToolConfirmed", "RunContinued"]),
        ("save", ["ToolExecutionStarted"]),
        ("save", ["ToolExecuted"]),
        ("save", ["ModelResponded", "RunCompleted"])]
    assert payloads(app, other) == payloads(app, run)


def test_text_that_comes_after_the_model_timed_out_is_not_passed_on(
        app: RunService) -> None:
    timeline = Timeline(app)
    model = Streaming(ModelTurn(content="too slow to matter"), gap=0.15, timeout=0.2)
    runs = runs_with(app, model)
    run = runs.lifecycle.drive(runs.lifecycle.open_run(runs.caller, "ops", "hello"),
                               live=timeline)
    assert run.status == RunStatus.ERROR
    time.sleep(0.5)  # the abandoned call has said its last word by now
    assert [s for s in timeline.seen if s[0] == "text"] == [("text", "too ")]
