"""Decisions on tool calls: the events that record them, the decision a client's reply
makes on a call, and when a call may be decided."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from domain.calls import ToolCall, find_call
from domain.errors import InvalidRunTransition, ToolCallNotPending, WrongDecisionKind
from domain.values import (
    CallState,
    Decision,
    DecisionKind,
    RecordedDecision,
    Reply,
    Requirement,
    RunStatus,
)

if TYPE_CHECKING:
    from datetime import datetime

# What a call that waits for each requirement may be decided with.
_ALLOWED = {
    Requirement.CONFIRMATION: (DecisionKind.CONFIRMED, DecisionKind.REJECTED),
    Requirement.EXTERNAL_EXECUTION: (DecisionKind.EXTERNAL_RESULT, DecisionKind.REJECTED),
    Requirement.USER_INPUT: (DecisionKind.USER_INPUT, DecisionKind.REJECTED),
}


class DecisionEvent:
    """An event that records a decision on one call (``tool_call_id``, ``decided_by``):
    ``decision_kind`` says which kind. Code outside the domain asks
    ``isinstance(event, DecisionEvent)`` rather than listing the classes."""

    decision_kind: ClassVar[DecisionKind]
    tool_call_id: str
    decided_by: str
    if TYPE_CHECKING:  # every event has them; declared here for the type checker only
        timestamp: datetime
        originator_version: int

    def recorded(self, **details: Any) -> RecordedDecision:
        """The decision as its call holds it, with the ``details`` of its kind."""
        return RecordedDecision(
            kind=self.decision_kind, decided_by=self.decided_by, decided_at=self.timestamp,
            version=self.originator_version, request_key=getattr(self, "request_key", None),
            request_digest=getattr(self, "request_digest", None), **details)


def check_decidable(call: ToolCall, kind: DecisionKind, status: RunStatus) -> None:
    """May ``call`` of a run in ``status`` be decided with a decision of ``kind``?"""
    standing = call.decision
    if standing is not None and not call.waiting:
        # Already decided (the run may even have ended since): the decision stands.
        raise ToolCallNotPending(f"call {call.tool_call_id!r} was already decided "
                                 f"({standing.kind} by {standing.decided_by})",
                                 decision=standing)
    if status.is_final:
        raise InvalidRunTransition(f"cannot decide: the run is {status}")
    if call.state == CallState.IN_DOUBT:
        if kind == DecisionKind.USER_INPUT:
            raise WrongDecisionKind("a call in doubt is confirmed (run it again), "
                                    "rejected, or given its result")
        return
    if call.state != CallState.PENDING:
        raise ToolCallNotPending(f"call {call.tool_call_id!r} is not waiting for a decision "
                                 f"(it is {call.state})", decision=standing)
    if call.requires is None or kind not in _ALLOWED[call.requires]:
        raise WrongDecisionKind(
            f"call {call.tool_call_id!r} waits for {call.requires}, not {kind}")


def read_replies(calls: Mapping[str, ToolCall], replies: list[Reply],
                  status: RunStatus) -> list[Decision]:
    """The decisions that replies make on the calls they name (``Run.decisions_for``)."""
    decisions: list[Decision] = []
    repeated: list[ToolCall] = []
    for reply in replies:
        call = find_call(calls, reply.tool_call_id)
        decision = decision_of(call, reply)
        if decision is None:
            continue
        if call.waiting:
            decisions.append(decision)
            continue
        standing = call.decision
        if standing is None:  # e.g. cancelled with its run: nothing was decided on it
            raise ToolCallNotPending(
                f"call {reply.tool_call_id!r} is not waiting for a decision (it is "
                f"{call.state}; the run is {status})")
        if standing.kind != decision.kind:
            raise ToolCallNotPending(f"call {reply.tool_call_id!r} was already decided "
                                     "otherwise", decision=standing)
        repeated.append(call)
    if repeated and not decisions:
        raise ToolCallNotPending(f"call {repeated[0].tool_call_id!r} was already decided",
                                 decision=repeated[0].decision)
    return decisions


def decision_of(call: ToolCall, reply: Reply) -> Decision | None:
    """The decision a reply makes on a call, or None when it makes none."""
    call_id = call.tool_call_id
    requires = call.requires
    in_doubt = call.state == CallState.IN_DOUBT
    if requires is None and not in_doubt:
        # The call never waited for anyone (it runs at once): as in Agno, a decision on it
        # is ignored, so a client may set ``confirmed: true`` on every item it sends back.
        return None
    if reply.confirmed is False:
        return Decision(call_id, DecisionKind.REJECTED, note=reply.note)
    if reply.result is not None and (requires == Requirement.EXTERNAL_EXECUTION or in_doubt):
        return Decision(call_id, DecisionKind.EXTERNAL_RESULT, result=reply.result)
    if requires == Requirement.USER_INPUT and not in_doubt:
        given = {k: v for k, v in (reply.values or {}).items() if v is not None}
        if given:
            return Decision(call_id, DecisionKind.USER_INPUT, values=given)
    elif reply.confirmed is True and (requires == Requirement.CONFIRMATION or in_doubt):
        # (Agno ignores ``confirmed`` on external calls; so does signoff.)
        return Decision(call_id, DecisionKind.CONFIRMED, note=reply.note,
                        approved_args=reply.tool_args)
    if reply.result is not None and call.state == CallState.PENDING:
        # A result for a call that waits for a confirmation or for input: the wrong kind
        # of decision, which the run refuses (409) rather than ignore.
        return Decision(call_id, DecisionKind.EXTERNAL_RESULT, result=reply.result)
    return None
