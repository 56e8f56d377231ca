"""Continuing a paused run, running tools, calls in doubt, and the end of a run."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from domain.errors import (
    InvalidRunTransition,
    ToolCallNotFound,
    ToolCallNotPending,
    WrongDecisionKind,
)
from domain.run import Run
from domain.values import CallState, RunStatus
from tests.domain.given import (
    DEADLINE,
    a_call,
    a_confirmation_call,
    a_run_in_doubt_on,
    a_run_paused_on,
    a_run_requesting,
    a_run_running,
    a_started_run,
    a_user_input_call,
    an_external_call,
    done,
    names,
)

# ------------------------------------------------------------------ continue


def test_given_a_paused_run_with_every_call_decided_when_it_continues_then_it_runs() -> None:
    run = a_run_paused_on(a_confirmation_call("c1"))
    run.confirm_tool("c1", decided_by="ann")
    run.collect_events()

    run.continue_run()

    assert names(run.collect_events()) == ["RunContinued"]
    assert (run.status, run.waiting_for, run.paused_at) == (RunStatus.RUNNING, [], None)


def test_given_a_paused_run_with_a_call_undecided_when_it_continues_then_it_is_refused() -> None:
    run = a_run_paused_on(a_confirmation_call("c1"))

    with pytest.raises(InvalidRunTransition, match="c1"):
        run.continue_run()

    assert run.collect_events() == []
    assert run.status == RunStatus.PAUSED


def test_given_two_waiting_calls_when_decisions_come_one_at_a_time_then_only_the_last_frees_it(
) -> None:
    run = a_run_paused_on(a_confirmation_call("c1"), an_external_call("c2"))

    run.confirm_tool("c1", decided_by="ann")
    assert names(run.collect_events()) == ["ToolConfirmed"]
    with pytest.raises(InvalidRunTransition, match="c2"):
        run.continue_run()
    assert run.collect_events() == []

    run.provide_external_result("c2", decided_by="bot", result="42")
    run.continue_run()

    assert names(run.collect_events()) == ["ExternalResultProvided", "RunContinued"]
    assert run.status == RunStatus.RUNNING


def test_given_a_running_run_when_it_continues_then_it_is_refused() -> None:
    run = a_run_requesting(a_call("c1"))

    with pytest.raises(InvalidRunTransition):
        run.continue_run()

    assert run.collect_events() == []


# ---------------------------------------------------------------- start_tool


def test_given_an_approved_call_when_it_starts_then_the_first_attempt_is_recorded() -> None:
    run = a_run_requesting(a_call("c1"))

    run.start_tool("c1", deadline=DEADLINE)

    [event] = run.collect_events()
    assert isinstance(event, Run.ToolExecutionStarted)
    assert (event.tool_call_id, event.attempt, event.deadline) == ("c1", 1, DEADLINE)
    assert run.calls["c1"].state == CallState.RUNNING
    assert run.calls["c1"].deadline == DEADLINE


def test_given_a_confirmed_call_when_it_starts_then_it_runs() -> None:
    run = a_run_paused_on(a_user_input_call("c1"))
    run.provide_user_input("c1", decided_by="ann", values={"seat": "1A"})
    run.continue_run()
    run.collect_events()

    run.start_tool("c1", deadline=DEADLINE)

    assert names(run.collect_events()) == ["ToolExecutionStarted"]


@pytest.mark.parametrize("given_run", [
    pytest.param(lambda: a_run_requesting(a_confirmation_call("c1")), id="pending"),
    pytest.param(lambda: a_run_running("c1"), id="already-running"),
])
def test_given_a_call_that_is_not_approved_when_it_starts_then_it_is_refused(given_run) -> None:
    run = given_run()

    with pytest.raises(InvalidRunTransition):
        run.start_tool("c1", deadline=DEADLINE)

    assert run.collect_events() == []


def test_given_a_rejected_call_when_it_starts_then_it_is_refused() -> None:
    run = a_run_paused_on(a_confirmation_call("c1"))
    run.reject_tool("c1", decided_by="ann")
    run.continue_run()
    run.collect_events()

    with pytest.raises(InvalidRunTransition):
        run.start_tool("c1", deadline=DEADLINE)

    assert run.collect_events() == []


def test_given_a_paused_run_when_an_approved_call_starts_then_it_is_refused() -> None:
    run = a_run_paused_on(a_call("c1"), a_confirmation_call("c2"))

    with pytest.raises(InvalidRunTransition):
        run.start_tool("c1", deadline=DEADLINE)

    assert run.collect_events() == []


def test_given_a_run_when_an_unknown_call_starts_then_it_is_not_found() -> None:
    run = a_run_requesting(a_call("c1"))

    with pytest.raises(ToolCallNotFound):
        run.start_tool("nope", deadline=DEADLINE)

    assert run.collect_events() == []


# ----------------------------------------------------------- tool outcomes


def test_given_a_running_call_when_its_result_is_recorded_then_it_is_executed() -> None:
    run = a_run_running("c1")

    run.record_tool_result("c1", "booked")

    [event] = run.collect_events()
    assert isinstance(event, Run.ToolExecuted)
    assert (event.tool_call_id, event.result) == ("c1", "booked")
    assert (run.calls["c1"].state, run.calls["c1"].result) == (CallState.EXECUTED,
                                                                      "booked")


def test_given_a_running_call_when_its_failure_is_recorded_then_it_failed() -> None:
    run = a_run_running("c1")

    run.record_tool_failure("c1", "ValueError: bad date")

    [event] = run.collect_events()
    assert isinstance(event, Run.ToolFailed)
    assert event.error == "ValueError: bad date"
    assert (run.calls["c1"].state, run.calls["c1"].error) == (CallState.FAILED,
                                                                     "ValueError: bad date")


@pytest.mark.parametrize("record", [
    pytest.param(lambda run: run.record_tool_result("c1", "x"), id="result"),
    pytest.param(lambda run: run.record_tool_failure("c1", "x"), id="failure"),
])
def test_given_a_call_not_started_when_an_outcome_is_recorded_then_it_is_refused(record) -> None:
    run = a_run_requesting(a_call("c1"))

    with pytest.raises(InvalidRunTransition):
        record(run)

    assert run.collect_events() == []


def test_given_an_executed_call_when_a_second_result_is_recorded_then_it_is_refused() -> None:
    run = a_run_running("c1")
    run.record_tool_result("c1", "booked")
    run.collect_events()

    with pytest.raises(InvalidRunTransition):
        run.record_tool_result("c1", "booked twice")

    assert run.collect_events() == []
    assert run.calls["c1"].result == "booked"


# ------------------------------------------------------------------ in doubt


def test_given_a_running_call_when_it_is_marked_in_doubt_then_the_run_waits_for_a_person() -> None:
    run = a_run_running("c1")

    run.mark_in_doubt("c1")
    run.pause()

    assert names(run.collect_events()) == ["ToolCallInDoubt", "RunPaused"]
    assert run.calls["c1"].state == CallState.IN_DOUBT
    assert run.waiting_for == ["c1"]
    assert [c.tool_call_id for c in run.pending_calls()] == ["c1"]


@pytest.mark.parametrize("given_run", [
    pytest.param(lambda: a_run_requesting(a_call("c1")), id="approved"),
    pytest.param(lambda: a_run_requesting(a_confirmation_call("c1")), id="pending"),
    pytest.param(lambda: a_run_in_doubt_on("c1"), id="in-doubt"),
])
def test_given_a_call_that_is_not_running_when_it_is_marked_in_doubt_then_it_is_refused(
    given_run,
) -> None:
    run = given_run()

    with pytest.raises(InvalidRunTransition):
        run.mark_in_doubt("c1")

    assert run.collect_events() == []


def test_given_an_in_doubt_call_when_it_is_confirmed_then_it_runs_again_as_attempt_two() -> None:
    run = a_run_in_doubt_on("c1")

    run.confirm_tool("c1", decided_by="ann", note="run it again")
    run.continue_run()
    run.start_tool("c1", deadline=DEADLINE + timedelta(minutes=1))

    events = run.collect_events()
    assert names(events) == ["ToolConfirmed", "RunContinued", "ToolExecutionStarted"]
    assert events[-1].attempt == 2
    assert run.calls["c1"].attempts == 2


def test_given_an_in_doubt_call_when_it_is_rejected_then_it_is_rejected() -> None:
    run = a_run_in_doubt_on("c1")

    run.reject_tool("c1", decided_by="ann", reason="it did not happen")

    assert names(run.collect_events()) == ["ToolRejected"]
    assert run.calls["c1"].state == CallState.REJECTED


def test_given_an_in_doubt_call_when_its_result_is_provided_then_it_is_answered() -> None:
    run = a_run_in_doubt_on("c1")

    run.provide_external_result("c1", decided_by="ann", result="it was booked")

    assert names(run.collect_events()) == ["ExternalResultProvided"]
    assert run.calls["c1"].state == CallState.ANSWERED
    assert run.calls["c1"].result == "it was booked"


def test_given_an_in_doubt_call_when_user_input_is_provided_then_it_is_refused() -> None:
    run = a_run_in_doubt_on("c1")

    with pytest.raises(WrongDecisionKind):
        run.provide_user_input("c1", decided_by="ann", values={})

    assert run.collect_events() == []
    assert run.calls["c1"].state == CallState.IN_DOUBT


def test_given_a_decided_in_doubt_call_when_it_is_decided_again_then_it_is_not_pending() -> None:
    run = a_run_in_doubt_on("c1")
    run.reject_tool("c1", decided_by="ann")
    run.collect_events()

    with pytest.raises(ToolCallNotPending) as raised:
        run.confirm_tool("c1", decided_by="bob")

    assert raised.value.decision.decided_by == "ann"
    assert run.collect_events() == []


@pytest.mark.parametrize(("record", "state"), [
    pytest.param(lambda run: run.record_tool_result("c1", "late"), CallState.EXECUTED, id="ok"),
    pytest.param(lambda run: run.record_tool_failure("c1", "late"), CallState.FAILED, id="err"),
])
def test_given_an_in_doubt_call_when_a_late_outcome_arrives_then_it_resolves_it_and_goes_on(
    record, state: CallState,
) -> None:
    run = a_run_in_doubt_on("c1")

    record(run)

    assert names(run.collect_events())[1:] == ["RunContinued"]  # nothing left to wait for
    assert run.calls["c1"].state == state
    assert run.pending_calls() == []
    assert run.status == RunStatus.RUNNING


def test_given_two_calls_in_doubt_when_a_late_outcome_resolves_one_then_the_run_still_waits(
) -> None:
    run = a_run_requesting(a_call("c1"), a_call("c2"))
    run.start_tool("c1", deadline=DEADLINE)
    run.start_tool("c2", deadline=DEADLINE)
    run.mark_in_doubt("c1")
    run.mark_in_doubt("c2")
    run.pause()
    done(run)

    run.record_tool_result("c1", "late")

    assert names(run.collect_events()) == ["ToolExecuted"]
    assert (run.status, [c.tool_call_id for c in run.pending_calls()]) == (
        RunStatus.PAUSED, ["c2"])


def test_given_an_in_doubt_call_with_edited_args_when_confirmed_again_then_it_runs_with_them(
) -> None:
    run = a_run_paused_on(a_confirmation_call("c1", args={"amount": 10000}))
    run.confirm_tool("c1", decided_by="ann", approved_args={"amount": 100})
    run.continue_run()
    run.start_tool("c1", deadline=DEADLINE)
    run.mark_in_doubt("c1")
    run.pause()
    done(run)

    run.confirm_tool("c1", decided_by="bob", note="run it again")  # no arguments sent

    [confirmed] = run.collect_events()
    assert confirmed.approved_args == {"amount": 100}  # recorded, as the attempt ran
    assert run.calls["c1"].args == {"amount": 100}


# ------------------------------------------------------------------ complete


def test_given_a_run_with_every_call_resolved_when_it_completes_then_run_completed_is_recorded(
) -> None:
    run = a_run_paused_on(a_call("c1"), an_external_call("c2"), a_confirmation_call("c3"))
    run.provide_external_result("c2", decided_by="bot", result="42")
    run.reject_tool("c3", decided_by="ann")
    run.continue_run()
    run.start_tool("c1", deadline=DEADLINE)
    run.record_tool_failure("c1", "boom")
    done(run)

    run.complete("Sorry, no flight.")

    [event] = run.collect_events()
    assert isinstance(event, Run.RunCompleted)
    assert event.content == "Sorry, no flight."
    assert (run.status, run.content) == (RunStatus.COMPLETED, "Sorry, no flight.")


@pytest.mark.parametrize("given_run", [
    pytest.param(lambda: a_run_requesting(a_call("c1")), id="approved"),
    pytest.param(lambda: a_run_requesting(a_confirmation_call("c1")), id="pending"),
    pytest.param(lambda: a_run_running("c1"), id="running"),
    pytest.param(lambda: _in_doubt_but_running(), id="in-doubt"),
])
def test_given_a_run_with_an_open_call_when_it_completes_then_it_is_refused(given_run) -> None:
    run = given_run()

    with pytest.raises(InvalidRunTransition, match="c1"):
        run.complete("done")

    assert run.collect_events() == []


def _in_doubt_but_running() -> Run:
    run = a_run_running("c1")
    run.mark_in_doubt("c1")
    return done(run)


def test_given_a_paused_run_when_it_completes_then_it_is_refused() -> None:
    run = a_run_paused_on(a_confirmation_call("c1"))
    run.reject_tool("c1", decided_by="ann")
    run.collect_events()

    with pytest.raises(InvalidRunTransition):
        run.complete("done")

    assert run.collect_events() == []


# --------------------------------------------------------------- fail, cancel


def test_given_a_running_run_when_it_fails_then_run_failed_is_recorded() -> None:
    run = a_started_run()

    run.fail("model error: 500")

    [event] = run.collect_events()
    assert isinstance(event, Run.RunFailed)
    assert (run.status, run.error) == (RunStatus.ERROR, "model error: 500")


def test_given_a_paused_run_when_it_is_cancelled_then_its_waiting_calls_are_cancelled() -> None:
    run = a_run_paused_on(a_call("c1"), a_confirmation_call("c2"), an_external_call("c3"))
    run.reject_tool("c3", decided_by="ann")
    run.collect_events()

    run.cancel(cancelled_by="ann", reason="changed my mind")

    [event] = run.collect_events()
    assert isinstance(event, Run.RunCancelled)
    assert (event.cancelled_by, event.reason) == ("ann", "changed my mind")
    assert run.status == RunStatus.CANCELLED
    assert (run.cancelled_by, run.cancel_reason, run.waiting_for) == ("ann", "changed my mind",
                                                                      [])
    assert {i: c.state for i, c in run.calls.items()} == {
        "c1": CallState.CANCELLED, "c2": CallState.CANCELLED, "c3": CallState.REJECTED}
    assert run.pending_calls() == []


def test_given_a_run_with_a_call_in_doubt_when_it_is_cancelled_then_the_call_is_cancelled(
) -> None:
    run = a_run_in_doubt_on("c1")

    run.cancel(cancelled_by="ann")

    assert names(run.collect_events()) == ["RunCancelled"]
    assert run.calls["c1"].state == CallState.CANCELLED


def ended(end: Callable[[Run], None]) -> Callable[[], Run]:
    def build() -> Run:
        run = a_started_run()
        end(run)
        return done(run)
    return build


@pytest.mark.parametrize("given_run", [
    pytest.param(ended(lambda r: r.cancel(cancelled_by="ann")), id="cancelled"),
    pytest.param(ended(lambda r: r.fail("boom")), id="failed"),
    pytest.param(ended(lambda r: (r.record_model_response(model="m", provider="p", content="hi",
                                                          tool_calls=[]),
                                  r.complete("hi"))), id="completed"),
])
@pytest.mark.parametrize("end", [
    pytest.param(lambda r: r.cancel(cancelled_by="bob"), id="cancel"),
    pytest.param(lambda r: r.fail("again"), id="fail"),
])
def test_given_an_ended_run_when_it_is_cancelled_or_failed_then_it_is_refused(
    given_run, end,
) -> None:
    run = given_run()
    status = run.status

    with pytest.raises(InvalidRunTransition):
        end(run)

    assert run.collect_events() == []
    assert run.status == status
