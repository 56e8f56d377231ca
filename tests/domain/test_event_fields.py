"""The fields every stored event carries, pinned: an event's fields are what its hash is
computed over and what every export holds, so a change to them (a field an annotation
on an aggregate's base class adds to its events, say) must be made on purpose, here
too, with a class version and an upcaster where old events lack the field."""

from __future__ import annotations

import dataclasses

from domain.keys import ApiKey
from domain.run import Run
from domain.webhooks import Webhook

HEADER = {"originator_id", "originator_version", "timestamp", "hash", "originator_topic"}
FIELDS = {"ApiKey.Created": ["name", "role", "agents", "tools", "hint", "created_by", "groups"],
 "ApiKey.Revoked": ["revoked_by"],
 "Run.DecisionExpired": ["tool_call_id",
                         "decided_by",
                         "action",
                         "expired_at",
                         "escalated_to",
                         "expires_at"],
 "Run.ExternalResultProvided": ["tool_call_id",
                                "decided_by",
                                "result",
                                "request_key",
                                "request_digest"],
 "Run.ModelResponded": ["model",
                        "provider",
                        "content",
                        "tool_calls",
                        "input_tokens",
                        "output_tokens"],
 "Run.RunCancelled": ["cancelled_by", "reason"],
 "Run.RunCompleted": ["content"],
 "Run.RunContinued": [],
 "Run.RunFailed": ["error"],
 "Run.RunPaused": ["waiting_for"],
 "Run.RunStarted": ["agent_id", "agent_name", "user_id", "session_id", "input", "instructions"],
 "Run.ToolCallInDoubt": ["tool_call_id"],
 "Run.ToolCallRequested": ["tool_call_id",
                           "tool_name",
                           "tool_args",
                           "requires",
                           "confirmation_message",
                           "user_input_schema",
                           "stop_after_tool_call",
                           "editable_args",
                           "policy",
                           "expires_at",
                           "on_timeout",
                           "escalate_to"],
 "Run.ToolConfirmed": ["tool_call_id",
                       "decided_by",
                       "note",
                       "approved_args",
                       "request_key",
                       "request_digest"],
 "Run.ToolExecuted": ["tool_call_id", "result"],
 "Run.ToolExecutionStarted": ["tool_call_id", "attempt", "deadline"],
 "Run.ToolFailed": ["tool_call_id", "error"],
 "Run.ToolRejected": ["tool_call_id", "decided_by", "reason", "request_key", "request_digest"],
 "Run.UserInputProvided": ["tool_call_id",
                           "decided_by",
                           "values",
                           "request_key",
                           "request_digest"],
 "Webhook.Created": ["url", "event_types", "hint", "created_by"],
 "Webhook.Deleted": ["deleted_by"]}


def test_every_event_class_has_the_fields_it_is_stored_with() -> None:
    found = {}
    for aggregate in (Run, ApiKey, Webhook):
        for name, cls in vars(aggregate).items():
            if (isinstance(cls, type) and dataclasses.is_dataclass(cls)
                    and issubclass(cls, aggregate.Event) and name != "Event"
                    and not (aggregate is Run and name == "Created")):  # Run: RunStarted
                found[f"{aggregate.__name__}.{name}"] = [
                    f.name for f in dataclasses.fields(cls) if f.name not in HEADER]
    assert found == FIELDS
