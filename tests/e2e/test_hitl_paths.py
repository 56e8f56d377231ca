"""Every human-in-the-loop path, end to end over HTTP with Agno's wire format.

Agents: the demo ``data_manager`` (confirmation) and ``support_desk`` (external execution,
user input), and the test agents ``ops`` (a tool whose arguments may not be edited, a
``stop_after_tool_call`` tool, a failing tool) and ``gatekeeper`` (``confirm_before_run``).
The offline model proposes what ``docs/offline-model.md`` says. Each test starts its own
server (``server`` fixture: SQLite and PostgreSQL); related paths share one where natural.
"""

from __future__ import annotations

import pytest

from tests.e2e.flows import (
    USER,
    assert_problem,
    continue_,
    decided,
    events,
    payloads,
    pending,
    post_continue,
    start,
    types,
)
from tests.support.server import LiveServer

pytestmark = pytest.mark.e2e

SEED_MESSAGE = "Delete 50 old records from the users table"
RAN = {"ToolExecutionStarted", "ToolExecuted", "ToolFailed"}  # signs that a tool was called


def test_reject_with_a_note(server: LiveServer) -> None:
    with server.client() as c:
        run = start(c, "data_manager", SEED_MESSAGE)
        [tool] = run["tools"]
        done = continue_(c, run, [decided(tool, confirmed=False,
                                          confirmation_note="not today")])
        assert done["status"] == "COMPLETED"
        # The model is told why (the tool message holds the note) and says so.
        assert done["content"] == "Done. not today"
        tool_messages = [m for m in done["messages"] if m["role"] == "tool"]
        assert [(m["tool_call_id"], m["content"]) for m in tool_messages] == [
            (tool["tool_call_id"], "not today")]
        [rejected] = done["tools"]
        assert (rejected["confirmed"], rejected["confirmation_note"]) == (False, "not today")

        history = events(c, run["run_id"])
        assert [e["type"] for e in history] == [
            "RunStarted", "ModelResponded", "ToolCallRequested", "RunPaused", "ToolRejected",
            "RunContinued", "ModelResponded", "RunCompleted"]
        assert not RAN & {e["type"] for e in history}  # the tool never ran
        [reject] = payloads(history, "ToolRejected")
        assert reject["tool_call_id"] == tool["tool_call_id"]
        assert (reject["reason"], reject["decided_by"]) == ("not today", USER)


def test_external_execution_and_user_input(server: LiveServer) -> None:
    with server.client() as c:
        # External execution: the billing system, not signoff, runs check_payment.
        run = start(c, "support_desk", "check payment for order 77")
        assert run["status"] == "PAUSED"
        [tool] = run["tools"]
        assert (tool["tool_name"], tool["tool_args"]) == ("check_payment", {"order_id": "77"})
        assert tool["external_execution_required"] is True
        assert tool["requires_confirmation"] is False
        assert tool["result"] is None
        done = continue_(c, run, [decided(tool, result="paid in full")])
        assert done["status"] == "COMPLETED"
        assert done["content"] == "Done. paid in full"
        assert done["tools"][0]["result"] == "paid in full"
        history = events(c, run["run_id"])
        assert not RAN & {e["type"] for e in history}  # never executed by signoff
        [provided] = payloads(history, "ExternalResultProvided")
        assert provided["tool_call_id"] == tool["tool_call_id"]
        assert (provided["result"], provided["decided_by"]) == ("paid in full", USER)

        # User input: a person supplies the refund's receipt email.
        run = start(c, "support_desk", "Issue a refund of 30 for order A17")
        assert run["status"] == "PAUSED"
        [tool] = run["tools"]
        assert tool["tool_name"] == "issue_refund"
        assert tool["tool_args"] == {"order_id": "A17", "amount": 30}
        assert tool["requires_user_input"] is True
        fields = {f["name"]: f for f in tool["user_input_schema"]}
        assert list(fields) == ["email"]
        assert fields["email"]["value"] is None
        assert {"name", "field_type", "description", "value"} <= fields["email"].keys()
        schema = [{**f, "value": "ana@example.com"} if f["name"] == "email" else f
                  for f in tool["user_input_schema"]]
        done = continue_(c, run, [decided(tool, user_input_schema=schema)])
        assert done["status"] == "COMPLETED"
        assert done["content"] == ("Done. Refunded 30.0 on order A17; "
                                   "receipt sent to ana@example.com")
        [ran] = done["tools"]
        assert ran["tool_args"] == {"order_id": "A17", "amount": 30, "email": "ana@example.com"}
        assert ran["answered"] is True
        history = events(c, run["run_id"])
        [provided] = payloads(history, "UserInputProvided")
        assert provided["values"] == {"email": "ana@example.com"}
        assert provided["decided_by"] == USER
        [executed] = payloads(history, "ToolExecuted")
        assert "ana@example.com" in executed["result"]


def test_two_pending_calls_decided_in_two_requests(server: LiveServer) -> None:
    message = ('call delete_records {"table_name": "logs", "count": 3}\n'
               'call send_notification {"recipient": "ops", "message": "bye"}')
    with server.client() as c:
        run = start(c, "data_manager", message)
        assert run["status"] == "PAUSED"
        delete, notify = run["tools"]
        assert (delete["tool_name"], notify["tool_name"]) == ("delete_records",
                                                              "send_notification")
        assert [t["tool_call_id"] for t in pending(run)] == [delete["tool_call_id"],
                                                             notify["tool_call_id"]]

        # First request: confirm one; the other goes back as it came (confirmed: null).
        half = continue_(c, run, [decided(delete, confirmed=True), notify])
        assert half["status"] == "PAUSED"
        assert [t["tool_call_id"] for t in pending(half)] == [notify["tool_call_id"]]
        assert types(c, run["run_id"])[-2:] == ["RunPaused", "ToolConfirmed"]  # nothing ran

        # Second request: decide the other (rejected); the run goes on and completes.
        done = continue_(c, half, [decided(notify, confirmed=False,
                                           confirmation_note="not now")])
        assert done["status"] == "COMPLETED"
        assert done["content"] == "Done. Deleted 3 records from logs; not now"
        history = events(c, run["run_id"])
        assert [e["type"] for e in history] == [
            "RunStarted", "ModelResponded", "ToolCallRequested", "ToolCallRequested",
            "RunPaused", "ToolConfirmed", "ToolRejected", "RunContinued",
            "ToolExecutionStarted", "ToolExecuted", "ModelResponded", "RunCompleted"]
        assert [p["tool_call_id"] for p in payloads(history, "ToolExecuted")] == [
            delete["tool_call_id"]]


def test_edited_arguments(server: LiveServer) -> None:
    with server.client() as c:
        # data_manager: the reviewer lowers the count; the tool runs with the edit.
        run = start(c, "data_manager", SEED_MESSAGE)
        [tool] = run["tools"]
        edited = {"table_name": "users", "count": 5}
        done = continue_(c, run, [decided(tool, confirmed=True, tool_args=edited)])
        assert done["status"] == "COMPLETED"
        assert done["content"] == "Done. Deleted 5 records from users"
        history = events(c, run["run_id"])
        [requested] = payloads(history, "ToolCallRequested")
        [confirmed] = payloads(history, "ToolConfirmed")
        assert requested["tool_args"] == {"table_name": "users", "count": 50}
        assert confirmed["approved_args"] == edited
        [executed] = payloads(history, "ToolExecuted")
        assert executed["result"] == "Deleted 5 records from users"
        [call] = c.get(f"/runs/{run['run_id']}").json()["tool_calls"]
        assert (call["tool_args"], call["approved_args"]) == (requested["tool_args"], edited)

        # ops.transfer_money: arguments may not be edited (422); unedited, it runs.
        run = start(c, "ops", 'call transfer_money {"account": "acme", "amount": 10}')
        [tool] = run["tools"]
        before = events(c, run["run_id"])
        r = post_continue(c, "ops", run["run_id"], stream="false", tools=[
            decided(tool, confirmed=True, tool_args={"account": "mallory", "amount": 10})])
        problem = assert_problem(r, 422)
        assert "transfer_money" in problem["detail"]
        assert events(c, run["run_id"]) == before
        done = continue_(c, run, [decided(tool, confirmed=True)])
        assert done["content"] == "Done. Transferred 10 to acme"


def test_confirm_before_run(server: LiveServer) -> None:
    message = 'call slow_delete {"table_name": "t1"}'
    with server.client() as c:
        # The run pauses before the model is asked anything, on a confirm_run pseudo tool.
        run = start(c, "gatekeeper", message)
        assert run["status"] == "PAUSED"
        [gate] = run["tools"]
        assert gate["tool_name"] == "confirm_run"
        assert gate["requires_confirmation"] is True
        assert gate["confirmed"] is None
        # The agent's confirmation message is in signoff's own view of the pending call.
        [waiting] = c.get(f"/runs/{run['run_id']}").json()["pending"]
        assert waiting["confirmation_message"] == "Start this run?"
        assert types(c, run["run_id"]) == ["RunStarted", "ToolCallRequested", "RunPaused"]

        # Confirming lets the run go on: the model proposes slow_delete, which pauses too.
        again = continue_(c, run, [decided(gate, confirmed=True)])
        assert again["status"] == "PAUSED"
        assert [t["tool_name"] for t in pending(again)] == ["slow_delete"]
        assert types(c, run["run_id"])[3:] == [
            "ToolConfirmed", "RunContinued", "ModelResponded", "ToolCallRequested", "RunPaused"]

        # Rejecting cancels the run; the model is never asked.
        run = start(c, "gatekeeper", message)
        [gate] = run["tools"]
        done = continue_(c, run, [decided(gate, confirmed=False, confirmation_note="no")])
        assert done["status"] == "CANCELLED"
        history = events(c, run["run_id"])
        assert "ModelResponded" not in {e["type"] for e in history}
        assert history[-1]["type"] == "RunCancelled"
        assert (history[-1]["payload"]["cancelled_by"], history[-1]["payload"]["reason"]) == (
            USER, "no")


def test_cancel_a_paused_run(server: LiveServer) -> None:
    with server.client() as c:
        run = start(c, "data_manager", SEED_MESSAGE)
        r = c.post(f"/agents/data_manager/runs/{run['run_id']}/cancel")
        assert r.status_code == 200, r.text
        cancelled = r.json()
        assert cancelled["status"] == "CANCELLED"
        assert c.get(f"/agents/data_manager/runs/{run['run_id']}").json() == cancelled
        before = events(c, run["run_id"])
        assert before[-1]["type"] == "RunCancelled"

        r = post_continue(c, "data_manager", run["run_id"], stream="false",
                          tools=[decided(t, confirmed=True) for t in run["tools"]])
        assert_problem(r, 409)
        assert events(c, run["run_id"]) == before
        assert not RAN & {e["type"] for e in before}


def test_tool_outcomes_without_a_person(server: LiveServer) -> None:
    with server.client() as c:
        # stop_after_tool_call: once confirmed, the tool's result ends the run.
        run = start(c, "ops", 'call archive_table {"table_name": "old_logs"}')
        assert run["tools"][0]["stop_after_tool_call"] is True
        done = continue_(c, run, [decided(t, confirmed=True) for t in run["tools"]])
        assert done["status"] == "COMPLETED"
        assert done["content"] == "Archived old_logs"
        history = types(c, run["run_id"])
        assert history[-3:] == ["ToolExecutionStarted", "ToolExecuted", "RunCompleted"]
        assert history.count("ModelResponded") == 1  # the model was not asked again

        # A failing tool that needs no confirmation: the failure is recorded, the model is
        # told "Error: …", and the run completes in the same request.
        run = start(c, "ops", 'call failing_tool {"name": "x"}')
        assert run["status"] == "COMPLETED"
        assert run["content"] == "Done. Error: ValueError: cannot process x"
        [tool] = run["tools"]
        assert tool["tool_call_error"] is True
        history_events = events(c, run["run_id"])
        assert [e["type"] for e in history_events] == [
            "RunStarted", "ModelResponded", "ToolCallRequested", "ToolExecutionStarted",
            "ToolFailed", "ModelResponded", "RunCompleted"]
        [failed] = payloads(history_events, "ToolFailed")
        assert failed["error"] == "ValueError: cannot process x"

        # Agno's clients may set confirmed: true on every tool they send back; a call that
        # never waited for anyone (failing_tool here) ignores it.
        run = start(c, "ops", 'call failing_tool {"name": "y"}\n'
                              'call transfer_money {"account": "acme", "amount": 10}')
        assert [t["requires_confirmation"] for t in run["tools"]] == [False, True]
        done = continue_(c, run, [decided(t, confirmed=True) for t in run["tools"]])
        assert done["status"] == "COMPLETED"
        assert done["content"] == ("Done. Error: ValueError: cannot process y; "
                                   "Transferred 10 to acme")
