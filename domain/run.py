"""The Run aggregate: one agent run, its tool calls and the decisions on them.

A run's state is only a fold of its events. Each event class applies itself
(``apply``); each command is a public method that checks the rules, raises a domain
error when they are broken, and otherwise triggers one event. Nothing here does I/O:
the agent loop (``agent/loop.py``) calls the model and the tools, and records what they
answered as events, so replaying a run never calls either again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, cast
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.chain import Chained
from domain.errors import (
    InvalidDecision,
    InvalidRunTransition,
    ToolCallNotFound,
    ToolCallNotPending,
    WrongDecisionKind,
)
from domain.values import (
    RUN_CONFIRMATION_TOOL,
    SYSTEM,
    CallState,
    Decision,
    DecisionKind,
    Reply,
    Requirement,
    RunStatus,
    TimeoutAction,
)

Json = dict[str, Any]


class DecisionEvent:
    """An event that records a decision on one call (``tool_call_id``, ``decided_by``):
    ``decision_kind`` says which kind. Code outside the domain asks
    ``isinstance(event, DecisionEvent)`` rather than listing the classes."""

    decision_kind: ClassVar[DecisionKind]
    tool_call_id: str
    decided_by: str


# States in which a call holds the run open (it must be resolved before the run ends).
_OPEN = (CallState.PENDING, CallState.APPROVED, CallState.RUNNING, CallState.IN_DOUBT)


class Run(Chained):
    """One run of an agent, from the user's message to its end. Its events are
    hash-chained (``domain/chain.py``: ``Chained``)."""

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
        # the policy that decided whether the call needs a confirmation, as data
        # ({"rule", "outcome": "required" | "allowed", "reason"}); None when none did.
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
            run.calls[self.tool_call_id] = {
                "tool_call_id": self.tool_call_id,
                "tool_name": self.tool_name,
                "tool_args": self.tool_args,
                "requires": self.requires,
                "confirmation_message": self.confirmation_message,
                "user_input_schema": self.user_input_schema,
                "stop_after_tool_call": self.stop_after_tool_call,
                "editable_args": self.editable_args,
                "state": CallState.PENDING if self.requires else CallState.APPROVED,
                "requested_at": self.timestamp,
                "decision": None,
                "approved_args": None,
                "result": None,
                "error": None,
                "attempts": 0,
                "deadline": None,
                "policy": self.policy,
                "expires_at": self.expires_at,
                "on_timeout": self.on_timeout,
                "escalate_to": self.escalate_to,
                "escalated_to": None,  # the group the call waits for, once escalated
            }

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
            call = run.calls[self.tool_call_id]
            call["decision"] = _decision(self, DecisionKind.CONFIRMED, note=self.note,
                                         approved_args=self.approved_args)
            call["approved_args"] = self.approved_args
            if call["tool_name"] == RUN_CONFIRMATION_TOOL:  # nothing to run: the run goes on
                call["state"] = CallState.EXECUTED
                call["result"] = "confirmed"
            else:
                call["state"] = CallState.APPROVED

    class ToolRejected(Aggregate.Event, DecisionEvent):
        decision_kind = DecisionKind.REJECTED
        tool_call_id: str
        decided_by: str
        reason: str | None
        request_key: str | None
        request_digest: str | None = None

        def apply(self, run: Run) -> None:
            call = run.calls[self.tool_call_id]
            call["decision"] = _decision(self, DecisionKind.REJECTED, reason=self.reason)
            call["state"] = CallState.REJECTED

    class ExternalResultProvided(Aggregate.Event, DecisionEvent):
        decision_kind = DecisionKind.EXTERNAL_RESULT
        tool_call_id: str
        decided_by: str
        result: str
        request_key: str | None
        request_digest: str | None = None

        def apply(self, run: Run) -> None:
            call = run.calls[self.tool_call_id]
            call["decision"] = _decision(self, DecisionKind.EXTERNAL_RESULT, result=self.result)
            call["result"] = self.result
            call["state"] = CallState.ANSWERED

    class UserInputProvided(Aggregate.Event, DecisionEvent):
        decision_kind = DecisionKind.USER_INPUT
        tool_call_id: str
        decided_by: str
        values: Json
        request_key: str | None
        request_digest: str | None = None

        def apply(self, run: Run) -> None:
            call = run.calls[self.tool_call_id]
            call["decision"] = _decision(self, DecisionKind.USER_INPUT, values=self.values)
            call["approved_args"] = {**call["tool_args"], **self.values}
            call["state"] = CallState.APPROVED

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
            if self.action == TimeoutAction.ESCALATE:
                call["escalated_to"] = self.escalated_to
                call["expires_at"] = self.expires_at
                call["on_timeout"] = str(TimeoutAction.REJECT)  # escalated once, at most
                call.setdefault("expiries", []).append(
                    {"expired_at": self.expired_at, "action": self.action,
                     "escalated_to": self.escalated_to, "at": self.timestamp})
                return
            reason = (f"No decision was made in time (it expired at "
                      f"{self.expired_at.isoformat()}): the call was not run."
                      if self.action == TimeoutAction.REJECT else None)
            call["decision"] = _decision(self, DecisionKind.EXPIRED, action=self.action,
                                         expired_at=self.expired_at, reason=reason)
            call["state"] = (CallState.REJECTED if self.action == TimeoutAction.REJECT
                             else CallState.APPROVED)

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
            call = run.calls[self.tool_call_id]
            call["state"] = CallState.RUNNING
            call["attempts"] = self.attempt
            call["deadline"] = self.deadline
            call["started_at"] = self.timestamp

    class ToolExecuted(Aggregate.Event):
        tool_call_id: str
        result: str

        def apply(self, run: Run) -> None:
            call = run.calls[self.tool_call_id]
            call["state"] = CallState.EXECUTED
            call["result"] = self.result
            call["outcome_at"] = self.timestamp

    class ToolFailed(Aggregate.Event):
        tool_call_id: str
        error: str

        def apply(self, run: Run) -> None:
            call = run.calls[self.tool_call_id]
            call["state"] = CallState.FAILED
            call["error"] = self.error
            call["outcome_at"] = self.timestamp

    class ToolCallInDoubt(Aggregate.Event):
        """The call started but its outcome was never recorded: a person must decide."""

        tool_call_id: str

        def apply(self, run: Run) -> None:
            call = run.calls[self.tool_call_id]
            call["state"] = CallState.IN_DOUBT
            call["decision"] = None

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
            _close_open_calls(run)

    class RunCancelled(Aggregate.Event):
        cancelled_by: str
        reason: str | None

        def apply(self, run: Run) -> None:
            run.status = RunStatus.CANCELLED
            run.cancelled_by = self.cancelled_by
            run.cancel_reason = self.reason
            _close_open_calls(run)

    # eventsourcing declares ``Snapshot`` as a class attribute: mypy sees a variable.
    class Snapshot(Aggregate.Snapshot):  # type: ignore[valid-type,misc]
        """A snapshot's state is stored as JSON, so its enums come back as plain strings:
        restore them, or ``run.status.is_final`` breaks on a run loaded from a snapshot."""

        def mutate(self, _: None) -> Run:
            run = cast(Run, super().mutate(_))
            run.__dict__.setdefault("chain_head", None)  # a snapshot from before the chain
            run.status = RunStatus(run.status)
            for call in run.calls.values():
                call["state"] = CallState(call["state"])
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
        self.calls: dict[str, Json] = {}
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

    def pending_calls(self) -> list[Json]:
        """Calls that wait for a decision, in the order they were requested."""
        return [c for c in self.calls.values()
                if c["state"] in (CallState.PENDING, CallState.IN_DOUBT)]

    def calls_in(self, *states: CallState) -> list[Json]:
        return [c for c in self.calls.values() if c["state"] in states]

    # -------------------------------------------------------------- commands

    def record_model_response(
        self,
        *,
        model: str,
        provider: str,
        content: str | None,
        tool_calls: list[Json],
        input_tokens: int = 0,
        output_tokens: int = 0,
    ) -> None:
        self._require_status(RunStatus.RUNNING, "record a model response")
        if self.calls_in(*_OPEN):
            raise InvalidRunTransition("earlier tool calls are still open")
        ids = [c["id"] for c in tool_calls]
        if len(set(ids)) != len(ids) or any(i in self.calls for i in ids):
            raise InvalidDecision("tool call ids must be unique within a run")
        self.trigger_event(
            self.ModelResponded,
            model=model,
            provider=provider,
            content=content,
            tool_calls=tool_calls,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
        )

    def request_tool_call(
        self,
        *,
        tool_call_id: str,
        tool_name: str,
        tool_args: Json,
        requires: Requirement | None = None,
        confirmation_message: str | None = None,
        user_input_schema: list[Json] | None = None,
        stop_after_tool_call: bool = False,
        editable_args: bool = True,
        policy: Json | None = None,
        expires_at: datetime | None = None,
        on_timeout: TimeoutAction | None = None,
        escalate_to: str | None = None,
    ) -> None:
        """``policy``: the outcome of the policy that decided whether the call needs a
        confirmation (``{"rule", "outcome", "reason"}``), decided outside the domain.
        ``expires_at``: how long the decision may wait; then ``on_timeout`` (default
        reject) happens: see ``expire_decision``."""
        self._require_status(RunStatus.RUNNING, "request a tool call")
        if tool_call_id in self.calls:
            raise InvalidDecision(f"tool call {tool_call_id!r} was already requested")
        if policy is not None:
            fits = {"required": Requirement.CONFIRMATION, "allowed": None}
            outcome = policy.get("outcome")
            if outcome not in fits or not policy.get("rule"):
                raise InvalidDecision("a policy names its rule and its outcome "
                                      "('required' or 'allowed')")
            if (Requirement(requires) if requires else None) != fits[outcome]:
                raise InvalidDecision(f"a policy outcome {outcome!r} does not fit a call "
                                      f"that needs {requires or 'nothing'}")
        if expires_at is None:
            if on_timeout is not None or escalate_to is not None:
                raise InvalidDecision("a timeout action needs a deadline (expires_at)")
        else:
            if not requires:
                raise InvalidDecision("only a call that waits for a decision has a deadline")
            on_timeout = TimeoutAction(on_timeout or TimeoutAction.REJECT)
            if on_timeout == TimeoutAction.APPROVE and requires != Requirement.CONFIRMATION:
                raise InvalidDecision("only a call that waits for a confirmation may be "
                                      "approved when it expires")
            if (on_timeout == TimeoutAction.ESCALATE) != bool(escalate_to):
                raise InvalidDecision("an escalation names the group it goes to "
                                      "(escalate_to), and only an escalation does")
        self.trigger_event(
            self.ToolCallRequested,
            tool_call_id=tool_call_id,
            tool_name=tool_name,
            tool_args=tool_args,
            requires=str(requires) if requires else None,
            confirmation_message=confirmation_message,
            user_input_schema=user_input_schema,
            stop_after_tool_call=stop_after_tool_call,
            editable_args=editable_args,
            policy=policy,
            expires_at=expires_at,
            on_timeout=str(on_timeout) if on_timeout else None,
            escalate_to=escalate_to,
        )

    def pause(self) -> None:
        """Pause until every call that waits for a decision has one."""
        self._require_status(RunStatus.RUNNING, "pause")
        waiting = [c["tool_call_id"] for c in self.pending_calls()]
        if not waiting:
            raise InvalidRunTransition("nothing to wait for: no call needs a decision")
        self.trigger_event(self.RunPaused, waiting_for=waiting)

    def decide(self, decision: Decision, *, decided_by: str, request_key: str | None = None,
               request_digest: str | None = None) -> None:
        """Record one decision of a person (or a client) on a call that waits for it.
        ``request_key`` / ``request_digest``: the Idempotency-Key of the request that
        carried it, and a digest of what that request asked."""
        request = {"request_key": request_key, "request_digest": request_digest}
        if decision.kind == DecisionKind.CONFIRMED:
            self.confirm_tool(decision.tool_call_id, decided_by=decided_by, note=decision.note,
                              approved_args=decision.approved_args, **request)
        elif decision.kind == DecisionKind.REJECTED:
            self.reject_tool(decision.tool_call_id, decided_by=decided_by, reason=decision.note,
                             **request)
        elif decision.kind == DecisionKind.EXTERNAL_RESULT:
            self.provide_external_result(decision.tool_call_id, decided_by=decided_by,
                                         result=decision.result or "", **request)
        elif decision.kind == DecisionKind.USER_INPUT:
            self.provide_user_input(decision.tool_call_id, decided_by=decided_by,
                                    values=decision.values or {}, **request)
        else:
            raise WrongDecisionKind(f"{decision.kind} is recorded by the system, not decided")

    def decisions_for(self, replies: list[Reply]) -> list[Decision]:
        """The decisions that replies make on the calls they name.

        A reply with no decision in it (``confirmed`` null, no result, no input) leaves
        its call pending: decisions may arrive one at a time. A reply that repeats the
        decision already recorded on a call is passed over beside new decisions (a
        client sending the whole list back); alone, or contradicting it, it is
        ``ToolCallNotPending`` with the decision that stands.
        """
        decisions: list[Decision] = []
        repeated: list[Json] = []
        for reply in replies:
            call = self._call(reply.tool_call_id)
            decision = _decision_of(call, reply)
            if decision is None:
                continue
            if call["state"] in (CallState.PENDING, CallState.IN_DOUBT):
                decisions.append(decision)
                continue
            standing = call["decision"]
            if standing is None:  # e.g. cancelled with its run: nothing was decided on it
                raise ToolCallNotPending(
                    f"call {reply.tool_call_id!r} is not waiting for a decision (it is "
                    f"{call['state']}; the run is {self.status})")
            if standing["kind"] != decision.kind:
                raise ToolCallNotPending(f"call {reply.tool_call_id!r} was already decided "
                                         "otherwise", decision=standing)
            repeated.append(call)
        if repeated and not decisions:
            raise ToolCallNotPending(f"call {repeated[0]['tool_call_id']!r} was already "
                                     "decided", decision=repeated[0]["decision"])
        return decisions

    def confirm_tool(
        self, tool_call_id: str, *, decided_by: str, note: str | None = None,
        approved_args: Json | None = None, request_key: str | None = None,
        request_digest: str | None = None,
    ) -> None:
        call = self._pending_call(tool_call_id, DecisionKind.CONFIRMED, decided_by)
        if approved_args is not None and approved_args == call["tool_args"]:
            approved_args = None
        if approved_args is not None and not call["editable_args"]:
            raise InvalidDecision(f"the arguments of {call['tool_name']!r} may not be edited")
        self.trigger_event(self.ToolConfirmed, tool_call_id=tool_call_id,
                           decided_by=decided_by, note=note, approved_args=approved_args,
                           request_key=request_key, request_digest=request_digest)

    def reject_tool(self, tool_call_id: str, *, decided_by: str, reason: str | None = None,
                    request_key: str | None = None, request_digest: str | None = None) -> None:
        self._pending_call(tool_call_id, DecisionKind.REJECTED, decided_by)
        self.trigger_event(self.ToolRejected, tool_call_id=tool_call_id,
                           decided_by=decided_by, reason=reason, request_key=request_key,
                           request_digest=request_digest)

    def provide_external_result(self, tool_call_id: str, *, decided_by: str, result: str,
                                request_key: str | None = None,
                                request_digest: str | None = None) -> None:
        self._pending_call(tool_call_id, DecisionKind.EXTERNAL_RESULT, decided_by)
        self.trigger_event(self.ExternalResultProvided, tool_call_id=tool_call_id,
                           decided_by=decided_by, result=result, request_key=request_key,
                           request_digest=request_digest)

    def provide_user_input(self, tool_call_id: str, *, decided_by: str, values: Json,
                           request_key: str | None = None,
                           request_digest: str | None = None) -> None:
        call = self._pending_call(tool_call_id, DecisionKind.USER_INPUT, decided_by)
        wanted = [f["name"] for f in call["user_input_schema"] or []]
        missing = [n for n in wanted if values.get(n) is None]
        if missing:
            raise InvalidDecision(f"user input is missing: {', '.join(missing)}")
        unknown = sorted(set(values) - set(wanted))
        if unknown:
            raise InvalidDecision(f"not an input field of this call: {', '.join(unknown)}")
        self.trigger_event(self.UserInputProvided, tool_call_id=tool_call_id,
                           decided_by=decided_by, values=values, request_key=request_key,
                           request_digest=request_digest)

    def expire_decision(self, tool_call_id: str, *, now: datetime,
                        next_deadline: datetime | None = None) -> None:
        """Record that nobody decided the call before its deadline: it is rejected,
        approved, or escalated (then it waits for ``escalate_to`` until
        ``next_deadline``, after which it is rejected). ``now`` is the clock's time."""
        call = self._call(tool_call_id)
        if self.status.is_final:
            raise InvalidRunTransition(f"cannot expire a decision: the run is {self.status}")
        if call["state"] != CallState.PENDING:
            raise ToolCallNotPending(
                f"call {tool_call_id!r} is not waiting for a decision (it is {call['state']})",
                decision=call["decision"])
        deadline = call.get("expires_at")  # .get: a snapshot from before expiry
        if deadline is None:
            raise InvalidDecision(f"call {tool_call_id!r} has no deadline")
        if now < deadline:
            raise InvalidRunTransition(
                f"call {tool_call_id!r} does not expire before {deadline.isoformat()}")
        action = TimeoutAction(call.get("on_timeout") or TimeoutAction.REJECT)
        if next_deadline is not None and next_deadline <= now:
            raise InvalidDecision("an escalation's new deadline must be later than now")
        escalated = action == TimeoutAction.ESCALATE
        self.trigger_event(self.DecisionExpired, tool_call_id=tool_call_id, decided_by=SYSTEM,
                           action=str(action), expired_at=deadline,
                           escalated_to=call.get("escalate_to") if escalated else None,
                           expires_at=next_deadline if escalated else None)

    def continue_run(self) -> None:
        """Continue a paused run once every call it waited for has its decision."""
        self._require_status(RunStatus.PAUSED, "continue")
        waiting = [c["tool_call_id"] for c in self.pending_calls()]
        if waiting:
            raise InvalidRunTransition(f"still waiting for: {', '.join(waiting)}")
        self.trigger_event(self.RunContinued)

    def start_tool(self, tool_call_id: str, *, deadline: datetime) -> None:
        self._require_status(RunStatus.RUNNING, "run a tool")
        call = self._call(tool_call_id)
        if call["state"] != CallState.APPROVED:
            raise InvalidRunTransition(f"call {tool_call_id!r} is {call['state']}, not approved")
        self.trigger_event(self.ToolExecutionStarted, tool_call_id=tool_call_id,
                           attempt=call["attempts"] + 1, deadline=deadline)

    def retry_tool(self, tool_call_id: str, *, now: datetime, deadline: datetime) -> None:
        """Start a call again whose outcome was never recorded by its deadline (its
        process died). Only for a tool that is safe to run twice (idempotent), which the
        caller knows: the domain does not know the tools."""
        self._require_status(RunStatus.RUNNING, "run a tool")
        call = self._call(tool_call_id)
        if call["state"] != CallState.RUNNING:
            raise InvalidRunTransition(f"call {tool_call_id!r} is {call['state']}, not running")
        if now < call["deadline"]:
            raise InvalidRunTransition(
                f"call {tool_call_id!r} may still finish (until {call['deadline'].isoformat()})")
        self.trigger_event(self.ToolExecutionStarted, tool_call_id=tool_call_id,
                           attempt=call["attempts"] + 1, deadline=deadline)

    def record_tool_result(self, tool_call_id: str, result: str) -> None:
        """Record what a started call returned. Whatever happened to the run while the
        tool ran (cancelled, failed, the call put in doubt), the outcome is recorded: the
        tool had its effect. A run that has ended takes no model turn after it."""
        self._require_started(tool_call_id)
        self.trigger_event(self.ToolExecuted, tool_call_id=tool_call_id, result=result)

    def record_tool_failure(self, tool_call_id: str, error: str) -> None:
        self._require_started(tool_call_id)
        self.trigger_event(self.ToolFailed, tool_call_id=tool_call_id, error=error)

    def mark_in_doubt(self, tool_call_id: str) -> None:
        call = self._call(tool_call_id)
        if call["state"] != CallState.RUNNING:
            raise InvalidRunTransition(f"call {tool_call_id!r} is {call['state']}, not running")
        self.trigger_event(self.ToolCallInDoubt, tool_call_id=tool_call_id)

    def complete(self, content: str | None) -> None:
        self._require_status(RunStatus.RUNNING, "complete")
        open_calls = [c["tool_call_id"] for c in self.calls_in(*_OPEN)]
        if open_calls:
            raise InvalidRunTransition(f"calls still open: {', '.join(open_calls)}")
        self.trigger_event(self.RunCompleted, content=content)

    def fail(self, error: str) -> None:
        if self.status.is_final:
            raise InvalidRunTransition(f"the run is {self.status}")
        self.trigger_event(self.RunFailed, error=error)

    def cancel(self, *, cancelled_by: str, reason: str | None = None) -> None:
        """End the run: its undecided and approved calls are cancelled with it. A call
        already running keeps running: its outcome, when it comes, is recorded."""
        if not cancelled_by.strip():
            raise InvalidDecision("a cancel names who made it (cancelled_by)")
        if self.status.is_final:
            raise InvalidRunTransition(f"the run is already {self.status}")
        self.trigger_event(self.RunCancelled, cancelled_by=cancelled_by, reason=reason)

    # ---------------------------------------------------------------- guards

    def _require_status(self, status: RunStatus, doing: str) -> None:
        if self.status != status:
            raise InvalidRunTransition(f"cannot {doing}: the run is {self.status}")

    def _call(self, tool_call_id: str) -> Json:
        try:
            return self.calls[tool_call_id]
        except KeyError:
            raise ToolCallNotFound(f"run has no tool call {tool_call_id!r}") from None

    def _pending_call(self, tool_call_id: str, kind: DecisionKind, decided_by: str) -> Json:
        if not decided_by.strip():
            raise InvalidDecision("a decision names who made it (decided_by)")
        call = self._call(tool_call_id)
        if call["decision"] is not None and call["state"] not in (CallState.PENDING,
                                                                  CallState.IN_DOUBT):
            # Already decided (the run may even have ended since): the decision stands.
            raise ToolCallNotPending(
                f"call {tool_call_id!r} was already decided ({call['decision']['kind']} "
                f"by {call['decision']['decided_by']})", decision=call["decision"])
        if self.status.is_final:
            raise InvalidRunTransition(f"cannot decide: the run is {self.status}")
        if call["state"] == CallState.IN_DOUBT:
            if kind == DecisionKind.USER_INPUT:
                raise WrongDecisionKind("a call in doubt is confirmed (run it again), "
                                        "rejected, or given its result")
            return call
        if call["state"] != CallState.PENDING:
            raise ToolCallNotPending(
                f"call {tool_call_id!r} is not waiting for a decision (it is {call['state']})",
                decision=call["decision"],
            )
        allowed = {
            Requirement.CONFIRMATION: (DecisionKind.CONFIRMED, DecisionKind.REJECTED),
            Requirement.EXTERNAL_EXECUTION: (DecisionKind.EXTERNAL_RESULT, DecisionKind.REJECTED),
            Requirement.USER_INPUT: (DecisionKind.USER_INPUT, DecisionKind.REJECTED),
        }[Requirement(call["requires"])]
        if kind not in allowed:
            raise WrongDecisionKind(
                f"call {tool_call_id!r} waits for {call['requires']}, not {kind}")
        return call

    def _require_started(self, tool_call_id: str) -> None:
        call = self._call(tool_call_id)
        # A late outcome of a call marked in doubt still resolves it.
        if call["state"] not in (CallState.RUNNING, CallState.IN_DOUBT):
            raise InvalidRunTransition(f"call {tool_call_id!r} is {call['state']}, not running")


def _close_open_calls(run: Run) -> None:
    """A run that ends takes its undecided and unstarted calls with it. A call already
    running keeps its state: its outcome, when it comes, is still recorded."""
    run.waiting_for = []
    run.paused_at = None
    for call in run.calls.values():
        if call["state"] in (CallState.PENDING, CallState.APPROVED, CallState.IN_DOUBT):
            call["state"] = CallState.CANCELLED


def _decision_of(call: Json, reply: Reply) -> Decision | None:
    """The decision a reply makes on a call, or None when it makes none."""
    call_id = call["tool_call_id"]
    requires = call["requires"]
    in_doubt = call["state"] == CallState.IN_DOUBT
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
    if reply.result is not None and call["state"] == CallState.PENDING:
        # A result for a call that waits for a confirmation or for input: the wrong kind
        # of decision, which the run refuses (409) rather than ignore.
        return Decision(call_id, DecisionKind.EXTERNAL_RESULT, result=reply.result)
    return None


def _decision(event: Aggregate.Event, kind: DecisionKind, **fields: Any) -> Json:
    return {"kind": str(kind), "decided_by": getattr(event, "decided_by"),  # noqa: B009
            "decided_at": event.timestamp, "version": event.originator_version,
            "request_key": getattr(event, "request_key", None),
            "request_digest": getattr(event, "request_digest", None), **fields}


def tool_message_content(call: Json) -> str | None:
    """What the model is told about a resolved call; None while it is unresolved."""
    state = call["state"]
    if state in (CallState.EXECUTED, CallState.ANSWERED):
        return str(call["result"])
    if state == CallState.FAILED:
        return f"Error: {call['error']}"
    if state == CallState.REJECTED:
        reason = (call["decision"] or {}).get("reason")
        return reason or "The user rejected this tool call; it was not run."
    return None
