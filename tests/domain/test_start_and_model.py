"""Starting a run, recording the model's answers, requesting calls, pausing, and the
conversation the model is shown (``agent.messages.chat_messages``)."""

from __future__ import annotations

import json
from uuid import uuid4

import pytest

from agent.messages import chat_messages
from domain.errors import InvalidDecision, InvalidRunTransition
from domain.run import Run
from domain.values import CallState, Requirement, RunStatus
from tests.domain.given import (
    DEADLINE,
    a_call,
    a_confirmation_call,
    a_run_paused_on,
    a_run_requesting,
    a_run_running,
    a_started_run,
    an_external_call,
    names,
    the_model_asks_for,
)

# ------------------------------------------------------------------- start


def test_given_nothing_when_a_run_is_started_then_run_started_is_recorded() -> None:
    run = Run.start(agent_id="travel", agent_name="Travel agent", user_id=None,
                    session_id="s1", input="Book me a flight")

    [event] = run.collect_events()
    assert isinstance(event, Run.RunStarted)
    assert (event.agent_id, event.session_id, event.input, event.instructions) == (
        "travel", "s1", "Book me a flight", "")
    assert run.status == RunStatus.RUNNING
    assert (run.calls, run.turns, run.version) == ({}, [], 1)


def test_given_nothing_when_a_run_is_started_with_an_id_then_the_run_has_that_id() -> None:
    run_id = uuid4()

    run = Run.start(agent_id="a", agent_name="A", user_id=None, session_id="s", input="hi",
                    run_id=run_id)

    assert run.id == run_id and run.run_id == str(run_id)


# ------------------------------------------------------------ model response


def test_given_a_started_run_when_the_model_responds_then_model_responded_is_recorded() -> None:
    run = a_started_run()

    run.record_model_response(model="gpt-test", provider="test", content="Which date?",
                              tool_calls=[], input_tokens=7, output_tokens=3)

    [event] = run.collect_events()
    assert isinstance(event, Run.ModelResponded)
    assert (event.model, event.content, event.tool_calls) == ("gpt-test", "Which date?", [])
    assert (run.model, run.model_provider, run.content) == ("gpt-test", "test", "Which date?")
    assert (run.input_tokens, run.output_tokens) == (7, 3)


def test_given_a_run_after_one_model_turn_when_the_model_responds_again_then_tokens_add_up(
) -> None:
    run = a_run_requesting(a_call("c1"))
    run.start_tool("c1", deadline=DEADLINE)
    run.record_tool_result("c1", "booked")
    run.collect_events()

    run.record_model_response(model="gpt-test", provider="test", content="Done.",
                              tool_calls=[], input_tokens=20, output_tokens=2)

    assert names(run.collect_events()) == ["ModelResponded"]
    assert (run.input_tokens, run.output_tokens) == (30, 7)
    assert len(run.turns) == 2


def test_given_a_started_run_when_the_model_responds_with_duplicate_call_ids_then_it_is_refused(
) -> None:
    run = a_started_run()

    with pytest.raises(InvalidDecision):
        run.record_model_response(model="m", provider="p", content=None, tool_calls=[
            {"id": "c1", "name": "a", "args": {}}, {"id": "c1", "name": "b", "args": {}}])

    assert run.collect_events() == []


def test_given_a_run_with_a_resolved_call_when_the_model_reuses_its_id_then_it_is_refused(
) -> None:
    run = a_run_requesting(a_call("c1"))
    run.start_tool("c1", deadline=DEADLINE)
    run.record_tool_result("c1", "booked")
    run.collect_events()

    with pytest.raises(InvalidDecision):
        run.record_model_response(model="m", provider="p", content=None,
                                  tool_calls=[{"id": "c1", "name": "a", "args": {}}])

    assert run.collect_events() == []


@pytest.mark.parametrize("given_run", [
    pytest.param(lambda: a_run_requesting(a_call("c1")), id="approved"),
    pytest.param(lambda: a_run_running("c1"), id="running"),
    pytest.param(lambda: a_run_requesting(a_confirmation_call("c1")), id="pending"),
])
def test_given_a_run_with_an_open_call_when_the_model_responds_then_it_is_refused(
    given_run,
) -> None:
    run = given_run()

    with pytest.raises(InvalidRunTransition):
        run.record_model_response(model="m", provider="p", content="x", tool_calls=[])

    assert run.collect_events() == []


def test_given_a_paused_run_when_the_model_responds_then_it_is_refused() -> None:
    run = a_run_paused_on(a_confirmation_call("c1"))

    with pytest.raises(InvalidRunTransition):
        run.record_model_response(model="m", provider="p", content="x", tool_calls=[])

    assert run.collect_events() == []


# ------------------------------------------------------------- tool requests


def test_given_a_started_run_when_calls_are_requested_then_only_calls_with_a_requirement_wait(
) -> None:
    run = a_started_run()

    run.request_tool_call(tool_call_id="c1", tool_name="search", tool_args={"q": "Oslo"})
    run.request_tool_call(tool_call_id="c2", tool_name="book", tool_args={"to": "Oslo"},
                          requires=Requirement.CONFIRMATION, confirmation_message="Book it?")

    events = run.collect_events()
    assert names(events) == ["ToolCallRequested", "ToolCallRequested"]
    assert [e.requires for e in events] == [None, "confirmation"]
    assert run.calls["c1"].state == CallState.APPROVED
    assert run.calls["c2"].state == CallState.PENDING
    assert run.calls["c2"].confirmation_message == "Book it?"
    assert [c.tool_call_id for c in run.pending_calls()] == ["c2"]


def test_given_a_run_with_a_call_when_the_same_id_is_requested_again_then_it_is_refused() -> None:
    run = a_run_requesting(a_call("c1"))

    with pytest.raises(InvalidDecision):
        run.request_tool_call(tool_call_id="c1", tool_name="other", tool_args={})

    assert run.collect_events() == []


def test_given_a_paused_run_when_a_call_is_requested_then_it_is_refused() -> None:
    run = a_run_paused_on(a_confirmation_call("c1"))

    with pytest.raises(InvalidRunTransition):
        run.request_tool_call(tool_call_id="c2", tool_name="other", tool_args={})

    assert run.collect_events() == []


# -------------------------------------------------------------------- pause


def test_given_a_run_with_calls_waiting_when_it_pauses_then_it_waits_for_them_in_order() -> None:
    run = a_run_requesting(a_call("c1"), an_external_call("c2"), a_confirmation_call("c3"))

    run.pause()

    [event] = run.collect_events()
    assert isinstance(event, Run.RunPaused)
    assert event.waiting_for == ["c2", "c3"]
    assert run.status == RunStatus.PAUSED and run.waiting_for == ["c2", "c3"]
    assert run.paused_at == event.timestamp


def test_given_a_run_with_nothing_to_decide_when_it_pauses_then_it_is_refused() -> None:
    run = a_run_requesting(a_call("c1"))

    with pytest.raises(InvalidRunTransition):
        run.pause()

    assert run.collect_events() == []


def test_given_a_paused_run_when_it_pauses_again_then_it_is_refused() -> None:
    run = a_run_paused_on(a_confirmation_call("c1"))

    with pytest.raises(InvalidRunTransition):
        run.pause()

    assert run.collect_events() == []


# ----------------------------------------------------------- model_messages


def test_given_a_started_run_when_messages_are_derived_then_they_are_system_and_user() -> None:
    run = a_started_run(instructions="Be brief.")

    assert chat_messages(run) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Book me a flight"},
    ]


def test_given_a_run_without_instructions_when_messages_are_derived_then_there_is_no_system(
) -> None:
    run = a_started_run(instructions="")

    assert chat_messages(run) == [{"role": "user", "content": "Book me a flight"}]


def test_given_resolved_calls_when_messages_are_derived_then_tool_messages_follow_in_call_order(
) -> None:
    run = a_run_paused_on(
        a_call("c1", name="search", args={"q": "Oslo"}),
        a_confirmation_call("c2", name="book"),
        a_confirmation_call("c3", name="pay"),
        a_confirmation_call("c4", name="email"),
        an_external_call("c5", name="fax"),
    )
    run.reject_tool("c3", decided_by="ann", reason="Too expensive")
    run.reject_tool("c4", decided_by="ann")
    run.provide_external_result("c5", decided_by="fax-bot", result="sent")
    run.confirm_tool("c2", decided_by="ann")
    run.continue_run()
    run.start_tool("c1", deadline=DEADLINE)
    run.start_tool("c2", deadline=DEADLINE)
    run.record_tool_failure("c2", "TimeoutError: airline down")
    run.record_tool_result("c1", "3 flights")

    messages = chat_messages(run)

    assert messages[:2] == [{"role": "system", "content": "Be brief."},
                            {"role": "user", "content": "Book me a flight"}]
    assistant = messages[2]
    assert assistant["role"] == "assistant" and assistant["content"] is None
    assert [c["id"] for c in assistant["tool_calls"]] == ["c1", "c2", "c3", "c4", "c5"]
    assert assistant["tool_calls"][0] == {
        "id": "c1", "type": "function",
        "function": {"name": "search", "arguments": json.dumps({"q": "Oslo"})}}
    assert messages[3:] == [
        {"role": "tool", "tool_call_id": "c1", "content": "3 flights"},
        {"role": "tool", "tool_call_id": "c2", "content": "Error: TimeoutError: airline down"},
        {"role": "tool", "tool_call_id": "c3", "content": "Too expensive"},
        {"role": "tool", "tool_call_id": "c4",
         "content": "The user rejected this tool call; it was not run."},
        {"role": "tool", "tool_call_id": "c5", "content": "sent"},
    ]


def test_given_unresolved_calls_when_messages_are_derived_then_they_get_no_tool_message() -> None:
    run = a_run_paused_on(a_confirmation_call("c1"), an_external_call("c2"), a_call("c3"))
    run.provide_external_result("c2", decided_by="bot", result="42")

    messages = chat_messages(run)

    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool"]
    assert messages[-1] == {"role": "tool", "tool_call_id": "c2", "content": "42"}


def test_given_two_model_turns_when_messages_are_derived_then_each_turn_follows_its_tools(
) -> None:
    run = a_run_requesting(a_call("c1"))
    run.start_tool("c1", deadline=DEADLINE)
    run.record_tool_result("c1", "booked")
    the_model_asks_for(run, content="Booked.")

    messages = chat_messages(run)

    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert messages[-1] == {"role": "assistant", "content": "Booked."}
