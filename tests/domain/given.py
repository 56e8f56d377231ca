"""Builders for the *given* part of the domain specs: runs made by earlier commands.

Every builder returns a run whose events are already collected, so the *when* command's
events are the only ones ``run.collect_events()`` returns.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from domain.run import Run
from domain.values import RUN_CONFIRMATION_TOOL, Requirement

DEADLINE = datetime(2030, 1, 1, tzinfo=UTC)


def a_call(call_id: str, requires: Requirement | None = None, *, name: str = "book_flight",
           args: dict[str, Any] | None = None, **options: Any) -> dict[str, Any]:
    """The arguments of one ``request_tool_call``."""
    return {"tool_call_id": call_id, "tool_name": name, "tool_args": args or {"to": "Oslo"},
            "requires": requires, **options}


def a_confirmation_call(call_id: str, **options: Any) -> dict[str, Any]:
    return a_call(call_id, Requirement.CONFIRMATION, **options)


def an_external_call(call_id: str, **options: Any) -> dict[str, Any]:
    return a_call(call_id, Requirement.EXTERNAL_EXECUTION, **options)


def a_user_input_call(call_id: str, *fields: str, **options: Any) -> dict[str, Any]:
    schema = [{"name": f, "field_type": "str", "description": None, "value": None}
              for f in fields or ("seat",)]
    return a_call(call_id, Requirement.USER_INPUT, user_input_schema=schema, **options)


def done(run: Run) -> Run:
    run.collect_events()
    return run


def a_started_run(*, instructions: str = "Be brief.") -> Run:
    return done(Run.start(agent_id="travel", agent_name="Travel agent", user_id="u1",
                          session_id="s1", input="Book me a flight", instructions=instructions))


def the_model_asks_for(run: Run, *calls: dict[str, Any], content: str | None = None) -> Run:
    run.record_model_response(
        model="gpt-test", provider="test", content=content, input_tokens=10, output_tokens=5,
        tool_calls=[{"id": c["tool_call_id"], "name": c["tool_name"], "args": c["tool_args"]}
                    for c in calls])
    for c in calls:
        run.request_tool_call(**c)
    return done(run)


def a_run_requesting(*calls: dict[str, Any]) -> Run:
    """RUNNING, the model having asked for ``calls`` (not yet paused)."""
    return the_model_asks_for(a_started_run(), *calls)


def a_run_paused_on(*calls: dict[str, Any]) -> Run:
    run = a_run_requesting(*calls)
    run.pause()
    return done(run)


def a_run_running(call_id: str = "c1") -> Run:
    """RUNNING, with one call (that needed no decision) started."""
    run = a_run_requesting(a_call(call_id))
    run.start_tool(call_id, deadline=DEADLINE)
    return done(run)


def a_run_in_doubt_on(call_id: str = "c1") -> Run:
    """PAUSED on one call whose outcome a crash left unknown."""
    run = a_run_running(call_id)
    run.mark_in_doubt(call_id)
    run.pause()
    return done(run)


def a_run_awaiting_run_confirmation() -> Run:
    """As the agent loop does for an agent with ``confirm_before_run``."""
    run = a_started_run()
    run.request_tool_call(tool_call_id="confirm_run_1", tool_name=RUN_CONFIRMATION_TOOL,
                          tool_args={"message": run.input}, requires=Requirement.CONFIRMATION,
                          confirmation_message="Run this agent?", editable_args=False)
    run.pause()
    return done(run)


def names(events: list[Any]) -> list[str]:
    return [type(e).__name__ for e in events]
