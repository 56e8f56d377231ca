"""Domain errors: a command that would break one of the run's rules."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from domain.values import RecordedDecision


class RunError(Exception):
    """A command that the run's current state does not allow."""


class InvalidRunTransition(RunError):
    """The run's status does not allow this command (e.g. a decision on a completed run)."""


class ToolCallNotFound(RunError):
    """The run has no tool call with this id."""


class ToolCallNotPending(RunError):
    """The call is not waiting for a decision; ``decision`` is the one that stands, if any."""

    def __init__(self, message: str, decision: RecordedDecision | None = None) -> None:
        super().__init__(message)
        self.decision = decision


class WrongDecisionKind(RunError):
    """The call waits for another kind of decision (e.g. a result for a confirmation)."""


class InvalidDecision(RunError):
    """The decision's content is not acceptable (missing user input, forbidden edit)."""


class KeyRevoked(Exception):
    """The API key is already revoked."""
