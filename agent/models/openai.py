"""The OpenAI adapter: any OpenAI-compatible chat-completions endpoint, via the official SDK.

The only module in the project that imports ``openai``.

A streamed turn asks for its token counts with ``stream_options.include_usage``. Some
OpenAI-compatible servers refuse that field (HTTP 400, or 422); the adapter then asks
once more without it and, once a request without it is accepted, never sends it again
(per adapter: per process and model). Streaming goes on; the token counts of streamed
turns are then those the server sends unasked (none: 0).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import httpx
import openai

from agent.models.base import TEXT_SINK, ModelError, ModelTurn, ToolCallProposal, ToolSpec

log = logging.getLogger("signoff.model")
# What a server that does not know ``stream_options`` may answer it with.
_REFUSED = (openai.BadRequestError, openai.UnprocessableEntityError)


class OpenAIModel:
    """A :class:`~agent.models.base.ModelClient` backed by ``chat.completions.create``.

    ``api_key`` and ``base_url`` default to the SDK's own ``OPENAI_API_KEY`` and
    ``OPENAI_BASE_URL`` environment variables. ``timeout`` bounds each HTTP attempt, and
    the agent loop bounds the whole call by it (the SDK's retries included).
    """

    provider = "openai"

    def __init__(
        self,
        model: str = "gpt-4o-mini",
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
    ) -> None:
        self.name = model
        self.timeout = timeout
        # False once the server refused ``stream_options`` and took a stream without it.
        self.stream_usage = True
        try:
            self._client = openai.OpenAI(
                api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries
            )
        except openai.OpenAIError as e:
            raise ModelError(f"cannot set up the OpenAI client: {e}") from e

    def respond(self, messages: list[dict[str, Any]], tools: list[ToolSpec]) -> ModelTurn:
        """The model's turn. While the run is followed live (``TEXT_SINK`` set), asked
        with ``stream=True``: its text goes to the sink piece by piece as it comes, its
        tool calls are put together as their pieces come, and the turn is the same as
        the one asked for whole would be (usage included: ``include_usage``)."""
        kwargs: dict[str, Any] = {"model": self.name, "messages": messages}
        if tools:
            kwargs["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in tools
            ]
        sink = TEXT_SINK.get()
        with self._errors():
            if sink is not None:
                return self._streamed(kwargs, sink)
            completion = self._client.chat.completions.create(**kwargs)
        try:
            return self._turn(completion)
        except (AttributeError, IndexError, TypeError) as e:
            raise ModelError(f"model {self.name!r} gave a malformed answer: {e}") from e

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """The SDK's errors (and the transport's, met while a stream is read) as
        ``ModelError``."""
        try:
            yield
        except openai.APITimeoutError as e:
            raise ModelError(f"model {self.name!r} timed out") from e
        except openai.APIConnectionError as e:
            raise ModelError(f"cannot reach model {self.name!r}: {e}") from e
        except openai.APIStatusError as e:
            raise ModelError(
                f"model {self.name!r} answered HTTP {e.status_code}: {e.message}"
            ) from e
        except openai.OpenAIError as e:
            raise ModelError(f"model {self.name!r} failed: {e}") from e
        except httpx.TimeoutException as e:
            raise ModelError(f"model {self.name!r} timed out") from e
        except httpx.HTTPError as e:
            raise ModelError(f"model {self.name!r} broke off its answer: {e}") from e

    def _streamed(self, kwargs: dict[str, Any], sink: Callable[[str], None]) -> ModelTurn:
        text: list[str] | None = None  # None: no chunk carried content (as ``null``)
        calls: dict[int, dict[str, Any]] = {}  # by the index the chunks give
        usage = None
        with self._stream(kwargs) as stream:
            for chunk in stream:
                usage = chunk.usage or usage
                for choice in chunk.choices:
                    if choice.index != 0:
                        continue
                    delta = choice.delta
                    if delta.content is not None:
                        text = text if text is not None else []
                        text.append(delta.content)
                        if delta.content:
                            sink(delta.content)
                    for piece in delta.tool_calls or []:
                        _add_piece(calls.setdefault(piece.index, {}), piece)
        try:
            proposals = [self._proposal(_call(calls[i])) for i in sorted(calls)]
        except (AttributeError, KeyError, TypeError) as e:
            raise ModelError(f"model {self.name!r} gave a malformed answer: {e}") from e
        return ModelTurn(
            content="".join(text) if text is not None else None,
            tool_calls=proposals,
            input_tokens=(usage.prompt_tokens or 0) if usage else 0,
            output_tokens=(usage.completion_tokens or 0) if usage else 0,
        )

    def _stream(self, kwargs: dict[str, Any]) -> Any:
        """The SDK's stream of chunks, asked with ``stream_options.include_usage`` unless
        this server refused it. Refused (400 or 422), asked once more without it: if that
        is accepted, it is never sent again; if not, that answer's error is raised."""
        if not self.stream_usage:
            return self._client.chat.completions.create(**kwargs, stream=True)
        try:
            return self._client.chat.completions.create(
                **kwargs, stream=True, stream_options={"include_usage": True})
        except _REFUSED as e:
            refused = e
        stream = self._client.chat.completions.create(**kwargs, stream=True)
        self.stream_usage = False
        log.warning("model %r: the server refused stream_options (%s); streaming without "
                    "it from now on (token counts: what the server sends unasked)",
                    self.name, refused.message)
        return stream

    def _turn(self, completion: Any) -> ModelTurn:
        if not completion.choices:
            raise ModelError(f"model {self.name!r} returned no choices")
        message = completion.choices[0].message
        calls = [self._proposal(call) for call in message.tool_calls or []]
        usage = completion.usage
        return ModelTurn(
            content=message.content,
            tool_calls=calls,
            input_tokens=(usage.prompt_tokens or 0) if usage else 0,
            output_tokens=(usage.completion_tokens or 0) if usage else 0,
        )

    def _proposal(self, call: Any) -> ToolCallProposal:
        if call.type != "function":
            raise ModelError(f"model {self.name!r} proposed an unsupported {call.type!r} tool call")
        name, raw = call.function.name, call.function.arguments
        try:
            args = json.loads(raw or "{}")
        except json.JSONDecodeError as e:
            raise ModelError(
                f"model {self.name!r} gave invalid JSON arguments for tool {name!r}: {raw!r}"
            ) from e
        if not isinstance(args, dict):
            raise ModelError(
                f"model {self.name!r} gave arguments for tool {name!r} that are not an object: "
                f"{raw!r}"
            )
        return ToolCallProposal(id=call.id, name=name, args=args)


def _add_piece(call: dict[str, Any], piece: Any) -> None:
    """Add one streamed piece of a tool call: its id, type and name come once (a server
    that repeats them sends the same), its arguments in pieces to be joined."""
    call["id"] = piece.id or call.get("id")
    call["type"] = piece.type or call.get("type") or "function"
    function = piece.function
    if function is not None:
        call["name"] = function.name or call.get("name")
        call["arguments"] = call.get("arguments", "") + (function.arguments or "")


def _call(parts: dict[str, Any]) -> Any:
    """A tool call put together from its pieces, shaped as the SDK's whole answer gives
    one (``id``, ``type``, ``function.name``, ``function.arguments``)."""
    return SimpleNamespace(id=parts["id"], type=parts["type"], function=SimpleNamespace(
        name=parts["name"], arguments=parts.get("arguments", "")))
