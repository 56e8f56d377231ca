"""The domain's rules the run lifecycle leans on: one ``decide`` command for every kind
of decision, a decision always names its actor, a tool outcome is recorded whatever
happened to the run meanwhile, and an idempotent call is retried by a command."""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain.errors import (
    InvalidDecision,
    InvalidRunTransition,
    ToolCallNotFound,
    ToolCallNotPending,
    WrongDecisionKind,
)
from domain.run import Run
from domain.values import CallState, Decision, DecisionKind, Reply, RunStatus
from tests.domain.given import (
    DEADLINE,
    a_confirmation_call,
    a_run_in_doubt_on,
    a_run_paused_on,
    a_run_running,
    a_user_input_call,
    an_external_call,
    names,
)

# ------------------------------------------------------------------ decide


@pytest.mark.parametrize(("call", "decision", "event"), [
    (a_confirmation_call("c1"), Decision("c1", DecisionKind.CONFIRMED, note="ok"),
     Run.ToolConfirmed),
    (a_confirmation_call("c1"), Decision("c1", DecisionKind.REJECTED, note="no"),
     Run.ToolRejected),
    (an_external_call("c1"), Decision("c1", DecisionKind.EXTERNAL_RESULT, result="42"),
     Run.ExternalResultProvided),
    (a_user_input_call("c1", "seat"),
     Decision("c1", DecisionKind.USER_INPUT, values={"seat": "12A"}), Run.UserInputProvided),
])
def test_given_a_paused_run_when_a_decision_is_made_then_its_event_records_the_request(
        call: dict, decision: Decision, event: type) -> None:
    run = a_run_paused_on(call)

    run.decide(decision, decided_by="ann", request_key="k1", request_digest="d1")

    [recorded] = run.collect_events()
    assert isinstance(recorded, event)
    assert (recorded.decided_by, recorded.request_key, recorded.request_digest) == (
        "ann", "k1", "d1")
    assert run.calls["c1"].decision.request_digest == "d1"


def test_given_a_paused_run_when_an_expiry_is_sent_as_a_decision_then_it_is_refused() -> None:
    run = a_run_paused_on(a_confirmation_call("c1"))

    with pytest.raises(WrongDecisionKind):
        run.decide(Decision("c1", DecisionKind.EXPIRED), decided_by="ann")


@pytest.mark.parametrize("nobody", ["", "  "])
def test_given_a_paused_run_when_a_decision_names_nobody_then_it_is_refused(nobody: str) -> None:
    run = a_run_paused_on(a_confirmation_call("c1"))

    with pytest.raises(InvalidDecision, match="who made it"):
        run.decide(Decision("c1", DecisionKind.CONFIRMED), decided_by=nobody)
    with pytest.raises(InvalidDecision, match="who made it"):
        run.cancel(cancelled_by=nobody)
    assert run.collect_events() == []


# ------------------------------------------------- outcomes after the run ended


def test_given_a_run_cancelled_while_its_tool_ran_when_the_outcome_comes_then_it_is_recorded(
        ) -> None:
    run = a_run_running("c1")
    run.cancel(cancelled_by="bob")
    run.collect_events()

    run.record_tool_result("c1", "done")

    assert names(run.collect_events()) == ["ToolExecuted"]
    assert run.calls["c1"].state == CallState.EXECUTED
    assert run.status == RunStatus.CANCELLED  # and no model turn may follow
    with pytest.raises(InvalidRunTransition):
        run.record_model_response(model="m", provider="p", content="x", tool_calls=[])


def test_given_a_run_failed_while_its_tool_ran_when_it_fails_too_then_the_failure_is_recorded(
        ) -> None:
    run = a_run_running("c1")
    run.fail("model error")
    run.collect_events()

    run.record_tool_failure("c1", "boom")

    assert names(run.collect_events()) == ["ToolFailed"]
    assert run.calls["c1"].state == CallState.FAILED


def test_given_a_call_in_doubt_when_its_late_outcome_comes_then_it_settles_the_call() -> None:
    run = a_run_in_doubt_on("c1")

    run.record_tool_result("c1", "done after all")

    assert run.calls["c1"].state == CallState.EXECUTED


# ------------------------------------------------------------------- retry


def test_given_a_running_call_past_its_deadline_when_it_is_retried_then_a_new_attempt_starts(
        ) -> None:
    run = a_run_running("c1")

    run.retry_tool("c1", now=DEADLINE + timedelta(seconds=1),
                   deadline=DEADLINE + timedelta(minutes=5))

    [started] = run.collect_events()
    assert isinstance(started, Run.ToolExecutionStarted)
    assert (started.attempt, run.calls["c1"].attempts) == (2, 2)
    assert run.calls["c1"].deadline == DEADLINE + timedelta(minutes=5)


def test_given_a_running_call_before_its_deadline_when_it_is_retried_then_it_is_refused(
        ) -> None:
    run = a_run_running("c1")

    with pytest.raises(InvalidRunTransition, match="may still finish"):
        run.retry_tool("c1", now=DEADLINE - timedelta(seconds=1), deadline=DEADLINE)
    assert run.collect_events() == []


def test_given_a_call_not_running_when_it_is_retried_then_it_is_refused() -> None:
    run = a_run_paused_on(a_confirmation_call("c1"))
    run.confirm_tool("c1", decided_by="ann")
    run.continue_run()
    run.collect_events()

    with pytest.raises(InvalidRunTransition, match="not running"):
        run.retry_tool("c1", now=DEADLINE, deadline=DEADLINE)


# ------------------------------------------------------------- replies


@pytest.mark.parametrize(("call", "reply", "decision"), [
    (a_confirmation_call("c1"), Reply("c1", confirmed=True, note="ok"),
     Decision("c1", DecisionKind.CONFIRMED, note="ok")),
    (a_confirmation_call("c1"), Reply("c1", confirmed=True, tool_args={"to": "Rome"}),
     Decision("c1", DecisionKind.CONFIRMED, approved_args={"to": "Rome"})),
    (a_confirmation_call("c1"), Reply("c1", confirmed=False, note="no"),
     Decision("c1", DecisionKind.REJECTED, note="no")),
    (an_external_call("c1"), Reply("c1", result="42"),
     Decision("c1", DecisionKind.EXTERNAL_RESULT, result="42")),
    (an_external_call("c1"), Reply("c1", confirmed=False),
     Decision("c1", DecisionKind.REJECTED)),
    (a_user_input_call("c1", "seat", "meal"), Reply("c1", values={"seat": "1A", "meal": None}),
     Decision("c1", DecisionKind.USER_INPUT, values={"seat": "1A"})),
    # A result for a call that waits for a confirmation: the wrong kind, for the run to
    # refuse (409), not to ignore.
    (a_confirmation_call("c1"), Reply("c1", result="42"),
     Decision("c1", DecisionKind.EXTERNAL_RESULT, result="42")),
])
def test_given_a_paused_run_when_a_reply_comes_then_it_makes_its_decision(
        call: dict, reply: Reply, decision: Decision) -> None:
    run = a_run_paused_on(call)

    assert run.decisions_for([reply]) == [decision]


@pytest.mark.parametrize("reply", [
    Reply("c1"),  # nothing decided: decisions may come one at a time
    Reply("c1", confirmed=True),  # Agno ignores ``confirmed`` on an external call
])
def test_given_an_external_call_when_a_reply_decides_nothing_then_it_makes_none(
        reply: Reply) -> None:
    run = a_run_paused_on(an_external_call("c1"))

    assert run.decisions_for([reply]) == []


def test_given_a_decided_call_when_a_reply_repeats_it_beside_a_new_one_then_it_passes(
        ) -> None:
    run = a_run_paused_on(a_confirmation_call("c1"), a_confirmation_call("c2"))
    run.confirm_tool("c1", decided_by="ann")

    assert run.decisions_for([Reply("c1", confirmed=True), Reply("c2", confirmed=False)]) == [
        Decision("c2", DecisionKind.REJECTED)]
    with pytest.raises(ToolCallNotPending, match="already decided") as alone:
        run.decisions_for([Reply("c1", confirmed=True)])
    assert alone.value.decision.decided_by == "ann"
    with pytest.raises(ToolCallNotPending, match="otherwise"):
        run.decisions_for([Reply("c1", confirmed=False), Reply("c2", confirmed=False)])


def test_given_a_call_in_doubt_when_a_reply_confirms_or_gives_its_result_then_it_decides(
        ) -> None:
    run = a_run_in_doubt_on("c1")

    assert run.decisions_for([Reply("c1", confirmed=True)]) == [
        Decision("c1", DecisionKind.CONFIRMED)]
    assert run.decisions_for([Reply("c1", result="it ran")]) == [
        Decision("c1", DecisionKind.EXTERNAL_RESULT, result="it ran")]


def test_given_a_run_when_a_reply_names_no_call_of_it_then_it_is_refused() -> None:
    run = a_run_paused_on(a_confirmation_call("c1"))

    with pytest.raises(ToolCallNotFound):
        run.decisions_for([Reply("c9", confirmed=True)])
