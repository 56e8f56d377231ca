"""The model port: what the agent loop needs from a language model.

Adapters: :mod:`agent.models.offline` (deterministic, the default with no API key) and
:mod:`agent.models.openai` (any OpenAI-compatible chat-completions endpoint).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

_JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str, "integer": int, "number": (int, float), "boolean": bool,
    "object": dict, "array": list}


@dataclass(frozen=True)
class ToolSpec:
    """What the model is told about one tool: its name, description and JSON schema."""

    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of an object

    def problems(self, args: dict[str, Any], *, complete: bool = False) -> list[str]:
        """What is wrong with ``args`` for this tool: unknown names and wrong JSON types;
        with ``complete``, missing required arguments too. Empty when they fit."""
        props = self.parameters.get("properties", {})
        found: list[str] = []
        for key, value in args.items():
            if key not in props:
                found.append(f"{self.name} has no parameter {key!r}")
                continue
            kind = props[key].get("type") if isinstance(props[key], dict) else None
            if kind in _JSON_TYPES and (not isinstance(value, _JSON_TYPES[kind])
                                        or (isinstance(value, bool) and kind != "boolean")):
                found.append(f"{self.name}: {key} must be {kind}, not {type(value).__name__}")
            elif isinstance(value, float) and not math.isfinite(value):
                found.append(f"{self.name}: {key} must be a finite number")
        if complete:
            found += [f"{self.name}: {key} is required"
                      for key in self.parameters.get("required", []) if key not in args]
        return found


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

    While someone follows the run live, ``TEXT_SINK`` holds where the answer's text goes
    as it comes: an adapter that can stream gives it each piece of text as it arrives
    (the ``ModelTurn`` still carries the whole text); one that cannot leaves it unused.
    """

    name: str  # the model id, e.g. "gpt-4o-mini" or "offline"
    provider: str  # e.g. "openai" or "signoff"

    def respond(self, messages: list[dict[str, Any]], tools: list[ToolSpec]) -> ModelTurn: ...


# Where a model's text goes piece by piece while a run is followed live: set by the agent
# loop around one model call (``agent/loop.py``), read by an adapter that streams
# (``agent/models/openai.py``). None: nobody follows; answer in one piece.
TEXT_SINK: ContextVar[Callable[[str], None] | None] = ContextVar("signoff_text_sink",
                                                                default=None)
