"""The commands of a run: ``Run`` (domain/run.py) takes them from ``RunCommands``.

Each command checks the run's rules against its state, raises a domain error when they
are broken, and otherwise triggers one event of the run, whose ``apply`` changes the
state. Guards sit in these public methods, and the events only record what passed them
(eventsourcing's "Raising exceptions in the body of decorated methods").
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from domain.calls import OPEN, PolicyOutcome, ToolCall, check_request, find_call
from domain.decisions import check_decidable, read_replies
from domain.errors import (
    InvalidDecision,
    InvalidRunTransition,
    ToolCallNotPending,
    WrongDecisionKind,
)
from domain.values import (
    SYSTEM,
    CallState,
    Decision,
    DecisionKind,
    Reply,
    Requirement,
    RunStatus,
    TimeoutAction,
)

if TYPE_CHECKING:
    from eventsourcing.domain import Aggregate

Json = dict[str, Any]


class RunCommands:
    """What may be done to a run. A mixin of ``Run``: the state, the queries and the
    events it uses are the run's, declared here for the type checker only, so that this
    module needs nothing of domain/run.py (which builds on it)."""

    if TYPE_CHECKING:
        status: RunStatus
        calls: dict[str, ToolCall]

        def pending_calls(self) -> list[ToolCall]: ...
        def calls_in(self, *states: CallState) -> list[ToolCall]: ...
        def trigger_event(self, event_class: Any, **kwargs: Any) -> None: ...

        ModelResponded: type[Aggregate.Event]
        ToolCallRequested: type[Aggregate.Event]
        RunPaused: type[Aggregate.Event]
        ToolConfirmed: type[Aggregate.Event]
        ToolRejected: type[Aggregate.Event]
        ExternalResultProvided: type[Aggregate.Event]
        UserInputProvided: type[Aggregate.Event]
        DecisionExpired: type[Aggregate.Event]
        RunContinued: type[Aggregate.Event]
        ToolExecutionStarted: type[Aggregate.Event]
        ToolExecuted: type[Aggregate.Event]
        ToolFailed: type[Aggregate.Event]
        ToolCallInDoubt: type[Aggregate.Event]
        RunCompleted: type[Aggregate.Event]
        RunFailed: type[Aggregate.Event]
        RunCancelled: type[Aggregate.Event]

    # ---------------------------------------------------------- the model

    def record_model_response(self, *, model: str, provider: str, content: str | None,
                              tool_calls: list[Json], input_tokens: int = 0,
                              output_tokens: int = 0) -> None:
        """``tool_calls``: what the model proposed, ``[{"id", "name", "args"}]``."""
        self._require_status(RunStatus.RUNNING, "record a model response")
        if self.calls_in(*OPEN):
            raise InvalidRunTransition("earlier tool calls are still open")
        ids = [c["id"] for c in tool_calls]
        if len(set(ids)) != len(ids) or any(i in self.calls for i in ids):
            raise InvalidDecision("tool call ids must be unique within a run")
        self.trigger_event(self.ModelResponded, model=model, provider=provider,
                           content=content, tool_calls=tool_calls,
                           input_tokens=input_tokens, output_tokens=output_tokens)

    def request_tool_call(
        self, *, tool_call_id: str, tool_name: str, tool_args: Json,
        requires: Requirement | None = None, confirmation_message: str | None = None,
        user_input_schema: list[Json] | None = None, stop_after_tool_call: bool = False,
        editable_args: bool = True, policy: PolicyOutcome | None = None,
        expires_at: datetime | None = None, on_timeout: TimeoutAction | None = None,
        escalate_to: str | None = None,
    ) -> None:
        """``policy``: the outcome of the policy that decided whether the call needs a
        confirmation, decided outside the domain. ``expires_at``: how long the decision
        may wait; then ``on_timeout`` (default reject) happens: see ``expire_decision``."""
        self._require_status(RunStatus.RUNNING, "request a tool call")
        if tool_call_id in self.calls:
            raise InvalidDecision(f"tool call {tool_call_id!r} was already requested")
        requires = Requirement(requires) if requires else None
        on_timeout = check_request(requires, policy, expires_at, on_timeout, escalate_to)
        self.trigger_event(
            self.ToolCallRequested, tool_call_id=tool_call_id, tool_name=tool_name,
            tool_args=tool_args, requires=str(requires) if requires else None,
            confirmation_message=confirmation_message, user_input_schema=user_input_schema,
            stop_after_tool_call=stop_after_tool_call, editable_args=editable_args,
            policy=policy.as_dict() if policy else None, expires_at=expires_at,
            on_timeout=str(on_timeout) if on_timeout else None, escalate_to=escalate_to)

    # ---------------------------------------------------------- decisions

    def pause(self) -> None:
        """Pause until every call that waits for a decision has one."""
        self._require_status(RunStatus.RUNNING, "pause")
        waiting = [c.tool_call_id for c in self.pending_calls()]
        if not waiting:
            raise InvalidRunTransition("nothing to wait for: no call needs a decision")
        self.trigger_event(self.RunPaused, waiting_for=waiting)

    def decide(self, decision: Decision, *, decided_by: str, request_key: str | None = None,
               request_digest: str | None = None) -> None:
        """Record one decision of a person (or a client) on a call that waits for it.
        ``request_key`` / ``request_digest``: the Idempotency-Key of the request that
        carried it, and a digest of what that request asked."""
        request = {"request_key": request_key, "request_digest": request_digest}
        call_id = decision.tool_call_id
        match decision.kind:
            case DecisionKind.CONFIRMED:
                self.confirm_tool(call_id, decided_by=decided_by, note=decision.note,
                                  approved_args=decision.approved_args, **request)
            case DecisionKind.REJECTED:
                self.reject_tool(call_id, decided_by=decided_by, reason=decision.note,
                                 **request)
            case DecisionKind.EXTERNAL_RESULT:
                self.provide_external_result(call_id, decided_by=decided_by,
                                             result=decision.result or "", **request)
            case DecisionKind.USER_INPUT:
                self.provide_user_input(call_id, decided_by=decided_by,
                                        values=decision.values or {}, **request)
            case _:
                raise WrongDecisionKind(f"{decision.kind} is recorded by the system, "
                                        "not decided")

    def decisions_for(self, replies: list[Reply]) -> list[Decision]:
        """The decisions that replies make on the calls they name.

        A reply with no decision in it (``confirmed`` null, no result, no input) leaves
        its call pending: decisions may arrive one at a time. A reply that repeats the
        decision already recorded on a call is passed over beside new decisions (a
        client sending the whole list back); alone, or contradicting it, it is
        ``ToolCallNotPending`` with the decision that stands.
        """
        return read_replies(self.calls, replies, self.status)

    def confirm_tool(self, tool_call_id: str, *, decided_by: str, note: str | None = None,
                     approved_args: Json | None = None, request_key: str | None = None,
                     request_digest: str | None = None) -> None:
        call = self._pending_call(tool_call_id, DecisionKind.CONFIRMED, decided_by)
        if approved_args is None and call.state == CallState.IN_DOUBT:
            approved_args = call.approved_args  # run again as the attempt in doubt ran
        if approved_args is not None and approved_args == call.tool_args:
            approved_args = None
        if approved_args is not None and not call.editable_args:
            raise InvalidDecision(f"the arguments of {call.tool_name!r} may not be edited")
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
        wanted = [f["name"] for f in call.user_input_schema or []]
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
        if call.state != CallState.PENDING:
            raise ToolCallNotPending(
                f"call {tool_call_id!r} is not waiting for a decision (it is {call.state})",
                decision=call.decision)
        deadline = call.expires_at
        if deadline is None:
            raise InvalidDecision(f"call {tool_call_id!r} has no deadline")
        if now < deadline:
            raise InvalidRunTransition(
                f"call {tool_call_id!r} does not expire before {deadline.isoformat()}")
        action = call.on_timeout or TimeoutAction.REJECT
        if next_deadline is not None and next_deadline <= now:
            raise InvalidDecision("an escalation's new deadline must be later than now")
        escalated = action == TimeoutAction.ESCALATE
        self.trigger_event(self.DecisionExpired, tool_call_id=tool_call_id, decided_by=SYSTEM,
                           action=str(action), expired_at=deadline,
                           escalated_to=call.escalate_to if escalated else None,
                           expires_at=next_deadline if escalated else None)

    def continue_run(self) -> None:
        """Continue a paused run once every call it waited for has its decision."""
        self._require_status(RunStatus.PAUSED, "continue")
        waiting = [c.tool_call_id for c in self.pending_calls()]
        if waiting:
            raise InvalidRunTransition(f"still waiting for: {', '.join(waiting)}")
        self.trigger_event(self.RunContinued)

    # -------------------------------------------------------------- tools

    def start_tool(self, tool_call_id: str, *, deadline: datetime) -> None:
        self._require_status(RunStatus.RUNNING, "run a tool")
        call = self._call(tool_call_id)
        if call.state != CallState.APPROVED:
            raise InvalidRunTransition(f"call {tool_call_id!r} is {call.state}, not approved")
        self.trigger_event(self.ToolExecutionStarted, tool_call_id=tool_call_id,
                           attempt=call.attempts + 1, deadline=deadline)

    def retry_tool(self, tool_call_id: str, *, now: datetime, deadline: datetime) -> None:
        """Start a call again whose outcome was never recorded by its deadline (its
        process died). Only for a tool that is safe to run twice (idempotent), which the
        caller knows: the domain does not know the tools."""
        self._require_status(RunStatus.RUNNING, "run a tool")
        call = self._call(tool_call_id)
        if call.state != CallState.RUNNING:
            raise InvalidRunTransition(f"call {tool_call_id!r} is {call.state}, not running")
        if call.deadline is not None and now < call.deadline:
            raise InvalidRunTransition(
                f"call {tool_call_id!r} may still finish (until {call.deadline.isoformat()})")
        self.trigger_event(self.ToolExecutionStarted, tool_call_id=tool_call_id,
                           attempt=call.attempts + 1, deadline=deadline)

    def record_tool_result(self, tool_call_id: str, result: str) -> None:
        """Record what a started call returned. Whatever happened to the run while the
        tool ran (cancelled, failed, the call put in doubt), the outcome is recorded: the
        tool had its effect. A run that has ended takes no model turn after it."""
        self._require_started(tool_call_id)
        self.trigger_event(self.ToolExecuted, tool_call_id=tool_call_id, result=result)
        self._go_on_when_nothing_waits()

    def record_tool_failure(self, tool_call_id: str, error: str) -> None:
        self._require_started(tool_call_id)
        self.trigger_event(self.ToolFailed, tool_call_id=tool_call_id, error=error)
        self._go_on_when_nothing_waits()

    def _go_on_when_nothing_waits(self) -> None:
        """A late outcome resolved the call in doubt a paused run waited for: with
        nothing else to wait for, the run goes on (a paused run always waits for
        something)."""
        if self.status == RunStatus.PAUSED and not self.pending_calls():
            self.trigger_event(self.RunContinued)

    def mark_in_doubt(self, tool_call_id: str) -> None:
        call = self._call(tool_call_id)
        if call.state != CallState.RUNNING:
            raise InvalidRunTransition(f"call {tool_call_id!r} is {call.state}, not running")
        self.trigger_event(self.ToolCallInDoubt, tool_call_id=tool_call_id)

    # ---------------------------------------------------------------- end

    def complete(self, content: str | None) -> None:
        self._require_status(RunStatus.RUNNING, "complete")
        open_calls = [c.tool_call_id for c in self.calls_in(*OPEN)]
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

    # ------------------------------------------------------------- guards

    def _require_status(self, status: RunStatus, doing: str) -> None:
        if self.status != status:
            raise InvalidRunTransition(f"cannot {doing}: the run is {self.status}")

    def _call(self, tool_call_id: str) -> ToolCall:
        return find_call(self.calls, tool_call_id)

    def _pending_call(self, tool_call_id: str, kind: DecisionKind,
                      decided_by: str) -> ToolCall:
        if not decided_by.strip():
            raise InvalidDecision("a decision names who made it (decided_by)")
        call = self._call(tool_call_id)
        check_decidable(call, kind, self.status)
        return call

    def _require_started(self, tool_call_id: str) -> None:
        call = self._call(tool_call_id)
        # A late outcome of a call marked in doubt still resolves it.
        if call.state not in (CallState.RUNNING, CallState.IN_DOUBT):
            raise InvalidRunTransition(f"call {tool_call_id!r} is {call.state}, not running")
