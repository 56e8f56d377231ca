"""The offline model: deterministic tool proposals from plain text, no network."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.models.base import ModelTurn, ToolSpec
from agent.models.offline import OfflineModel
from agent.tools import tool


@tool(requires_confirmation=True)
def delete_records(table_name: str, count: int) -> str:
    """Delete old records from a table.

    Args:
        table_name: The table to delete from.
        count: How many records to delete.
    """
    return f"Deleted {count} records from {table_name}"


@tool
def send_notification(recipient: str, message: str) -> str:
    """Send a notification to someone.

    Args:
        recipient: Who gets it.
        message: What it says.
    """
    return f"Sent to {recipient}"


TOOLS = [delete_records, send_notification]
SPECS: list[ToolSpec] = [t.spec() for t in TOOLS]
MODEL = OfflineModel()


def ask(text: str, specs: list[ToolSpec] = SPECS) -> ModelTurn:
    return MODEL.respond([{"role": "system", "content": "Be careful."},
                          {"role": "user", "content": text}], specs)


def only_call(turn: ModelTurn) -> tuple[str, dict[str, Any]]:
    assert len(turn.tool_calls) == 1, turn
    call = turn.tool_calls[0]
    assert call.id.startswith("call_") and len(call.id) == len("call_") + 24
    return call.name, call.args


def test_identity() -> None:
    assert (MODEL.name, MODEL.provider) == ("offline", "signoff")


def test_seed_example_deletes_from_users_table() -> None:
    assert only_call(ask("Delete 50 old records from the users table")) == (
        "delete_records", {"table_name": "users", "count": 50})


def test_table_after_its_stem() -> None:
    assert only_call(ask("please delete 7 records from table orders")) == (
        "delete_records", {"table_name": "orders", "count": 7})


def test_send_notification_takes_recipient_and_quoted_message() -> None:
    turn = ask('Send a notification to alice saying "the report is ready"')
    assert only_call(turn) == (
        "send_notification", {"recipient": "alice", "message": "the report is ready"})
    assert turn.content is None


def test_email_is_preferred_for_recipient() -> None:
    assert only_call(ask("send 'hi there' to the team: bob@example.com")) == (
        "send_notification", {"recipient": "bob@example.com", "message": "hi there"})


def test_unfillable_required_params_are_left_out() -> None:
    assert only_call(ask("delete everything")) == ("delete_records", {})


def test_explicit_call_syntax_several_lines() -> None:
    turn = ask('call delete_records {"table_name": "logs", "count": 3}\n'
               "call send_notification {\"recipient\": \"ops\", \"message\": \"bye\"}")
    assert [(c.name, c.args) for c in turn.tool_calls] == [
        ("delete_records", {"table_name": "logs", "count": 3}),
        ("send_notification", {"recipient": "ops", "message": "bye"}),
    ]
    assert len({c.id for c in turn.tool_calls}) == 2


def test_explicit_python_call_syntax() -> None:
    assert only_call(ask("delete_records(table_name='sessions', count=12)")) == (
        "delete_records", {"table_name": "sessions", "count": 12})


def test_explicit_call_of_unknown_tool_falls_back_to_heuristics() -> None:
    turn = ask('call drop_table {"name": "users"}')
    assert turn.tool_calls == [] and turn.content


def test_explicit_call_with_wrong_types_is_refused_with_text() -> None:
    turn = ask("delete_records(table_name='x', count=2.5)")
    assert turn.tool_calls == []
    assert turn.content == ("(offline model) Cannot propose: "
                            "delete_records: count must be integer, not float")
    assert "no parameter 'force'" in (ask('call delete_records {"force": true}').content or "")


def test_tool_results_give_done() -> None:
    first = [{"role": "user", "content": "Delete 50 old records from the users table"}]
    proposal = MODEL.respond(first, SPECS).tool_calls[0]
    messages = [*first,
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": proposal.id, "type": "function",
                     "function": {"name": proposal.name,
                                  "arguments": json.dumps(proposal.args)}}]},
                {"role": "tool", "tool_call_id": proposal.id,
                 "content": "Deleted 50 records from users"}]
    turn = MODEL.respond(messages, SPECS)
    assert turn == ModelTurn(content="Done. Deleted 50 records from users")


def test_results_joined_in_call_order_and_rejection_note() -> None:
    messages = [{"role": "user", "content": "do both"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "a", "type": "function",
                     "function": {"name": "delete_records", "arguments": "{}"}},
                    {"id": "b", "type": "function",
                     "function": {"name": "send_notification", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "b", "content": "Sent to alice"},
                {"role": "tool", "tool_call_id": "a", "content": "not today"}]
    assert MODEL.respond(messages, SPECS).content == "Done. not today; Sent to alice"


def test_unmatched_message_answers_text() -> None:
    turn = ask("What is the weather like?")
    assert turn.tool_calls == []
    assert turn.content is not None and "What is the weather like?" in turn.content
    assert ask("hello", []).content == "(offline model) You said: hello"


def test_deterministic_and_ids_depend_on_history() -> None:
    text = "Delete 50 old records from the users table"
    assert ask(text) == ask(text)
    later = MODEL.respond([{"role": "user", "content": "hi"},
                           {"role": "assistant", "content": "hello"},
                           {"role": "user", "content": text}], SPECS)
    assert later.tool_calls[0].id != ask(text).tool_calls[0].id


_TYPES: dict[str, Any] = {"string": str, "integer": int, "number": (int, float),
                          "boolean": bool}
_WORDS = st.sampled_from(["delete", "send", "records", "notification", "table", "to",
                          "the", "users", "alice", "50", "-3", "2.5", '"quoted text"',
                          "'single'", "a@b.co", "from", "call", "delete_records", "{", "}",
                          "(", ")", "count=", "table_name=", ",", "\n", "true", "[]",
                          "delete_records(count=2.5)", 'call send_notification {"to": 1}'])
_MESSAGES = st.one_of(st.text(max_size=200),
                      st.lists(st.one_of(_WORDS, st.text(max_size=8)), max_size=25)
                      .map(" ".join))


@settings(max_examples=300, deadline=None)
@given(_MESSAGES)
def test_never_raises_and_calls_match_schema(text: str) -> None:
    turn = ask(text)
    assert turn == ask(text)
    assert turn.content is not None or turn.tool_calls
    by_name = {s.name: s for s in SPECS}
    for call in turn.tool_calls:
        assert call.name in by_name
        props = by_name[call.name].parameters["properties"]
        for key, value in call.args.items():
            assert key in props
            expected = _TYPES[props[key]["type"]]
            assert isinstance(value, expected)
            assert not (isinstance(value, bool) and expected is not bool)
