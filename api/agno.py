"""Agno AgentOS's wire format: a run as ``RunOutput.to_dict()``, its stream events, and
the continue payload read back into decisions (as Agno 3.1 writes and reads them).

Only Agno's own keys are written into these bodies, so a client that parses them with
Agno's classes keeps working; signoff's richer view is ``GET /runs/{run_id}``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, uuid5

from pydantic import BaseModel, ConfigDict, StrictBool, StrictStr, TypeAdapter, ValidationError

from agent.messages import chat_messages
from agent.tools import Agent
from api.errors import ProblemError
from api.wire import MAX_DEPTH, depth, loads
from domain.calls import ToolCall, tool_message_content
from domain.run import Run
from domain.values import (
    CallState,
    DecisionKind,
    RecordedDecision,
    Reply,
    Requirement,
    RunStatus,
    TimeoutAction,
)
from projections.approvals import approval_id, is_approval

Json = dict[str, Any]


def _epoch(ts: datetime | None) -> int | None:
    return int(ts.timestamp()) if ts is not None else None


def _uuid(*parts: str) -> str:
    """A stable id for a part of a run (a requirement, a message): the same in every
    answer, so a client may match it across requests."""
    return str(uuid5(NAMESPACE_URL, "signoff:" + ":".join(parts)))


def tool_execution(call: ToolCall, run_id: str | None = None) -> Json:
    """One call as Agno's ``ToolExecution``. A call that needs (or needed) a person's
    confirmation is an approval (``approval_type`` ``"required"``); with ``run_id``, its
    ``approval_id`` is the id ``/approvals`` serves it under (without: null, as in the
    approval's own ``requirements``)."""
    state = call.state
    requires = call.requires
    in_doubt = state == CallState.IN_DOUBT
    pending = state == CallState.PENDING
    decision = call.decision
    kind = decision.kind if decision else None
    schema = call.user_input_schema
    if schema is not None and decision is not None and kind == DecisionKind.USER_INPUT:
        schema = [{**f, "value": (decision.values or {}).get(f["name"])} for f in schema]
    return {
        "tool_call_id": call.tool_call_id,
        "tool_name": call.tool_name,
        "tool_args": call.args,
        "tool_call_error": {CallState.FAILED: True, CallState.EXECUTED: False}.get(state),
        "result": call.result if call.result is not None
        else (call.error if state == CallState.FAILED
              else tool_message_content(call) if state == CallState.REJECTED else None),
        "metrics": None,
        "child_run_id": None,
        "stop_after_tool_call": call.stop_after_tool_call,
        "created_at": _epoch(call.requested_at),
        "requires_confirmation": (pending and requires == Requirement.CONFIRMATION) or in_doubt,
        "confirmed": _confirmed(decision),
        # The reviewer's note or reason. The tool's confirmation message is not put here:
        # a client sending the list back as it came would record it as the note.
        "confirmation_note": (decision.note or decision.reason) if decision else None,
        "requires_user_input": (pending and requires == Requirement.USER_INPUT) or None,
        "user_input_schema": schema,
        "user_feedback_schema": None,
        "answered": True if kind == DecisionKind.USER_INPUT else None,
        "external_execution_required": (pending and requires == Requirement.EXTERNAL_EXECUTION)
        or None,
        "external_execution_silent": None,
        **_approval(call, run_id),
        "parent_tool_call_id": None,
    }


def _approval(call: ToolCall, run_id: str | None) -> Json:
    """Agno's ``approval_type`` and ``approval_id`` of a call (both null for a call that
    is no approval; the id null without ``run_id``)."""
    if not is_approval(call):
        return {"approval_type": None, "approval_id": None}
    return {"approval_type": "required",
            "approval_id": approval_id(run_id, call.tool_call_id) if run_id else None}


def _confirmed(decision: RecordedDecision | None) -> bool | None:
    """Agno's ``confirmed``: true for a confirmation (or an expiry that approved), false
    for a rejection (or an expiry that rejected); None for any other decision, or none."""
    if decision is None:
        return None
    if decision.kind == DecisionKind.EXPIRED:
        return decision.action == TimeoutAction.APPROVE
    return {DecisionKind.CONFIRMED: True, DecisionKind.REJECTED: False}.get(decision.kind)


def _requirements(run: Run) -> list[Json]:
    return [
        {
            "id": _uuid(run.run_id, c.tool_call_id),
            "created_at": c.requested_at.isoformat(),
            "tool_execution": tool_execution(c, run.run_id),
        }
        for c in run.calls.values()
        if c.requires or c.state == CallState.IN_DOUBT
    ]


def _outcome_at(call: ToolCall) -> datetime:
    """When a resolved call's outcome was recorded: its result or failure (``ToolExecuted``,
    ``ToolFailed``), else the decision that settled it (a rejection, an external result,
    an expiry)."""
    decided_at = call.decision.decided_at if call.decision else None
    return call.outcome_at or decided_at or call.requested_at


def _messages(run: Run) -> list[Json]:
    """The conversation, each message stamped with the time of the event it comes from:
    the system and user messages with the run's start, an assistant message with its
    ``ModelResponded``, a tool message with the recording of the call's outcome."""
    started = run.created_on
    turns = iter(run.turns)  # one assistant message per turn, in order
    out = []
    for i, m in enumerate(chat_messages(run)):
        at = started
        if m["role"] == "assistant":
            at = next(turns).get("at") or started  # .get: a snapshot from before turn times
        msg = {"id": _uuid(run.run_id, "message", str(i)), **m, "from_history": False,
               "stop_after_tool_call": False}
        if m["role"] == "tool":
            call = run.calls[m["tool_call_id"]]
            at = _outcome_at(call)
            msg.update(tool_name=call.tool_name, tool_args=call.tool_args,
                       tool_call_error=call.state == CallState.FAILED)
        msg["created_at"] = _epoch(at)
        out.append(msg)
    return out


# Agno's words for a paused run whose model gave no text (``get_paused_content``), by
# what one waiting call needs: (confirmation, user input, external execution).
_PAUSED_CONTENT = {
    (True, False, False): "I have tools to execute, but I need confirmation.",
    (False, True, False): "I have tools to execute, but I need user input.",
    (False, False, True): "I have tools to execute, but it needs external execution.",
    (True, True, False): "I have tools to execute, but I need confirmation or user input.",
    (True, False, True):
        "I have tools to execute, but I need confirmation or external execution.",
    (False, True, True):
        "I have tools to execute, but I need user input or external execution.",
    (True, True, True):
        "I have tools to execute, but I need confirmation, user input, or external execution.",
}


def paused_content(tools: list[Json]) -> str:
    """Agno's content for a pause: the needs of the last listed call that waits."""
    text = ""
    for t in tools:
        needs = (t["requires_confirmation"] is True and not t["confirmed"],
                 t["requires_user_input"] is True, t["external_execution_required"] is True)
        text = _PAUSED_CONTENT.get(needs, text)
    return text


def _metrics(run: Run) -> Json:
    return {"input_tokens": run.input_tokens, "output_tokens": run.output_tokens,
            "total_tokens": run.input_tokens + run.output_tokens}


def run_output(run: Run) -> Json:
    """The run as Agno's ``RunOutput.to_dict()``. A paused run's content is its model's
    text, or, as in Agno, what the run waits for."""
    tools = [tool_execution(c, run.run_id) for c in run.calls.values()]
    content = run.error or run.content
    if not content and run.status == RunStatus.PAUSED:
        content = paused_content(tools)
    return {
        "run_id": run.run_id,
        "agent_id": run.agent_id,
        "agent_name": run.agent_name,
        "session_id": run.session_id,
        "user_id": run.user_id,
        "content": content,
        "content_type": "str",
        "model": run.model,
        "model_provider": run.model_provider,
        "session_state": {},
        "created_at": _epoch(run.created_on),
        "status": str(run.status),
        "metrics": _metrics(run),
        "messages": _messages(run),
        "tools": tools,
        "requirements": _requirements(run),
        "input": {"input_content": run.input},
    }


def _model_class(model: Any) -> str:
    """The model client's class name (Agno's ``model.name``, e.g. ``OpenAIChat``), looking
    through a wrapper that keeps the client it wraps as ``inner`` (``api.metrics``'s
    ``TimedModel``)."""
    while (inner := getattr(model, "inner", None)) is not None:
        model = inner
    return type(model).__name__


def _tool_info(t: Any) -> Json:
    """A tool as Agno's ``Function.to_dict()``: the flags that are set, no others.

    ``requires_confirmation`` is true also when it is a function of the call's arguments
    (signoff's own): calls of the tool may wait for a confirmation, which is what the
    flag tells a client; whether one call does is in the run's ``tools``."""
    info: Json = {"name": t.name, "description": t.description, "parameters": t.parameters}
    if t.requires_confirmation:
        info["requires_confirmation"] = True
    if t.external_execution:
        info["external_execution"] = True
    if t.requires_user_input:
        info.update(requires_user_input=True, user_input_fields=t.user_input_fields)
    return info


def agent_info(agent: Agent, default_model: Any) -> Json:
    """An agent as in Agno's ``GET /agents`` (unset keys left out, as Agno does)."""
    model = agent.model or default_model
    info: Json = {"id": agent.id, "name": agent.name}
    if agent.description:
        info["description"] = agent.description
    info["model"] = {"name": _model_class(model), "model": model.name,
                     "provider": model.provider}
    info["tools"] = {"tools": [_tool_info(t) for t in agent.tools]}
    if agent.instructions:
        info["system_message"] = {"instructions": agent.instructions}
    if agent.confirm_before_run:  # the seed's agent option (signoff's own key)
        info["confirm_before_run"] = True
    return info


# ------------------------------------------------------------ stream events

def stream_event(run: Run, name: str, ts: datetime, **data: Any) -> tuple[str, Json]:
    """One Agno stream event of ``run``: (name, data)."""
    return name, {"created_at": _epoch(ts), "event": name, "agent_id": run.agent_id,
                  "agent_name": run.agent_name, "run_id": run.run_id,
                  "session_id": run.session_id, "nested_depth": 0, **data}


def stream_events(run: Run, events: list[Any]) -> list[tuple[str, Json]]:
    """Agno stream events (name, data) for domain events committed on ``run`` (the run
    as it is after them). A model turn (``ModelResponded``) gives ``ModelRequestStarted``
    first and its text (``RunContent``) second (``api/agno_stream.py`` counts on it)."""
    out: list[tuple[str, Json]] = []

    def emit(name: str, ts: datetime, **data: Any) -> None:
        out.append(stream_event(run, name, ts, **data))

    for e in events:
        ts = e.timestamp
        match e:
            case Run.RunStarted():
                emit("RunStarted", ts, model=run.model, model_provider=run.model_provider)
            case Run.ModelResponded():
                model = {"model": e.model, "model_provider": e.provider}
                emit("ModelRequestStarted", ts, **model)
                if e.content:
                    emit("RunContent", ts, content=e.content, content_type="str")
                emit("ModelRequestCompleted", ts, **model, input_tokens=e.input_tokens,
                     output_tokens=e.output_tokens,
                     total_tokens=e.input_tokens + e.output_tokens)
            case Run.ToolExecutionStarted():
                emit("ToolCallStarted", ts,
                     tool=tool_execution(run.calls[e.tool_call_id], run.run_id))
            case Run.ToolExecuted():
                call = run.calls[e.tool_call_id]
                emit("ToolCallCompleted", ts, tool=tool_execution(call, run.run_id),
                     content=e.result)
            case Run.ToolFailed():
                emit("ToolCallError", ts,
                     tool=tool_execution(run.calls[e.tool_call_id], run.run_id),
                     error=e.error)
            case Run.RunPaused():
                emit("RunContentCompleted", ts)
                tools = [tool_execution(c, run.run_id) for c in run.calls.values()
                         if c.tool_call_id in e.waiting_for]
                emit("RunPaused", ts, content=run.content or paused_content(tools),
                     tools=tools,
                     requirements=[r for r in _requirements(run)
                                   if r["tool_execution"]["tool_call_id"] in e.waiting_for])
            case Run.RunContinued():
                emit("RunContinued", ts)
            case Run.RunCompleted():
                emit("RunContentCompleted", ts)
                emit("RunCompleted", ts, content=e.content, content_type="str",
                     session_state={}, metrics=_metrics(run))
            case Run.RunFailed():
                emit("RunError", ts, content=e.error)
            case Run.RunCancelled():
                emit("RunCancelled", ts, reason=e.reason)
    return out


# ---------------------------------------------------------- continue payload

class ToolReply(BaseModel):
    """One item of a continue request's ``tools``: a tool execution as the paused run
    listed it, with the decision filled in (Agno's ``ToolExecution``; its other keys
    are ignored)."""

    model_config = ConfigDict(extra="ignore")

    tool_call_id: StrictStr
    confirmed: StrictBool | None = None
    confirmation_note: StrictStr | None = None
    tool_args: dict[str, Any] | None = None
    result: Any = None  # text; any other JSON value is recorded as its JSON text
    user_input_schema: Any = None  # the fields, each with its ``value`` filled in

    def reply(self) -> Reply:
        result = self.result
        if result is not None and not isinstance(result, str):
            result = json.dumps(result)
        fields = self.user_input_schema if isinstance(self.user_input_schema, list) else []
        values = {f["name"]: f.get("value") for f in fields
                  if isinstance(f, dict) and isinstance(f.get("name"), str)}
        return Reply(self.tool_call_id, confirmed=self.confirmed, note=self.confirmation_note,
                     tool_args=self.tool_args, result=result, values=values or None)


_REPLIES = TypeAdapter(list[ToolReply])


def parse_tools(raw: str) -> list[Reply]:
    """The ``tools`` form field: a JSON list of tool executions, as replies."""
    try:
        tools = loads(raw)
    except (ValueError, RecursionError):
        raise ProblemError(400, "'tools' is not valid JSON") from None
    if depth(tools) > MAX_DEPTH:
        raise ProblemError(422, f"'tools' nests values more than {MAX_DEPTH} levels deep")
    try:
        items = _REPLIES.validate_python(tools)
    except ValidationError as e:
        errors = [{"loc": ["tools", *err["loc"]], "msg": err["msg"], "type": err["type"]}
                  for err in e.errors()]
        raise ProblemError(422, "'tools' must be a JSON list of tool executions, each with "
                           "its 'tool_call_id'", errors=errors) from None
    return [item.reply() for item in items]
