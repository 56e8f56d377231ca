"""The Run aggregate: one agent run, its tool calls and the decisions on them.

A run's state is only a fold of its events. Each event class applies itself
(``apply``); each command is a public method that checks the rules, raises a domain
error when they are broken, and otherwise triggers one event (``domain/commands.py``).
A tool call is a value (``domain/calls.py``: ``ToolCall``) that each event on it
replaces; when a call may be decided, and what a client's reply decides, is in
``domain/decisions.py``. The event classes stay nested here: their topics
(``domain.run:Run.ToolConfirmed``) are stored with every event.

Nothing here does I/O: the agent loop (``agent/loop.py``) calls the model and the
tools, and records what they answered as events, so replaying a run never calls either
again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.calls import Expiry, PolicyOutcome, ToolCall
from domain.chain import Chained
from domain.commands import RunCommands
from domain.decisions import DecisionEvent
from domain.values import (
    CallState,
    DecisionKind,
    Requirement,
    RunStatus,
    TimeoutAction,
)

Json = dict[str, Any]


class Run(Chained, RunCommands):
    """One run of an agent, from the user's message to its end: its state, the events
    that change it, and (from ``RunCommands``, domain/commands.py) the commands that
    trigger them. Its events are hash-chained (``domain/chain.py``: ``Chained``)."""

    # A snapshot of version 1 holds its calls as dicts; of version 2, as ``ToolCall``.
    class_version = 2

    @staticmethod
    def upcast_v1_v2(state: Json) -> None:
        state["calls"] = {i: ToolCall.of(c) for i, c in state["calls"].items()}

    # ---------------------------------------------------------------- events

    class RunStarted(Aggregate.Created):
        agent_id: str
        agent_name: str
        user_id: str | None
        session_id: str
        input: str
        instructions: str

    class ModelResponded(Aggregate.Event):
        """The model's answer, recorded so that a replay never calls the model again."""

        model: str
        provider: str
        content: str | None
        tool_calls: list[Json]  # [{"id", "name", "args"}]
        input_tokens: int
        output_tokens: int

        def apply(self, run: Run) -> None:
            run.turns.append({"content": self.content,
                              "tool_call_ids": [c["id"] for c in self.tool_calls],
                              "tool_calls": self.tool_calls, "at": self.timestamp})
            run.model = self.model
            run.model_provider = self.provider
            run.input_tokens += self.input_tokens
            run.output_tokens += self.output_tokens
            if self.content is not None:
                run.content = self.content

    class ToolCallRequested(Aggregate.Event):
        tool_call_id: str
        tool_name: str
        tool_args: Json
        requires: str | None  # a Requirement, or None when the call may run at once
        confirmation_message: str | None
        user_input_schema: list[Json] | None
        stop_after_tool_call: bool
        editable_args: bool
        # Added in version 3 (absent from older events: the class default stands):
        # the policy that decided whether the call needs a confirmation, in its recorded
        # form (``PolicyOutcome.as_dict``); None when none did.
        policy: Json | None = None
        # How long the decision may wait: after ``expires_at`` (None: for ever) the
        # system records ``DecisionExpired`` with ``on_timeout`` as its action, and an
        # escalation waits for the group ``escalate_to``.
        expires_at: datetime | None = None
        on_timeout: str | None = None  # a TimeoutAction
        escalate_to: str | None = None

        # Version 3 added fields with class defaults. The upcaster adds no key on
        # purpose: an old event's fields are what its hash was computed over, and
        # ``signoff audit verify`` recomputes it from them.
        class_version = 3

        @staticmethod
        def upcast_v2_v3(state: Json) -> None:
            pass

        def apply(self, run: Run) -> None:
            run.calls[self.tool_call_id] = ToolCall(
                tool_call_id=self.tool_call_id, tool_name=self.tool_name,
                tool_args=self.tool_args,
                requires=Requirement(self.requires) if self.requires else None,
                confirmation_message=self.confirmation_message,
                user_input_schema=self.user_input_schema,
                stop_after_tool_call=self.stop_after_tool_call,
                editable_args=self.editable_args,
                state=CallState.PENDING if self.requires else CallState.APPROVED,
                requested_at=self.timestamp,
                policy=PolicyOutcome.of(self.policy) if self.policy else None,
                expires_at=self.expires_at,
                on_timeout=TimeoutAction(self.on_timeout) if self.on_timeout else None,
                escalate_to=self.escalate_to)

    class RunPaused(Aggregate.Event):
        waiting_for: list[str]

        def apply(self, run: Run) -> None:
            run.status = RunStatus.PAUSED
            run.waiting_for = list(self.waiting_for)
            run.paused_at = self.timestamp

    class ToolConfirmed(Aggregate.Event, DecisionEvent):
        decision_kind = DecisionKind.CONFIRMED
        tool_call_id: str
        decided_by: str
        note: str | None
        approved_args: Json | None  # set when the reviewer changed the arguments
        request_key: str | None  # the Idempotency-Key of the request that decided
        # A digest of what that request asked (absent from events recorded before keys
        # were bound to their request: the class default stands).
        request_digest: str | None = None

        def apply(self, run: Run) -> None:
            run.calls[self.tool_call_id] = run.calls[self.tool_call_id].confirmed(
                self.recorded(note=self.note, approved_args=self.approved_args))

    class ToolRejected(Aggregate.Event, DecisionEvent):
        decision_kind = DecisionKind.REJECTED
        tool_call_id: str
        decided_by: str
        reason: str | None
        request_key: str | None
        request_digest: str | None = None

        def apply(self, run: Run) -> None:
            run.calls[self.tool_call_id] = run.calls[self.tool_call_id].rejected(
                self.recorded(reason=self.reason))

    class ExternalResultProvided(Aggregate.Event, DecisionEvent):
        decision_kind = DecisionKind.EXTERNAL_RESULT
        tool_call_id: str
        decided_by: str
        result: str
        request_key: str | None
        request_digest: str | None = None

        def apply(self, run: Run) -> None:
            run.calls[self.tool_call_id] = run.calls[self.tool_call_id].answered(
                self.recorded(result=self.result))

    class UserInputProvided(Aggregate.Event, DecisionEvent):
        decision_kind = DecisionKind.USER_INPUT
        tool_call_id: str
        decided_by: str
        values: Json
        request_key: str | None
        request_digest: str | None = None

        def apply(self, run: Run) -> None:
            run.calls[self.tool_call_id] = run.calls[self.tool_call_id].given_input(
                self.recorded(values=self.values))

    class DecisionExpired(Aggregate.Event, DecisionEvent):
        """Nobody decided the call before its deadline: the system did, by the action
        the tool declared. ``expired_at``: the deadline that passed; ``expires_at``: the
        new deadline of an escalated call (None: it waits for the group for ever)."""

        decision_kind = DecisionKind.EXPIRED

        tool_call_id: str
        decided_by: str
        action: str  # a TimeoutAction
        expired_at: datetime
        escalated_to: str | None
        expires_at: datetime | None

        def apply(self, run: Run) -> None:
            call = run.calls[self.tool_call_id]
            action = TimeoutAction(self.action)
            if action == TimeoutAction.ESCALATE:
                expiry = Expiry(self.expired_at, action, self.escalated_to, self.timestamp)
                run.calls[self.tool_call_id] = call.escalated(expiry, self.expires_at)
                return
            reason = (f"No decision was made in time (it expired at "
                      f"{self.expired_at.isoformat()}): the call was not run."
                      if action == TimeoutAction.REJECT else None)
            run.calls[self.tool_call_id] = call.expired(
                self.recorded(action=action, expired_at=self.expired_at, reason=reason))

    class RunContinued(Aggregate.Event):
        def apply(self, run: Run) -> None:
            run.status = RunStatus.RUNNING
            run.waiting_for = []
            run.paused_at = None

    class ToolExecutionStarted(Aggregate.Event):
        """Recorded (and committed) before the tool's function is called."""

        tool_call_id: str
        attempt: int
        deadline: datetime  # after this, with no outcome recorded, the call is in doubt

        def apply(self, run: Run) -> None:
            run.calls[self.tool_call_id] = run.calls[self.tool_call_id].started(
                self.attempt, self.deadline, self.timestamp)

    class ToolExecuted(Aggregate.Event):
        tool_call_id: str
        result: str

        def apply(self, run: Run) -> None:
            run.calls[self.tool_call_id] = run.calls[self.tool_call_id].executed(
                self.result, self.timestamp)

    class ToolFailed(Aggregate.Event):
        tool_call_id: str
        error: str

        def apply(self, run: Run) -> None:
            run.calls[self.tool_call_id] = run.calls[self.tool_call_id].failed(
                self.error, self.timestamp)

    class ToolCallInDoubt(Aggregate.Event):
        """The call started but its outcome was never recorded: a person must decide."""

        tool_call_id: str

        def apply(self, run: Run) -> None:
            run.calls[self.tool_call_id] = run.calls[self.tool_call_id].in_doubt()

    class RunCompleted(Aggregate.Event):
        content: str | None

        def apply(self, run: Run) -> None:
            run.status = RunStatus.COMPLETED
            run.content = self.content

    class RunFailed(Aggregate.Event):
        error: str

        def apply(self, run: Run) -> None:
            run.status = RunStatus.ERROR
            run.error = self.error
            run.close_calls()

    class RunCancelled(Aggregate.Event):
        cancelled_by: str
        reason: str | None

        def apply(self, run: Run) -> None:
            run.status = RunStatus.CANCELLED
            run.cancelled_by = self.cancelled_by
            run.cancel_reason = self.reason
            run.close_calls()

    # eventsourcing declares ``Snapshot`` as a class attribute: mypy sees a variable.
    class Snapshot(Aggregate.Snapshot):  # type: ignore[valid-type,misc]
        """A snapshot's state is stored as JSON, so the run's status comes back as a
        plain string: restore it, or ``run.status.is_final`` breaks on a run loaded from
        a snapshot. Its calls come back as ``ToolCall`` values (the transcoding the
        application registers), or as dicts from a version 1 snapshot (``upcast_v1_v2``)."""

        def mutate(self, _: None) -> Run:
            run = cast(Run, super().mutate(_))
            run.__dict__.setdefault("chain_head", None)  # a snapshot from before the chain
            run.status = RunStatus(run.status)
            return run

    # ------------------------------------------------------- creation, state

    def __init__(
        self,
        agent_id: str,
        agent_name: str,
        user_id: str | None,
        session_id: str,
        input: str,
        instructions: str,
    ) -> None:
        self.agent_id = agent_id
        self.agent_name = agent_name
        self.user_id = user_id
        self.session_id = session_id
        self.input = input
        self.instructions = instructions
        self.status = RunStatus.RUNNING
        self.model: str | None = None
        self.model_provider: str | None = None
        self.content: str | None = None
        self.turns: list[Json] = []
        self.calls: dict[str, ToolCall] = {}
        self.waiting_for: list[str] = []
        self.paused_at: datetime | None = None
        self.error: str | None = None
        self.cancelled_by: str | None = None
        self.cancel_reason: str | None = None
        self.input_tokens = 0
        self.output_tokens = 0
        self.chain_head = None  # the hash of the newest event (``Chained`` sets it)

    @classmethod
    def start(
        cls,
        *,
        agent_id: str,
        agent_name: str,
        user_id: str | None,
        session_id: str,
        input: str,
        instructions: str = "",
        run_id: UUID | None = None,
    ) -> Run:
        """Start a run for the user's ``input``."""
        kwargs: Json = {"id": run_id} if run_id else {}
        run: Run = cls._create(
            cls.RunStarted,
            agent_id=agent_id,
            agent_name=agent_name,
            user_id=user_id,
            session_id=session_id,
            input=input,
            instructions=instructions,
            **kwargs,
        )
        return run

    @property
    def run_id(self) -> str:
        return str(self.id)

    def pending_calls(self) -> list[ToolCall]:
        """Calls that wait for a decision, in the order they were requested."""
        return [c for c in self.calls.values() if c.waiting]

    def calls_in(self, *states: CallState) -> list[ToolCall]:
        return [c for c in self.calls.values() if c.state in states]

    def close_calls(self) -> None:
        """The run ended: its undecided and unstarted calls end with it."""
        self.waiting_for = []
        self.paused_at = None
        self.calls = {i: c.closed() for i, c in self.calls.items()}
