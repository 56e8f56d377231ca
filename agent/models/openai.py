"""The OpenAI adapter: any OpenAI-compatible chat-completions endpoint, via the official SDK.

The only module in the project that imports ``openai``.
"""

from __future__ import annotations

import json
from typing import Any

import openai

from agent.models.base import ModelError, ModelTurn, ToolCallProposal, ToolSpec


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
        try:
            self._client = openai.OpenAI(
                api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries
            )
        except openai.OpenAIError as e:
            raise ModelError(f"cannot set up the OpenAI client: {e}") from e

    def respond(self, messages: list[dict[str, Any]], tools: list[ToolSpec]) -> ModelTurn:
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
        try:
            completion = self._client.chat.completions.create(**kwargs)
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
        try:
            return self._turn(completion)
        except (AttributeError, IndexError, TypeError) as e:
            raise ModelError(f"model {self.name!r} gave a malformed answer: {e}") from e

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
