"""A run's conversation as OpenAI chat messages: what the model is shown (and, with
Agno's own fields added, what a run's ``messages`` are on the wire). Derived from the
run's events, so a replay shows the model exactly what it was shown."""

from __future__ import annotations

import json
from typing import Any

from domain.calls import tool_message_content
from domain.run import Run

Json = dict[str, Any]


def chat_messages(run: Run) -> list[Json]:
    """The system instructions, the user's message, then each model turn and the
    outcome of each call it asked for (once resolved)."""
    messages: list[Json] = []
    if run.instructions:
        messages.append({"role": "system", "content": run.instructions})
    messages.append({"role": "user", "content": run.input})
    for turn in run.turns:
        msg: Json = {"role": "assistant", "content": turn["content"]}
        if turn["tool_calls"]:
            msg["tool_calls"] = [_tool_call(c) for c in turn["tool_calls"]]
        messages.append(msg)
        for call_id in turn["tool_call_ids"]:
            content = tool_message_content(run.calls[call_id])
            if content is not None:
                messages.append({"role": "tool", "tool_call_id": call_id, "content": content})
    return messages


def _tool_call(call: Json) -> Json:
    return {"id": call["id"], "type": "function",
            "function": {"name": call["name"], "arguments": json.dumps(call["args"])}}
