"""A call's request carries the outcome of the policy that decided whether it needs a
confirmation: decided outside the domain (agent/tools.py ``requirement_for``), recorded
as data."""

from __future__ import annotations

import pytest

from domain.calls import PolicyOutcome
from domain.errors import InvalidDecision
from domain.run import Run
from domain.values import CallState, PolicyVerdict, Requirement
from tests.domain.given import a_call, a_confirmation_call, a_started_run

ALLOWED = PolicyOutcome("settings:small", PolicyVerdict.ALLOWED, "small ones run")
REQUIRED = PolicyOutcome("tool:delete", PolicyVerdict.REQUIRED, "big ones wait")


def test_given_a_running_run_when_a_call_a_policy_allowed_is_requested_then_it_may_run(
) -> None:
    run = a_started_run()

    run.request_tool_call(**a_call("c1", policy=ALLOWED))

    [event] = run.collect_events()
    assert isinstance(event, Run.ToolCallRequested)
    assert (event.requires, event.policy) == (
        None, {"rule": "settings:small", "outcome": "allowed", "reason": "small ones run"})
    assert run.calls["c1"].state == CallState.APPROVED
    assert run.calls["c1"].policy == ALLOWED


def test_given_a_running_run_when_a_call_a_policy_holds_is_requested_then_it_waits() -> None:
    run = a_started_run()

    run.request_tool_call(**a_confirmation_call("c1", policy=REQUIRED))

    [event] = run.collect_events()
    assert (event.requires, event.policy) == ("confirmation", REQUIRED.as_dict())
    assert run.calls["c1"].state == CallState.PENDING
    assert run.calls["c1"].policy == REQUIRED


def test_given_a_rule_that_failed_when_its_call_is_requested_then_the_failure_is_recorded(
) -> None:
    run = a_started_run()
    failed = PolicyOutcome("settings:big", PolicyVerdict.REQUIRED, "the rule failed", error=True)

    run.request_tool_call(**a_confirmation_call("c1", policy=failed))

    [event] = run.collect_events()
    assert event.policy == {"rule": "settings:big", "outcome": "required",
                            "reason": "the rule failed", "error": True}
    assert run.calls["c1"].policy == failed == PolicyOutcome.of(event.policy)


@pytest.mark.parametrize(("requires", "policy"), [
    (Requirement.CONFIRMATION, ALLOWED),
    (None, REQUIRED),
    (Requirement.EXTERNAL_EXECUTION, REQUIRED),
])
def test_given_a_running_run_when_a_policy_does_not_fit_the_call_then_nothing_is_recorded(
        requires: Requirement | None, policy: PolicyOutcome) -> None:
    run = a_started_run()

    with pytest.raises(InvalidDecision):
        run.request_tool_call(**a_call("c1", requires, policy=policy))

    assert run.collect_events() == []


@pytest.mark.parametrize("record", [{"rule": "x", "outcome": "maybe"}, {"outcome": "allowed"}])
def test_a_policy_outcome_names_its_rule_and_says_required_or_allowed(
        record: dict[str, str]) -> None:
    with pytest.raises(InvalidDecision):
        PolicyOutcome.of(record)


def test_given_a_request_recorded_before_policies_when_it_is_read_then_it_has_no_policy(
) -> None:
    # As eventsourcing's mapper reads a version 2 event: upcast, then the state set.
    state = {"tool_call_id": "c1", "tool_name": "t", "tool_args": {}, "requires": None,
             "confirmation_message": None, "user_input_schema": None,
             "stop_after_tool_call": False, "editable_args": True, "hash": "h"}
    Run.ToolCallRequested.upcast_v2_v3(state)
    assert "policy" not in state  # its fields stay those its hash was computed over
    event = object.__new__(Run.ToolCallRequested)
    object.__setattr__(event, "__dict__", state)
    assert event.policy is None  # the class default
