"""signoff's own JSON views of a run and of its events."""

from __future__ import annotations

from typing import Any

from domain.calls import ToolCall
from domain.run import Run

_HEADER = ("originator_id", "originator_version", "timestamp", "originator_topic", "hash")


def run_view(run: Run) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "agent_id": run.agent_id,
        "user_id": run.user_id,
        "session_id": run.session_id,
        "status": str(run.status),
        "version": run.version,
        "input": run.input,
        "content": run.content,
        "error": run.error,
        "created_at": run.created_on,
        "updated_at": run.modified_on,
        "paused_at": run.paused_at,
        "pending": [_call(c) for c in run.pending_calls()],
        "tool_calls": [_call(c) for c in run.calls.values()],
        "cancelled_by": run.cancelled_by,
        "cancel_reason": run.cancel_reason,
    }


def _call(call: ToolCall) -> dict[str, Any]:
    return call.as_dict()


def event_view(event: Any) -> dict[str, Any]:
    payload = {k: v for k, v in event.__dict__.items() if k not in _HEADER}
    return {
        "version": event.originator_version,
        "type": type(event).__name__,
        "timestamp": event.timestamp,
        "payload": payload,
        "hash": getattr(event, "hash", None),
    }
