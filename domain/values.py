"""Values of the run domain: statuses, kinds of decision, states of a tool call, the
decision a reviewer submits, the decision that stands on a call, and the verdicts of an
approval policy. The module imports nothing else of the domain: the errors and the
tool call (``domain/calls.py``) build on it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

Json = dict[str, Any]


class RunStatus(StrEnum):
    """Agno's run statuses, as on the wire."""

    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"
    ERROR = "ERROR"

    @property
    def is_final(self) -> bool:
        return self in (RunStatus.COMPLETED, RunStatus.CANCELLED, RunStatus.ERROR)


class Requirement(StrEnum):
    """What a tool call waits for before it may run."""

    CONFIRMATION = "confirmation"
    EXTERNAL_EXECUTION = "external_execution"
    USER_INPUT = "user_input"


class CallState(StrEnum):
    """Where one tool call is in its life."""

    PENDING = "pending"  # waits for a person's (or a system's) decision
    APPROVED = "approved"  # may run: needed nothing, or was confirmed / given its input
    REJECTED = "rejected"  # will not run; the model is told why
    ANSWERED = "answered"  # an external system supplied its result
    RUNNING = "running"  # execution started; outcome not yet recorded
    EXECUTED = "executed"
    FAILED = "failed"
    IN_DOUBT = "in_doubt"  # started, outcome unknown after a crash: a person decides
    CANCELLED = "cancelled"


class DecisionKind(StrEnum):
    CONFIRMED = "confirmed"
    REJECTED = "rejected"
    EXTERNAL_RESULT = "external_result"
    USER_INPUT = "user_input"
    EXPIRED = "expired"  # nobody decided in time: the system did (``DecisionExpired``)


class TimeoutAction(StrEnum):
    """What happens to a call nobody decided before its deadline."""

    REJECT = "reject"  # rejected: the model is told the decision expired
    ESCALATE = "escalate"  # waits on, for another group of reviewers
    APPROVE = "approve"  # runs as if confirmed (tools marked safe only)


# Who records an expiry.
SYSTEM = "system"

# The pseudo tool a run waits on when its agent has ``confirm_before_run``.
RUN_CONFIRMATION_TOOL = "confirm_run"


@dataclass(frozen=True)
class Decision:
    """One decision on one tool call, as a reviewer or a client submits it."""

    tool_call_id: str
    kind: DecisionKind
    note: str | None = None  # confirmation note, or rejection reason
    approved_args: Json | None = None
    result: str | None = None
    values: Json | None = None


# The fields of a recorded decision's mapping form beside its header, by kind.
_DETAILS = {
    DecisionKind.CONFIRMED: ("note", "approved_args"),
    DecisionKind.REJECTED: ("reason",),
    DecisionKind.EXTERNAL_RESULT: ("result",),
    DecisionKind.USER_INPUT: ("values",),
    DecisionKind.EXPIRED: ("action", "expired_at", "reason"),
}


@dataclass(frozen=True)
class RecordedDecision:
    """The decision that stands on a call: who made it, when (``decided_at``, and
    ``version``, the run's version its event made), the request that carried it, and
    what it says, by kind: a confirmation's ``note`` and ``approved_args``, a rejection's
    ``reason``, an external ``result``, user input's ``values``, an expiry's ``action``,
    ``expired_at`` and ``reason``."""

    kind: DecisionKind
    decided_by: str
    decided_at: datetime
    version: int
    request_key: str | None = None  # the Idempotency-Key of the request that decided
    request_digest: str | None = None  # a digest of what that request asked
    note: str | None = None
    approved_args: Json | None = None
    reason: str | None = None
    result: str | None = None
    values: Json | None = None
    action: TimeoutAction | None = None
    expired_at: datetime | None = None

    def as_dict(self) -> Json:
        """Its JSON object (a run's view, a webhook's payload, a 409's body, a snapshot's
        state): the header, then only the fields of its kind."""
        out: Json = {"kind": str(self.kind), "decided_by": self.decided_by,
                     "decided_at": self.decided_at, "version": self.version,
                     "request_key": self.request_key, "request_digest": self.request_digest}
        for name in _DETAILS[self.kind]:
            value = getattr(self, name)
            out[name] = str(value) if isinstance(value, StrEnum) else value
        return out

    @classmethod
    def of(cls, d: Mapping[str, Any]) -> RecordedDecision:
        """Read from its mapping form (``as_dict``)."""
        action = d.get("action")
        return cls(kind=DecisionKind(d["kind"]), decided_by=d["decided_by"],
                   decided_at=d["decided_at"], version=int(d.get("version") or 0),
                   request_key=d.get("request_key"), request_digest=d.get("request_digest"),
                   note=d.get("note"), approved_args=d.get("approved_args"),
                   reason=d.get("reason"), result=d.get("result"), values=d.get("values"),
                   action=TimeoutAction(action) if action else None,
                   expired_at=d.get("expired_at"))


@dataclass(frozen=True)
class Reply:
    """What a client sends back about one tool call of a paused run (Agno's tool
    execution with its decision filled in), before it is read against the call: which
    decision it makes depends on what the call waits for (``Run.decisions_for``)."""

    tool_call_id: str
    confirmed: bool | None = None
    note: str | None = None  # confirmation note, or rejection reason
    tool_args: Json | None = None
    result: str | None = None
    values: Json | None = None  # user input, by field name (None: not given)


class PolicyVerdict(StrEnum):
    """What an approval policy decided about a call."""

    REQUIRED = "required"  # a person confirms it
    ALLOWED = "allowed"  # it runs at once
