"""A tool call as a run holds it: what the model asked for, what it waits for (and the
approval policy that decided that: ``PolicyOutcome``), the decision on it
(``RecordedDecision``, domain/values.py) and its outcome. ``ToolCall`` is a value: each
event of the run that concerns a call replaces it with the next value (``confirmed``,
``started``, ...).

Its mapping form (``as_dict``) is the JSON object signoff writes it as (the run's view,
a webhook's payload, a snapshot's state), and ``ToolCall.of`` reads it back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from typing import Any

from domain.errors import InvalidDecision, ToolCallNotFound
from domain.values import (
    RUN_CONFIRMATION_TOOL,
    CallState,
    PolicyVerdict,
    RecordedDecision,
    Requirement,
    TimeoutAction,
)

Json = dict[str, Any]

# States in which a call holds the run open (it must be resolved before the run ends).
OPEN = (CallState.PENDING, CallState.APPROVED, CallState.RUNNING, CallState.IN_DOUBT)
# States in which a call waits for a decision.
WAITING = (CallState.PENDING, CallState.IN_DOUBT)


def _plain(value: Any) -> Any:
    """A field's value in a mapping form: enums as their strings, values as mappings."""
    if isinstance(value, StrEnum):
        return str(value)
    if isinstance(value, RecordedDecision | Expiry | PolicyOutcome):
        return value.as_dict()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class PolicyOutcome:
    """What the approval policy that judged a call decided, and why: ``rule`` names it
    (``settings:NAME``, ``tool:NAME``); ``error``: the rule failed, and the call is held
    (fail closed). Decided outside the domain, recorded with the call's request."""

    rule: str
    outcome: PolicyVerdict
    reason: str | None = None
    error: bool = False

    def __post_init__(self) -> None:
        if not self.rule:
            raise InvalidDecision("a policy names its rule and its outcome "
                                  "('required' or 'allowed')")

    @property
    def required(self) -> bool:
        """Does a person confirm the call?"""
        return self.outcome == PolicyVerdict.REQUIRED

    @classmethod
    def of(cls, record: Json) -> PolicyOutcome:
        """Read from its recorded form (``as_dict``); ``InvalidDecision`` if it is not one."""
        outcome = record.get("outcome")
        if outcome not in tuple(PolicyVerdict):
            raise InvalidDecision("a policy names its rule and its outcome "
                                  "('required' or 'allowed')")
        return cls(record.get("rule") or "", PolicyVerdict(outcome), record.get("reason"),
                   bool(record.get("error")))

    def as_dict(self) -> Json:
        """As recorded on ``Run.ToolCallRequested.policy`` (``error`` only when true)."""
        out: Json = {"rule": self.rule, "outcome": str(self.outcome), "reason": self.reason}
        if self.error:
            out["error"] = True
        return out


@dataclass(frozen=True)
class Expiry:
    """A deadline of a call that passed and escalated it (to ``escalated_to``), recorded
    at ``at``."""

    expired_at: datetime
    action: TimeoutAction
    escalated_to: str | None
    at: datetime

    def as_dict(self) -> Json:
        return {"expired_at": self.expired_at, "action": str(self.action),
                "escalated_to": self.escalated_to, "at": self.at}

    @classmethod
    def of(cls, d: Mapping[str, Any]) -> Expiry:
        return cls(d["expired_at"], TimeoutAction(d["action"]), d.get("escalated_to"), d["at"])


@dataclass(frozen=True)
class ToolCall:
    """One tool call of a run. What was requested (``tool_name``, ``tool_args``, what it
    ``requires``, the ``policy`` that decided that, its deadline ``expires_at`` and what
    happens then, ``on_timeout``), where it is (``state``), the ``decision`` that stands
    on it, and its outcome (``result`` or ``error``, after ``attempts`` starts)."""

    tool_call_id: str
    tool_name: str
    tool_args: Json  # as the model proposed them
    requires: Requirement | None  # None: it may run at once
    confirmation_message: str | None
    user_input_schema: list[Json] | None
    stop_after_tool_call: bool
    editable_args: bool
    state: CallState
    requested_at: datetime
    decision: RecordedDecision | None = None
    approved_args: Json | None = None  # as a reviewer edited them, or with user input
    result: str | None = None
    error: str | None = None
    attempts: int = 0
    deadline: datetime | None = None  # of the running attempt: then it is in doubt
    policy: PolicyOutcome | None = None
    expires_at: datetime | None = None  # when the decision is due (None: never)
    on_timeout: TimeoutAction | None = None
    escalate_to: str | None = None  # the group an escalation goes to
    escalated_to: str | None = None  # the group the call waits for, once escalated
    started_at: datetime | None = None  # of the latest attempt
    outcome_at: datetime | None = None  # when its result or failure was recorded
    expiries: tuple[Expiry, ...] = ()  # the deadlines that passed and escalated it

    # ------------------------------------------------------------ reading

    @property
    def args(self) -> Json:
        """The arguments it runs with: as approved, else as proposed."""
        return self.approved_args if self.approved_args is not None else self.tool_args

    @property
    def waiting(self) -> bool:
        """Does it wait for a decision?"""
        return self.state in WAITING

    def as_dict(self) -> Json:
        return {name: _plain(getattr(self, name)) for name in _CALL_KEYS}

    @classmethod
    def of(cls, d: Mapping[str, Any]) -> ToolCall:
        """Read from its mapping form (``as_dict``), or from a snapshot's, where a call
        lacks the keys of what came after it (``expiries`` and the rest: their defaults)."""
        requires, on_timeout = d.get("requires"), d.get("on_timeout")
        decision, policy = d.get("decision"), d.get("policy")
        return cls(
            tool_call_id=d["tool_call_id"], tool_name=d["tool_name"], tool_args=d["tool_args"],
            requires=Requirement(requires) if requires else None,
            confirmation_message=d.get("confirmation_message"),
            user_input_schema=d.get("user_input_schema"),
            stop_after_tool_call=bool(d.get("stop_after_tool_call")),
            editable_args=d.get("editable_args", True),
            state=CallState(d["state"]), requested_at=d["requested_at"],
            decision=RecordedDecision.of(decision) if decision else None,
            approved_args=d.get("approved_args"), result=d.get("result"),
            error=d.get("error"), attempts=d.get("attempts") or 0, deadline=d.get("deadline"),
            policy=PolicyOutcome.of(policy) if policy else None,
            expires_at=d.get("expires_at"),
            on_timeout=TimeoutAction(on_timeout) if on_timeout else None,
            escalate_to=d.get("escalate_to"), escalated_to=d.get("escalated_to"),
            started_at=d.get("started_at"), outcome_at=d.get("outcome_at"),
            expiries=tuple(Expiry.of(e) for e in d.get("expiries") or ()))

    def _with(self, **changes: Any) -> ToolCall:
        """A copy with ``changes``: ``dataclasses.replace`` without its work per field
        (a call changes with most events of its run, and a replay applies them all)."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__, **changes)
        return new

    # ---------------------------------------------------------- decisions

    def confirmed(self, decision: RecordedDecision) -> ToolCall:
        if self.tool_name == RUN_CONFIRMATION_TOOL:  # nothing to run: the run goes on
            return self._with(decision=decision, approved_args=decision.approved_args,
                           state=CallState.EXECUTED, result="confirmed")
        return self._with(decision=decision, approved_args=decision.approved_args,
                       state=CallState.APPROVED)

    def rejected(self, decision: RecordedDecision) -> ToolCall:
        return self._with(decision=decision, state=CallState.REJECTED)

    def answered(self, decision: RecordedDecision) -> ToolCall:
        """Given its result by an external system (or a person, for a call in doubt)."""
        return self._with(decision=decision, result=decision.result,
                       state=CallState.ANSWERED)

    def given_input(self, decision: RecordedDecision) -> ToolCall:
        return self._with(decision=decision, state=CallState.APPROVED,
                       approved_args={**self.tool_args, **(decision.values or {})})

    def expired(self, decision: RecordedDecision) -> ToolCall:
        """Decided by the system at its deadline: rejected, or approved."""
        state = (CallState.REJECTED if decision.action == TimeoutAction.REJECT
                 else CallState.APPROVED)
        return self._with(decision=decision, state=state)

    def escalated(self, expiry: Expiry, expires_at: datetime | None) -> ToolCall:
        """Its deadline passed and it waits on, for the group ``expiry.escalated_to``,
        until ``expires_at``; then it is rejected (it escalates once, at most)."""
        return self._with(escalated_to=expiry.escalated_to, expires_at=expires_at,
                       on_timeout=TimeoutAction.REJECT, expiries=(*self.expiries, expiry))

    # ----------------------------------------------------------- outcomes

    def started(self, attempt: int, deadline: datetime, at: datetime) -> ToolCall:
        return self._with(state=CallState.RUNNING, attempts=attempt, deadline=deadline,
                       started_at=at)

    def executed(self, result: str, at: datetime) -> ToolCall:
        return self._with(state=CallState.EXECUTED, result=result, outcome_at=at)

    def failed(self, error: str, at: datetime) -> ToolCall:
        return self._with(state=CallState.FAILED, error=error, outcome_at=at)

    def in_doubt(self) -> ToolCall:
        """Started, with no outcome recorded by its deadline: a person decides again."""
        return self._with(state=CallState.IN_DOUBT, decision=None)

    def closed(self) -> ToolCall:
        """Its run ended: cancelled, unless it is running or resolved already (a running
        call keeps its state: its outcome, when it comes, is still recorded)."""
        if self.state in (CallState.PENDING, CallState.APPROVED, CallState.IN_DOUBT):
            return self._with(state=CallState.CANCELLED)
        return self


_CALL_KEYS = tuple(f.name for f in fields(ToolCall))


def find_call(calls: Mapping[str, ToolCall], tool_call_id: str) -> ToolCall:
    try:
        return calls[tool_call_id]
    except KeyError:
        raise ToolCallNotFound(f"run has no tool call {tool_call_id!r}") from None


def check_request(requires: Requirement | None, policy: PolicyOutcome | None,
                  expires_at: datetime | None, on_timeout: TimeoutAction | None,
                  escalate_to: str | None) -> TimeoutAction | None:
    """Check that a call's policy and deadline fit what it waits for; its action at
    the deadline (reject when none is given), or None when it has no deadline."""
    if policy is not None:
        fits = {PolicyVerdict.REQUIRED: Requirement.CONFIRMATION, PolicyVerdict.ALLOWED: None}
        if requires != fits[policy.outcome]:
            raise InvalidDecision(f"a policy outcome {str(policy.outcome)!r} does not fit "
                                  f"a call that needs {requires or 'nothing'}")
    if expires_at is None:
        if on_timeout is not None or escalate_to is not None:
            raise InvalidDecision("a timeout action needs a deadline (expires_at)")
        return None
    if not requires:
        raise InvalidDecision("only a call that waits for a decision has a deadline")
    on_timeout = TimeoutAction(on_timeout or TimeoutAction.REJECT)
    if on_timeout == TimeoutAction.APPROVE and requires != Requirement.CONFIRMATION:
        raise InvalidDecision("only a call that waits for a confirmation may be "
                              "approved when it expires")
    if (on_timeout == TimeoutAction.ESCALATE) != bool(escalate_to):
        raise InvalidDecision("an escalation names the group it goes to "
                              "(escalate_to), and only an escalation does")
    return on_timeout


def tool_message_content(call: ToolCall) -> str | None:
    """What the model is told about a resolved call; None while it is unresolved."""
    if call.state in (CallState.EXECUTED, CallState.ANSWERED):
        return str(call.result)
    if call.state == CallState.FAILED:
        return f"Error: {call.error}"
    if call.state == CallState.REJECTED:
        reason = call.decision.reason if call.decision else None
        return reason or "The user rejected this tool call; it was not run."
    return None
