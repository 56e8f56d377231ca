"""The OpenAI adapter, driven through the real ``openai`` SDK against a local fake server."""

from __future__ import annotations

import dataclasses
import socket

import pytest

from agent.models.base import TEXT_SINK, ModelError, ModelTurn, ToolCallProposal, ToolSpec
from agent.models.openai import OpenAIModel
from tests.support.fake_openai import (
    FakeOpenAI,
    error_reply,
    slowly,
    text_reply,
    tool_call_reply,
)

MESSAGES = [
    {"role": "system", "content": "You are helpful."},
    {"role": "user", "content": "Refund order 42."},
]
REFUND = ToolSpec(
    "refund",
    "Refund an order.",
    {"type": "object", "properties": {"order_id": {"type": "integer"}}, "required": ["order_id"]},
)


def model_for(fake: FakeOpenAI, **options: object) -> OpenAIModel:
    return OpenAIModel(base_url=fake.base_url, api_key="sk-test", **options)  # type: ignore[arg-type]


def test_the_model_names_its_model_id_and_the_openai_provider(fake_openai: FakeOpenAI) -> None:
    model = model_for(fake_openai, model="gpt-4.1")
    assert (model.name, model.provider) == ("gpt-4.1", "openai")


def test_a_text_answer_becomes_a_turn_with_content_and_token_usage(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.script(text_reply("Done.", usage=(21, 4)))
    turn = model_for(fake_openai).respond(MESSAGES, [])
    assert turn == ModelTurn(content="Done.", tool_calls=[], input_tokens=21, output_tokens=4)


def test_an_answer_without_usage_counts_zero_tokens(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(text_reply("Done.", usage=None))
    turn = model_for(fake_openai).respond(MESSAGES, [])
    assert (turn.input_tokens, turn.output_tokens) == (0, 0)


def test_proposed_tool_calls_become_proposals_with_parsed_arguments(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.script(
        tool_call_reply([("call_1", "refund", {"order_id": 42}), ("call_2", "refund", {})])
    )
    turn = model_for(fake_openai).respond(MESSAGES, [REFUND])
    assert turn.content is None
    assert turn.tool_calls == [
        ToolCallProposal("call_1", "refund", {"order_id": 42}),
        ToolCallProposal("call_2", "refund", {}),
    ]


def test_the_request_carries_the_model_id_messages_and_tools_in_function_format(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.script(text_reply("ok"))
    history = [
        *MESSAGES,
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "refund", "arguments": '{"order_id": 42}'},
        }]},
        {"role": "tool", "tool_call_id": "call_1", "content": "refunded"},
    ]
    model_for(fake_openai, model="gpt-4.1-mini").respond(history, [REFUND])
    [sent] = fake_openai.requests
    assert sent["model"] == "gpt-4.1-mini"
    assert sent["messages"] == history
    assert sent["tools"] == [{
        "type": "function",
        "function": {
            "name": "refund",
            "description": "Refund an order.",
            "parameters": REFUND.parameters,
        },
    }]


def test_no_tools_key_is_sent_when_there_are_no_tools(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(text_reply("ok"))
    model_for(fake_openai).respond(MESSAGES, [])
    assert "tools" not in fake_openai.requests[0]


@pytest.mark.parametrize("status", [500, 429])
def test_an_api_error_status_raises_model_error(fake_openai: FakeOpenAI, status: int) -> None:
    fake_openai.script(error_reply(status, "the model is unavailable"))
    with pytest.raises(ModelError, match=rf"HTTP {status}.*the model is unavailable") as info:
        model_for(fake_openai, max_retries=0).respond(MESSAGES, [])
    assert info.value.__cause__ is not None
    assert len(fake_openai.requests) == 1


def test_a_failed_request_is_retried_when_retries_are_allowed(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(error_reply(500, "hiccup"), text_reply("recovered"))
    turn = model_for(fake_openai, max_retries=1).respond(MESSAGES, [])
    assert turn.content == "recovered"
    assert len(fake_openai.requests) == 2


@pytest.mark.parametrize("arguments", ['{"order_id": 4', "[42]", '"42"'])
def test_tool_arguments_that_are_not_a_json_object_raise_model_error(
    fake_openai: FakeOpenAI, arguments: str
) -> None:
    fake_openai.script(tool_call_reply([("call_1", "refund", arguments)]))
    with pytest.raises(ModelError, match="refund"):
        model_for(fake_openai).respond(MESSAGES, [REFUND])


def test_a_timeout_raises_model_error(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(dataclasses.replace(text_reply("late"), delay=1))
    with pytest.raises(ModelError, match="timed out"):
        model_for(fake_openai, timeout=0.2, max_retries=0).respond(MESSAGES, [])


def test_an_unreachable_server_raises_model_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        model = OpenAIModel(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0)
        with pytest.raises(ModelError, match="cannot reach"):
            model.respond(MESSAGES, [])


def test_the_sdk_uses_base_url_and_api_key_from_the_environment(
    fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    fake_openai.script(text_reply("hello from env"))
    assert OpenAIModel().respond(MESSAGES, []).content == "hello from env"
    assert fake_openai.headers[0]["authorization"] == "Bearer sk-from-env"


def test_missing_credentials_raise_model_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OPENAI_API_KEY", "OPENAI_ADMIN_KEY"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ModelError, match="OpenAI client"):
        OpenAIModel(base_url="http://127.0.0.1:9/v1")


# ------------------------------------------------------------- streamed answers

def streamed(model: OpenAIModel, tools: list[ToolSpec]) -> tuple[ModelTurn, list[str]]:
    """The model's turn asked while someone follows the run: its text, piece by piece."""
    pieces: list[str] = []
    token = TEXT_SINK.set(pieces.append)
    try:
        return model.respond(MESSAGES, tools), pieces
    finally:
        TEXT_SINK.reset(token)


def test_followed_live_the_text_comes_in_pieces_and_the_turn_is_the_same(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.script(text_reply("Refunded order 42 in full.", usage=(21, 4)),
                       text_reply("Refunded order 42 in full.", usage=(21, 4)))
    whole = model_for(fake_openai).respond(MESSAGES, [])
    turn, pieces = streamed(model_for(fake_openai), [])
    assert pieces == ["Refunded ", "order ", "42 ", "in ", "full."]
    assert turn == whole == ModelTurn(content="Refunded order 42 in full.", tool_calls=[],
                                      input_tokens=21, output_tokens=4)
    sent = fake_openai.requests[1]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert "stream" not in fake_openai.requests[0]


def test_followed_live_tool_calls_are_put_together_from_their_pieces(
    fake_openai: FakeOpenAI,
) -> None:
    calls: list[tuple[str, str, dict[str, object] | str]] = [
        ("call_1", "refund", {"order_id": 42}), ("call_2", "refund", {"order_id": 7})]
    fake_openai.script(tool_call_reply(calls, content="Refunding both."),
                       tool_call_reply(calls, content="Refunding both."))
    whole = model_for(fake_openai).respond(MESSAGES, [REFUND])
    turn, pieces = streamed(model_for(fake_openai), [REFUND])
    assert turn == whole
    assert turn.tool_calls == [ToolCallProposal("call_1", "refund", {"order_id": 42}),
                               ToolCallProposal("call_2", "refund", {"order_id": 7})]
    assert "".join(pieces) == "Refunding both."


def test_followed_live_a_turn_without_text_has_none(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(tool_call_reply([("call_1", "refund", {"order_id": 42})]))
    turn, pieces = streamed(model_for(fake_openai), [REFUND])
    assert (turn.content, pieces) == (None, [])


def test_followed_live_errors_and_bad_arguments_raise_model_error(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.script(error_reply(500, "overloaded"),
                       tool_call_reply([("call_1", "refund", '{"order_id": 4')]))
    with pytest.raises(ModelError, match=r"HTTP 500.*overloaded"):
        streamed(model_for(fake_openai, max_retries=0), [])
    with pytest.raises(ModelError, match="invalid JSON arguments"):
        streamed(model_for(fake_openai), [REFUND])


def test_followed_live_a_stream_that_stalls_times_out(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(slowly(text_reply("one two three"), delay=0, gap=1))
    with pytest.raises(ModelError, match="timed out"):
        streamed(model_for(fake_openai, timeout=0.2, max_retries=0), [])


def test_followed_live_a_server_that_refuses_stream_options_streams_without_them(
    fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture,
) -> None:
    """A server that answers ``stream_options`` with 400 is asked once more without it,
    and from then on never with it (the adapter remembers); the text still comes in
    pieces, and the tokens are those the server sends unasked (none here)."""
    fake_openai.refuses_stream_options = True
    fake_openai.script(text_reply("Refunded order 42.", usage=(21, 4)),
                       text_reply("Refunded again.", usage=(21, 4)))
    model = model_for(fake_openai)
    turn, pieces = streamed(model, [])
    assert pieces == ["Refunded ", "order ", "42."]
    assert turn == ModelTurn(content="Refunded order 42.", tool_calls=[], input_tokens=0,
                             output_tokens=0)
    turn, pieces = streamed(model, [])
    assert (turn.content, "".join(pieces)) == ("Refunded again.", "Refunded again.")
    # Refused once, asked again without; the second turn asked without at once.
    assert [("stream_options" in r, r.get("stream")) for r in fake_openai.requests] == [
        (True, True), (False, True), (False, True)]
    assert model.stream_usage is False
    assert [r.message for r in caplog.records if "stream_options" in r.message] == [
        "model 'gpt-4o-mini': the server refused stream_options (Error code: 400 - "
        "Unrecognized request argument supplied: stream_options); streaming without it "
        "from now on (token counts: what the server sends unasked)"]
    # A fresh adapter asks with them again (remembered per adapter).
    fake_openai.refuses_stream_options = False
    fake_openai.script(text_reply("Once more.", usage=(3, 2)))
    turn, _ = streamed(model_for(fake_openai), [])
    assert (turn.input_tokens, turn.output_tokens) == (3, 2)
    assert fake_openai.requests[-1]["stream_options"] == {"include_usage": True}


def test_followed_live_a_400_that_is_not_about_stream_options_is_raised(
    fake_openai: FakeOpenAI,
) -> None:
    """Asked again without ``stream_options`` and refused again: the second answer's
    error is the turn's, and the adapter still asks with them next time."""
    fake_openai.script(error_reply(400, "too many tokens"), error_reply(400, "too many tokens"),
                       text_reply("Fine.", usage=(5, 1)))
    model = model_for(fake_openai)
    with pytest.raises(ModelError, match=r"HTTP 400.*too many tokens"):
        streamed(model, [])
    assert model.stream_usage is True
    turn, _ = streamed(model, [])
    assert (turn.content, turn.input_tokens) == ("Fine.", 5)
    assert ["stream_options" in r for r in fake_openai.requests] == [True, False, True]
