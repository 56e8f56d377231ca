"""The model port: what the agent loop needs from a language model.

Adapters: :mod:`agent.models.offline` (deterministic, the default with no API key) and
:mod:`agent.models.openai` (any OpenAI-compatible chat-completions endpoint).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ToolSpec:
    """What the model is told about one tool: its name, description and JSON schema."""

    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of an object


@dataclass(frozen=True)
class ToolCallProposal:
    """One tool call the model proposes."""

    id: str
    name: str
    args: dict[str, Any]


@dataclass(frozen=True)
class ModelTurn:
    """The model's answer to one request: text, proposed tool calls, or both."""

    content: str | None
    tool_calls: list[ToolCallProposal] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0


class ModelError(Exception):
    """The model could not be reached or gave an answer that cannot be used."""


class ModelClient(Protocol):
    """A language model the agent loop can ask for its next turn.

    ``messages`` are OpenAI chat messages (dicts with ``role``, ``content`` and, for
    assistant turns, ``tool_calls``; tool results have ``role: "tool"`` and
    ``tool_call_id``). ``tools`` lists the tools the model may call.
    """

    name: str  # the model id, e.g. "gpt-4o-mini" or "offline"
    provider: str  # e.g. "openai" or "signoff"

    def respond(self, messages: list[dict[str, Any]], tools: list[ToolSpec]) -> ModelTurn: ...
