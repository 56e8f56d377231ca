"""Expiry: a call may declare how long its decision may wait (``expires_at``, set when
it is requested) and what happens then (``on_timeout``); ``expire_decision`` records
``DecisionExpired`` by the system once the clock (passed in) is past the deadline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.calls import tool_message_content
from domain.errors import InvalidDecision, InvalidRunTransition, ToolCallNotPending
from domain.run import Run
from domain.values import CallState, Requirement, RunStatus, TimeoutAction
from tests.domain.given import (
    a_call,
    a_confirmation_call,
    a_run_paused_on,
    a_started_run,
    an_external_call,
    names,
)

AT = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
LATER = AT + timedelta(seconds=1)


def expiring(call: dict, action: TimeoutAction | None = None, group: str | None = None,
             ) -> dict:
    return {**call, "expires_at": AT, "on_timeout": action, "escalate_to": group}


def test_given_a_running_run_when_a_call_with_a_deadline_is_requested_then_it_says_when(
) -> None:
    run = a_started_run()

    run.request_tool_call(**expiring(a_confirmation_call("c1"), TimeoutAction.ESCALATE,
                                     "leads"))

    [event] = run.collect_events()
    assert (event.expires_at, event.on_timeout, event.escalate_to) == (AT, "escalate", "leads")
    call = run.calls["c1"]
    assert (call.expires_at, call.on_timeout, call.escalate_to,
            call.escalated_to) == (AT, "escalate", "leads", None)


def test_given_no_action_when_a_call_with_a_deadline_is_requested_then_it_is_reject() -> None:
    run = a_started_run()
    run.request_tool_call(**expiring(an_external_call("c1")))
    assert run.calls["c1"].on_timeout == "reject"


@pytest.mark.parametrize("call", [
    {**a_call("c1"), "expires_at": AT},  # needs no decision: nothing to expire
    {**an_external_call("c1"), "expires_at": AT, "on_timeout": TimeoutAction.APPROVE},
    {**a_confirmation_call("c1"), "expires_at": AT, "on_timeout": TimeoutAction.ESCALATE},
    {**a_confirmation_call("c1"), "expires_at": AT, "escalate_to": "leads"},
    {**a_confirmation_call("c1"), "on_timeout": TimeoutAction.REJECT},
])
def test_given_a_running_run_when_a_deadline_does_not_fit_the_call_then_it_is_refused(
        call: dict) -> None:
    run = a_started_run()
    with pytest.raises(InvalidDecision):
        run.request_tool_call(**call)
    assert run.collect_events() == []


def test_given_a_paused_call_when_its_deadline_passed_and_it_rejects_then_it_is_rejected(
) -> None:
    run = a_run_paused_on(expiring(a_confirmation_call("c1")))

    run.expire_decision("c1", now=LATER)

    [event] = run.collect_events()
    assert isinstance(event, Run.DecisionExpired)
    assert (event.tool_call_id, event.decided_by, event.action, event.expired_at,
            event.escalated_to, event.expires_at) == ("c1", "system", "reject", AT, None, None)
    call = run.calls["c1"]
    assert call.state == CallState.REJECTED
    assert call.decision.kind == "expired" and call.decision.decided_by == "system"
    # The model is told it expired; the run continues as after a rejection.
    assert "No decision was made in time" in (tool_message_content(call) or "")
    run.continue_run()
    assert run.status == RunStatus.RUNNING


def test_given_a_paused_call_when_it_expires_and_it_approves_then_it_may_run() -> None:
    run = a_run_paused_on(expiring(a_confirmation_call("c1"), TimeoutAction.APPROVE))

    run.expire_decision("c1", now=AT)  # at the deadline: expired

    assert names(run.collect_events()) == ["DecisionExpired"]
    assert run.calls["c1"].state == CallState.APPROVED
    assert run.calls["c1"].decision.action == "approve"


def test_given_a_paused_call_when_it_expires_and_escalates_then_it_waits_for_the_group(
) -> None:
    run = a_run_paused_on(expiring(a_confirmation_call("c1"), TimeoutAction.ESCALATE,
                                   "leads"))
    new_deadline = LATER + timedelta(hours=1)

    run.expire_decision("c1", now=LATER, next_deadline=new_deadline)

    [event] = run.collect_events()
    assert (event.action, event.escalated_to, event.expires_at) == (
        "escalate", "leads", new_deadline)
    call = run.calls["c1"]
    assert call.state == CallState.PENDING and call.decision is None
    assert (call.escalated_to, call.expires_at, call.on_timeout) == (
        "leads", new_deadline, "reject")
    assert run.pending_calls() == [call]
    # A person of the group may still decide it ...
    run.confirm_tool("c1", decided_by="lead-ann")
    assert run.calls["c1"].state == CallState.APPROVED


def test_given_an_escalated_call_when_its_new_deadline_passes_then_it_is_rejected() -> None:
    run = a_run_paused_on(expiring(a_confirmation_call("c1"), TimeoutAction.ESCALATE,
                                   "leads"))
    run.expire_decision("c1", now=LATER, next_deadline=LATER + timedelta(hours=1))
    run.collect_events()

    with pytest.raises(InvalidRunTransition, match="does not expire before"):
        run.expire_decision("c1", now=LATER + timedelta(minutes=59))
    run.expire_decision("c1", now=LATER + timedelta(hours=1))

    [event] = run.collect_events()
    assert event.action == "reject"
    assert run.calls["c1"].state == CallState.REJECTED


def test_given_a_call_before_its_deadline_when_it_is_expired_then_nothing_is_recorded(
) -> None:
    run = a_run_paused_on(expiring(a_confirmation_call("c1")))
    with pytest.raises(InvalidRunTransition):
        run.expire_decision("c1", now=AT - timedelta(microseconds=1))
    assert run.collect_events() == []


def test_given_a_decided_call_when_it_is_expired_then_the_decision_stands() -> None:
    run = a_run_paused_on(expiring(a_confirmation_call("c1")))
    run.confirm_tool("c1", decided_by="bob")
    run.collect_events()

    with pytest.raises(ToolCallNotPending) as caught:
        run.expire_decision("c1", now=LATER)

    assert caught.value.decision.decided_by == "bob"
    assert run.collect_events() == []


def test_given_an_expired_call_when_a_reviewer_decides_then_the_expiry_stands() -> None:
    run = a_run_paused_on(expiring(a_confirmation_call("c1")))
    run.expire_decision("c1", now=LATER)
    run.collect_events()

    with pytest.raises(ToolCallNotPending) as caught:
        run.confirm_tool("c1", decided_by="bob")

    assert caught.value.decision.kind == "expired"


def test_given_a_call_without_a_deadline_when_it_is_expired_then_it_is_refused() -> None:
    run = a_run_paused_on(a_confirmation_call("c1"))
    with pytest.raises(InvalidDecision, match="no deadline"):
        run.expire_decision("c1", now=LATER)


def test_given_a_cancelled_run_when_a_call_is_expired_then_it_is_refused() -> None:
    run = a_run_paused_on(expiring(a_call("c1", Requirement.USER_INPUT,
                                          user_input_schema=[])))
    run.cancel(cancelled_by="ann")
    with pytest.raises(InvalidRunTransition):
        run.expire_decision("c1", now=LATER)
