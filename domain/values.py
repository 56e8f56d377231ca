"""Values of the run domain: statuses, kinds of decision, states of a tool call."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


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
    approved_args: dict[str, Any] | None = None
    result: str | None = None
    values: dict[str, Any] | None = None


@dataclass(frozen=True)
class Reply:
    """What a client sends back about one tool call of a paused run (Agno's tool
    execution with its decision filled in), before it is read against the call: which
    decision it makes depends on what the call waits for (``Run.decisions_for``)."""

    tool_call_id: str
    confirmed: bool | None = None
    note: str | None = None  # confirmation note, or rejection reason
    tool_args: dict[str, Any] | None = None
    result: str | None = None
    values: dict[str, Any] | None = None  # user input, by field name (None: not given)
