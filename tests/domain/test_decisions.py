"""Decisions on tool calls: confirm, reject, an external result, user input."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from agent.messages import chat_messages
from domain.errors import (
    InvalidDecision,
    InvalidRunTransition,
    ToolCallNotFound,
    ToolCallNotPending,
    WrongDecisionKind,
)
from domain.run import Run
from domain.values import CallState, DecisionKind, RunStatus
from tests.domain.given import (
    DEADLINE,
    a_call,
    a_confirmation_call,
    a_run_awaiting_run_confirmation,
    a_run_paused_on,
    a_user_input_call,
    an_external_call,
    names,
)

Decide = Callable[[Run, str], None]


def confirm(run: Run, call_id: str) -> None:
    run.confirm_tool(call_id, decided_by="bob")


def reject(run: Run, call_id: str) -> None:
    run.reject_tool(call_id, decided_by="bob", reason="no")


def give_result(run: Run, call_id: str) -> None:
    run.provide_external_result(call_id, decided_by="bob", result="42")


def give_input(run: Run, call_id: str) -> None:
    run.provide_user_input(call_id, decided_by="bob", values={"seat": "12A"})


# ------------------------------------------------------------------ confirm


def test_given_a_paused_run_when_the_call_is_confirmed_then_tool_confirmed_is_recorded() -> None:
    run = a_run_paused_on(a_confirmation_call("c1"))

    run.confirm_tool("c1", decided_by="ann", note="fine", request_key="k1")

    [event] = run.collect_events()
    assert isinstance(event, Run.ToolConfirmed)
    assert (event.tool_call_id, event.decided_by, event.note, event.approved_args,
            event.request_key) == ("c1", "ann", "fine", None, "k1")
    call = run.calls["c1"]
    assert call.state == CallState.APPROVED
    assert call.decision.kind == DecisionKind.CONFIRMED
    assert call.decision.decided_by == "ann"
    assert call.decision.version == event.originator_version


def test_given_a_paused_run_when_the_call_is_confirmed_with_edited_args_then_both_are_kept(
) -> None:
    run = a_run_paused_on(a_confirmation_call("c1", args={"to": "Oslo"}))

    run.confirm_tool("c1", decided_by="ann", approved_args={"to": "Bergen"})

    [event] = run.collect_events()
    assert event.approved_args == {"to": "Bergen"}
    assert run.calls["c1"].tool_args == {"to": "Oslo"}
    assert run.calls["c1"].approved_args == {"to": "Bergen"}


def test_given_a_paused_run_when_the_call_is_confirmed_with_unchanged_args_then_none_is_recorded(
) -> None:
    run = a_run_paused_on(a_confirmation_call("c1", args={"to": "Oslo"}))

    run.confirm_tool("c1", decided_by="ann", approved_args={"to": "Oslo"})

    [event] = run.collect_events()
    assert event.approved_args is None
    assert run.calls["c1"].approved_args is None


def test_given_a_call_with_fixed_args_when_it_is_confirmed_with_edits_then_it_is_refused(
) -> None:
    run = a_run_paused_on(a_confirmation_call("c1", args={"to": "Oslo"}, editable_args=False))

    with pytest.raises(InvalidDecision):
        run.confirm_tool("c1", decided_by="ann", approved_args={"to": "Bergen"})

    assert run.collect_events() == []
    assert run.calls["c1"].state == CallState.PENDING


def test_given_a_call_with_fixed_args_when_it_is_confirmed_with_the_same_args_then_it_is_approved(
) -> None:
    run = a_run_paused_on(a_confirmation_call("c1", args={"to": "Oslo"}, editable_args=False))

    run.confirm_tool("c1", decided_by="ann", approved_args={"to": "Oslo"})

    assert names(run.collect_events()) == ["ToolConfirmed"]
    assert run.calls["c1"].state == CallState.APPROVED


# ------------------------------------------------------------------- reject


@pytest.mark.parametrize("call", [a_confirmation_call("c1"), an_external_call("c1"),
                                  a_user_input_call("c1")], ids=lambda c: c["requires"])
def test_given_any_waiting_call_when_it_is_rejected_then_tool_rejected_is_recorded(call) -> None:
    run = a_run_paused_on(call)

    run.reject_tool("c1", decided_by="ann", reason="Not today", request_key="k1")

    [event] = run.collect_events()
    assert isinstance(event, Run.ToolRejected)
    assert (event.tool_call_id, event.reason, event.request_key) == ("c1", "Not today", "k1")
    assert run.calls["c1"].state == CallState.REJECTED
    assert run.calls["c1"].decision.reason == "Not today"


# ---------------------------------------------------------- external result


def test_given_an_external_call_when_its_result_is_provided_then_it_is_answered() -> None:
    run = a_run_paused_on(an_external_call("c1"))

    run.provide_external_result("c1", decided_by="fax-bot", result="sent")

    [event] = run.collect_events()
    assert isinstance(event, Run.ExternalResultProvided)
    assert (event.tool_call_id, event.result) == ("c1", "sent")
    assert run.calls["c1"].state == CallState.ANSWERED
    assert run.calls["c1"].result == "sent"


# --------------------------------------------------------------- user input


def test_given_a_user_input_call_when_input_is_provided_then_it_is_merged_into_approved_args(
) -> None:
    run = a_run_paused_on(a_user_input_call("c1", "seat", "meal", args={"to": "Oslo"}))

    run.provide_user_input("c1", decided_by="ann", values={"seat": "12A", "meal": "veg"})

    [event] = run.collect_events()
    assert isinstance(event, Run.UserInputProvided)
    assert event.values == {"seat": "12A", "meal": "veg"}
    call = run.calls["c1"]
    assert call.state == CallState.APPROVED
    assert call.tool_args == {"to": "Oslo"}
    assert call.approved_args == {"to": "Oslo", "seat": "12A", "meal": "veg"}


@pytest.mark.parametrize("values", [{"seat": "12A"}, {"seat": "12A", "meal": None}],
                         ids=["absent", "null"])
def test_given_a_user_input_call_when_a_field_is_missing_then_it_is_refused(values) -> None:
    run = a_run_paused_on(a_user_input_call("c1", "seat", "meal"))

    with pytest.raises(InvalidDecision, match="meal"):
        run.provide_user_input("c1", decided_by="ann", values=values)

    assert run.collect_events() == []


def test_given_a_user_input_call_when_an_unknown_field_is_given_then_it_is_refused() -> None:
    run = a_run_paused_on(a_user_input_call("c1", "seat"))

    with pytest.raises(InvalidDecision, match="window"):
        run.provide_user_input("c1", decided_by="ann", values={"seat": "12A", "window": True})

    assert run.collect_events() == []


# ------------------------------------------------------- wrong kind, unknown


@pytest.mark.parametrize(("call", "decide"), [
    (a_confirmation_call("c1"), give_result),
    (a_confirmation_call("c1"), give_input),
    (an_external_call("c1"), confirm),
    (an_external_call("c1"), give_input),
    (a_user_input_call("c1"), confirm),
    (a_user_input_call("c1"), give_result),
], ids=lambda v: getattr(v, "__name__", None) or v["requires"])
def test_given_a_waiting_call_when_another_kind_of_decision_comes_then_it_is_refused(
    call, decide: Decide,
) -> None:
    run = a_run_paused_on(call)

    with pytest.raises(WrongDecisionKind):
        decide(run, "c1")

    assert run.collect_events() == []
    assert run.calls["c1"].state == CallState.PENDING


@pytest.mark.parametrize("decide", [confirm, reject, give_result, give_input])
def test_given_a_paused_run_when_an_unknown_call_is_decided_then_it_is_not_found(
    decide: Decide,
) -> None:
    run = a_run_paused_on(a_confirmation_call("c1"))

    with pytest.raises(ToolCallNotFound):
        decide(run, "nope")

    assert run.collect_events() == []


# ------------------------------------------------------- one decision each


@pytest.mark.parametrize("second", [confirm, reject])
@pytest.mark.parametrize(("first", "kind"), [(confirm, DecisionKind.CONFIRMED),
                                             (reject, DecisionKind.REJECTED)])
def test_given_a_decided_call_when_it_is_decided_again_then_the_standing_decision_is_reported(
    first: Decide, kind: DecisionKind, second: Decide,
) -> None:
    run = a_run_paused_on(a_confirmation_call("c1"), a_confirmation_call("c2"))
    first(run, "c1")
    standing = run.calls["c1"].decision
    run.collect_events()

    with pytest.raises(ToolCallNotPending) as raised:
        second(run, "c1")

    assert raised.value.decision == standing
    assert raised.value.decision.kind == kind
    assert run.collect_events() == []


def test_given_an_answered_call_when_a_result_is_given_again_then_it_is_not_pending() -> None:
    run = a_run_paused_on(an_external_call("c1"), a_confirmation_call("c2"))
    give_result(run, "c1")
    run.collect_events()

    with pytest.raises(ToolCallNotPending) as raised:
        run.provide_external_result("c1", decided_by="eve", result="other")

    assert raised.value.decision.result == "42"
    assert run.calls["c1"].result == "42"
    assert run.collect_events() == []


def test_given_a_call_that_needed_nothing_when_it_is_confirmed_then_it_is_not_pending() -> None:
    run = a_run_paused_on(a_call("c1"), a_confirmation_call("c2"))

    with pytest.raises(ToolCallNotPending) as raised:
        confirm(run, "c1")

    assert raised.value.decision is None
    assert run.collect_events() == []


# ------------------------------------------------------------- ended runs


def a_completed_run() -> Run:
    run = a_run_paused_on(a_confirmation_call("c1"))
    run.confirm_tool("c1", decided_by="ann")
    run.continue_run()
    run.start_tool("c1", deadline=DEADLINE)
    run.record_tool_result("c1", "booked")
    run.complete("Booked.")
    run.collect_events()
    return run


def a_failed_run() -> Run:
    run = a_run_paused_on(a_confirmation_call("c1"))
    run.fail("model error")
    run.collect_events()
    return run


def a_cancelled_run() -> Run:
    run = a_run_paused_on(a_confirmation_call("c1"))
    run.cancel(cancelled_by="ann")
    run.collect_events()
    return run


@pytest.mark.parametrize("decide", [confirm, reject])
@pytest.mark.parametrize(("given_run", "error"), [
    # The call was decided before the run ended: the answer names the decision that stands.
    (a_completed_run, ToolCallNotPending),
    (a_failed_run, InvalidRunTransition),
    (a_cancelled_run, InvalidRunTransition),
])
def test_given_an_ended_run_when_a_call_is_decided_then_it_is_refused(
    given_run: Callable[[], Run], error: type[Exception], decide: Decide,
) -> None:
    run = given_run()

    with pytest.raises(error):
        decide(run, "c1")

    assert run.collect_events() == []


# --------------------------------------------------------- run confirmation


def test_given_a_run_awaiting_confirmation_when_it_is_confirmed_then_the_pseudo_call_is_executed(
) -> None:
    run = a_run_awaiting_run_confirmation()

    run.confirm_tool("confirm_run_1", decided_by="ann")

    assert names(run.collect_events()) == ["ToolConfirmed"]
    call = run.calls["confirm_run_1"]
    assert (call.state, call.result) == (CallState.EXECUTED, "confirmed")
    assert run.pending_calls() == []


def test_given_a_confirmed_run_confirmation_when_the_run_goes_on_then_it_can_complete() -> None:
    run = a_run_awaiting_run_confirmation()
    run.confirm_tool("confirm_run_1", decided_by="ann")
    run.collect_events()

    run.continue_run()
    run.record_model_response(model="m", provider="p", content="Hello", tool_calls=[])
    run.complete("Hello")

    assert names(run.collect_events()) == ["RunContinued", "ModelResponded", "RunCompleted"]
    assert run.status == RunStatus.COMPLETED
    assert chat_messages(run)[-1] == {"role": "assistant", "content": "Hello"}


def test_given_a_run_awaiting_confirmation_when_it_is_rejected_then_the_pseudo_call_is_rejected(
) -> None:
    run = a_run_awaiting_run_confirmation()

    run.reject_tool("confirm_run_1", decided_by="ann", reason="not now")

    assert names(run.collect_events()) == ["ToolRejected"]
    assert run.calls["confirm_run_1"].state == CallState.REJECTED
