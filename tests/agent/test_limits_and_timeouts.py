"""The agent loop's limits and timeouts: what is refused, what is cut, what is recorded.

A message or a decision over the limits is refused before anything is recorded. What
comes from elsewhere (a model's proposal, a tool's result) cannot be refused: it is cut,
and the cut value is recorded, so a replay shows exactly what the run saw. A model that
does not answer in time, or a tool that does not finish in time, ends as an event.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from agent.limits import CUT, Limits, TooLarge, json_size
from agent.loop import AgentLoop
from agent.messages import chat_messages
from agent.models.base import ModelTurn, ToolCallProposal, ToolSpec
from agent.models.openai import OpenAIModel
from agent.tools import Agent, tool
from domain.errors import InvalidDecision
from domain.values import CallState, Decision, DecisionKind, RunStatus
from service.runs import RunService
from tests.support.fake_openai import FakeOpenAI, text_reply
from tests.support.runs import Runs

LIMIT = 256
CALLED: list[dict[str, Any]] = []


@tool(requires_confirmation=True)
def delete_records(table_name: str) -> str:
    """Delete records.

    Args:
        table_name: The table
    """
    CALLED.append({"table_name": table_name})
    return f"Deleted from {table_name}"


@tool(requires_user_input=True, user_input_fields=["table_name"])
def archive_records(table_name: str) -> str:
    """Archive records (the user names the table).

    Args:
        table_name: The table
    """
    return f"Archived {table_name}"


@tool
def lookup(key: str) -> str:
    """Look something up (runs at once).

    Args:
        key: What to look up
    """
    CALLED.append({"key": key})
    return "v" * 1000 if key == "big" else f"value of {key}"


@tool
def crash(key: str) -> str:
    """Fails with a long message.

    Args:
        key: Anything
    """
    raise RuntimeError("e" * 1000)


RELEASE = threading.Event()


@tool
def hang(key: str) -> str:
    """Blocks until the test releases it.

    Args:
        key: Anything
    """
    RELEASE.wait(10)
    return "finally"


class Scripted:
    """A model answering with the given turns, in order (then text), after ``delay`` s."""

    name = "scripted"
    provider = "tests"

    def __init__(self, *turns: ModelTurn, delay: float = 0.0,
                 timeout: float | None = None) -> None:
        self.turns = list(turns)
        self.delay = delay
        if timeout is not None:
            self.timeout = timeout

    def respond(self, messages: list[dict[str, Any]], tools: list[ToolSpec]) -> ModelTurn:
        time.sleep(self.delay)
        return self.turns.pop(0) if self.turns else ModelTurn(content="done")


def proposing(name: str, args: dict[str, Any]) -> ModelTurn:
    return ModelTurn(content=None, tool_calls=[ToolCallProposal("call_1", name, args)])


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    CALLED.clear()
    RELEASE.clear()
    yield
    RELEASE.set()  # never leave a tool thread blocked


def runs_with(app: RunService, model: Any, **options: Any) -> Runs:
    """The run lifecycle over ``app``, driving with a loop built with ``options``."""
    agent = Agent(id="ops", name="Ops",
                  tools=[delete_records, archive_records, lookup, crash, hang],
                  model=model)
    options.setdefault("limits", Limits(message_chars=100, args_bytes=LIMIT))
    return Runs(app, AgentLoop({"ops": agent}, model, **options))


def event_types(app: RunService, run_id: Any) -> list[str]:
    return [type(e).__name__ for e in app.run_events(run_id)]


def payload(app: RunService, run_id: Any, name: str) -> Any:
    """The run's first event of this type."""
    return next(e for e in app.run_events(run_id) if type(e).__name__ == name)


# ----------------------------------------------------------------- refused

def test_a_message_over_the_limit_is_refused_and_nothing_is_recorded(app: RunService) -> None:
    runs = runs_with(app, Scripted())
    with pytest.raises(TooLarge, match="101 characters; at most 100"):
        runs.start("ops", "x" * 101)
    assert app.head() == 0
    assert runs.start("ops", "x" * 100).status == RunStatus.COMPLETED  # the limit itself


@pytest.mark.parametrize(("tool_name", "decision"), [
    ("delete_records",
     Decision("call_1", DecisionKind.CONFIRMED, approved_args={"table_name": "t" * LIMIT})),
    ("archive_records",
     Decision("call_1", DecisionKind.USER_INPUT, values={"table_name": "t" * LIMIT})),
    ("delete_records", Decision("call_1", DecisionKind.EXTERNAL_RESULT, result="r" * (LIMIT + 1))),
], ids=["tool_args", "user input", "result"])
def test_a_decision_over_the_limit_is_refused_and_nothing_is_recorded(
        app: RunService, tool_name: str, decision: Decision) -> None:
    runs = runs_with(app, Scripted(proposing(tool_name, {"table_name": "users"})))
    run = runs.start("ops", "delete users")
    assert run.status == RunStatus.PAUSED
    head = app.head()
    with pytest.raises(TooLarge, match=f"at most {LIMIT} are accepted"):
        runs.decide(run.id, [decision], actor="alice")
    assert app.head() == head
    assert app.get_run(run.id).status == RunStatus.PAUSED


# --------------------------------------------------------------------- cut

def test_a_proposal_over_the_limit_is_recorded_cut_and_never_run(app: RunService) -> None:
    big = {"key": "k" * 1000}
    runs = runs_with(app, Scripted(proposing("lookup", big)))
    run = runs.start("ops", "look it up")
    # Recorded cut, in the model's answer and in the call, within the limit.
    responded = payload(app, run.id, "ModelResponded")
    requested = payload(app, run.id, "ToolCallRequested")
    assert responded.tool_calls[0]["args"] == requested.tool_args
    cut = requested.tool_args
    assert set(cut) == {CUT} and cut[CUT]["bytes"] == json_size(big)
    assert json_size(cut) <= LIMIT
    assert cut[CUT]["head"].startswith('{"key":"kkk')
    # The tool was not called with them; its failure says why; the run went on.
    assert CALLED == []
    failed = payload(app, run.id, "ToolFailed")
    assert "were cut" in failed.error and "not run" in failed.error
    assert run.status == RunStatus.COMPLETED
    # A replay sees the same.
    replayed = app.get_run(run.id)
    assert replayed.calls["call_1"].tool_args == cut
    assert replayed.calls["call_1"].state == CallState.FAILED


def test_a_cut_proposal_needs_arguments_of_the_reviewers_own(app: RunService) -> None:
    runs = runs_with(app, Scripted(proposing("delete_records", {"table_name": "t" * 1000})))
    run = runs.start("ops", "delete it")
    call = run.calls["call_1"]
    assert CUT in call.tool_args
    # Sent back as it came (as an Agno client does): refused, nothing recorded.
    head = app.head()
    with pytest.raises(InvalidDecision, match="were cut"):
        runs.decide(run.id, [Decision("call_1", DecisionKind.CONFIRMED,
                                      approved_args=call.tool_args)], actor="alice")
    assert app.head() == head
    # With arguments of the reviewer's own, it runs with those.
    run = runs.decide(run.id, [Decision("call_1", DecisionKind.CONFIRMED,
                                        approved_args={"table_name": "users"})], actor="alice")
    run = runs.drive(run)
    assert CALLED == [{"table_name": "users"}]
    assert run.status == RunStatus.COMPLETED


def test_a_result_and_an_error_over_the_limit_are_recorded_cut(app: RunService) -> None:
    runs = runs_with(app, Scripted(proposing("lookup", {"key": "big"})))
    run = runs.start("ops", "look up big")
    result = payload(app, run.id, "ToolExecuted").result
    assert len(result.encode()) <= LIMIT
    assert result.startswith("vvvv") and result.endswith("[cut: 1000 bytes, over the limit of "
                                                         f"{LIMIT}]")
    assert app.get_run(run.id).calls["call_1"].result == result

    runs = runs_with(app, Scripted(proposing("crash", {"key": "x"})))
    run = runs.start("ops", "crash it")
    error = payload(app, run.id, "ToolFailed").error
    assert len(error.encode()) <= LIMIT
    assert error.startswith("RuntimeError: eeee") and "[cut: 1014 bytes" in error
    # The model was told the cut values (what it saw is what a replay sees).
    tool_message = [m for m in chat_messages(app.get_run(run.id)) if m["role"] == "tool"]
    assert tool_message[0]["content"].endswith(f"over the limit of {LIMIT}]")


def test_values_within_the_limits_are_recorded_as_they_are(app: RunService) -> None:
    args = {"key": "k" * 100}
    runs = runs_with(app, Scripted(proposing("lookup", args)))
    run = runs.start("ops", "look it up")
    assert payload(app, run.id, "ToolCallRequested").tool_args == args
    assert CALLED == [{"key": "k" * 100}]


def test_without_limits_nothing_is_cut(app: RunService) -> None:
    runs = runs_with(app, Scripted(proposing("lookup", {"key": "big"})), limits=Limits())
    run = runs.start("ops", "x" * 10_000)
    assert payload(app, run.id, "ToolExecuted").result == "v" * 1000


def test_cut_arguments_fit_even_when_every_character_needs_escaping() -> None:
    limits = Limits(args_bytes=64)
    cut = limits.cut_args({"k": '"\\\n' * 500})
    assert json_size(cut) <= 64 and set(cut) == {CUT}
    assert json.loads(json.dumps(cut)) == cut


# ---------------------------------------------------------------- timeouts

def test_a_model_that_does_not_answer_in_time_fails_the_run_as_an_event(
        app: RunService) -> None:
    runs = runs_with(app, Scripted(delay=2.0), model_timeout=0.2)
    started = time.monotonic()
    run = runs.start("ops", "anything")
    assert time.monotonic() - started < 1.5
    assert run.status == RunStatus.ERROR
    assert event_types(app, run.id) == ["RunStarted", "RunFailed"]
    error = payload(app, run.id, "RunFailed").error
    assert error == "model error: model 'scripted' did not answer within 0.2 s"
    assert app.get_run(run.id).error == error  # a replay sees the same


def test_the_models_own_timeout_applies_when_the_loop_sets_none(app: RunService) -> None:
    runs = runs_with(app, Scripted(delay=2.0, timeout=0.2))
    run = runs.start("ops", "anything")
    assert "did not answer within 0.2 s" in app.get_run(run.id).error


def test_an_openai_model_is_bounded_in_all_retries_included(
        app: RunService, fake_openai: FakeOpenAI) -> None:
    """Each HTTP attempt times out at 0.5 s and the SDK tries 3 times: the call as a whole
    still ends at 0.5 s, recorded as the run's failure."""
    fake_openai.script(*[dataclasses.replace(text_reply("late"), delay=3.0)] * 3)
    model = OpenAIModel(base_url=fake_openai.base_url, api_key="sk-test", timeout=0.5)
    runs = runs_with(app, model)
    started = time.monotonic()
    run = runs.start("ops", "anything")
    assert time.monotonic() - started < 1.5
    assert app.get_run(run.id).error == \
        "model error: model 'gpt-4o-mini' did not answer within 0.5 s"


def test_a_tool_that_does_not_finish_in_time_is_in_doubt_as_an_event(app: RunService) -> None:
    """(tests/agent/test_outcomes.py: in doubt, or failed for an idempotent tool.)"""
    runs = runs_with(app, Scripted(proposing("hang", {"key": "x"})), tool_timeout=0.3)
    run = runs.start("ops", "hang")
    types = event_types(app, run.id)
    assert types[types.index("ToolExecutionStarted") + 1] == "ToolCallInDoubt"
    assert run.status == RunStatus.PAUSED  # a person decides, not the model
    assert app.get_run(run.id).calls["call_1"].state == CallState.IN_DOUBT


def test_a_tool_still_queued_at_its_deadline_is_never_run(app: RunService) -> None:
    """The tools' threads are all taken by calls that hang: the next call times out
    before it starts, and is cancelled, not run later behind the others' backs."""
    runs = runs_with(app, Scripted(proposing("lookup", {"key": "late"})), tool_timeout=0.3)
    workers = runs.loop._pool._max_workers
    for _ in range(workers):
        runs.loop._pool.submit(RELEASE.wait, 10)
    run = runs.start("ops", "look up late")
    error = payload(app, run.id, "ToolFailed").error
    assert error == "TimeoutError: the tool did not start within 0.3 s; it was not run"
    RELEASE.set()
    runs.loop._pool.shutdown(wait=True)
    assert CALLED == []
