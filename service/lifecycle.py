"""The run lifecycle: every use case on a run, in one place.

Start, decide (continue), cancel, read, expire and settle. Each use case that comes
from a caller does, in this order: load the run, check that the caller may act on it
(``service/access.py``), settle what a crashed process left behind, apply the domain
command, save, and drive the run on until it pauses or ends. Nothing is written for a
caller who may not act on the run. The system's own use cases (``expire``, ``settle``:
the sweeper's) start at the load.

Driving is the agent loop's (``agent/loop.py``, behind the ``Steps`` port): model turns
and tools. It saves through ``commit`` at the run's durable points: before any tool's
function is called, when the run pauses or ends, and, for a run followed live (``Live``),
before each model turn. A save that finds the run changed by another request (a cancel,
an expiry, another worker) keeps the tool outcomes it carried: they are recorded on the
run as the other request left it (``_rebase``), and driving stops there.

Idempotency: a decision made with an ``Idempotency-Key`` records the key and a digest of
what the request asked (``service/idempotency.py``). The same key again, from the same
actor with the same request, gets the run as that request left it
(``Decided.replayed_from``); with another request or from another actor, ``KeyReused``
(422).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from eventsourcing.persistence import IntegrityError

from domain.calls import OPEN, ToolCall
from domain.errors import InvalidRunTransition, RunError, ToolCallNotPending
from domain.keys import Role
from domain.run import Run
from domain.values import CallState, Decision, Reply, RunStatus, TimeoutAction
from service.access import (
    acting_as,
    actor,
    check_calls,
    check_decisions,
    check_run,
    read_for,
)
from service.auth import Identity
from service.idempotency import IdempotencyKey, continued_since, replayed, request_digest
from service.live import Live
from service.runs import RunNotFound, RunService

log = logging.getLogger("signoff.runs")

# Saves what the run recorded since its last save (``Superseded`` on a conflict).
Commit = Callable[[Run], None]
# Told of each save: the run as it now is, and the events just committed.
Observer = Callable[[Run, list[Any]], None]


class Steps(Protocol):
    """What the agent loop does for the lifecycle: it knows the agents, their tools and
    the model."""

    def new_run(self, agent_id: str, message: str, *, user_id: str | None,
                session_id: str | None) -> Run:
        """A new run of the agent (not saved), paused already if the agent asks for a
        confirmation before it runs. ``AgentNotFound``, ``TooLarge``."""

    def serves(self, agent_id: str) -> bool:
        """Whether the agent is served here (a run of another can be read, not driven)."""

    def check_decision(self, run: Run, decision: Decision) -> None:
        """Refuse a decision whose arguments, input or result do not fit the tool or the
        size limits (``InvalidDecision``, ``TooLarge``)."""

    def idempotent(self, run: Run, call: ToolCall) -> bool:
        """Whether the call's tool may run again after a crash."""

    def escalation_window(self, run: Run, call: ToolCall) -> timedelta:
        """How long an escalated decision waits for its group."""

    def drive(self, run: Run, commit: Commit, live: Live | None = None) -> Run:
        """Drive a RUNNING run until it pauses or ends, committing at its durable
        points (and, for ``live``, before each model turn), and commit what is left
        (for a run not RUNNING: only that)."""


class RunBusy(Exception):
    """Another request changed the run at the same moment; the caller may retry."""


class Superseded(Exception):
    """A save found the run changed by another request. ``run``: the run as it stands,
    with the tool outcomes of the refused save recorded on it."""

    def __init__(self, run: Run) -> None:
        super().__init__(f"run {run.id} changed meanwhile")
        self.run = run


@dataclass(frozen=True)
class Decided:
    """The run after a decision request. ``replayed_from``: the request repeats one
    already recorded (same key, same request, same actor), or decides nothing on a run
    decided on elsewhere (``continued_since``); nothing new was recorded, and the events
    from this version on are what that request (that decision) caused."""

    run: Run
    replayed_from: int | None = None


def _now() -> datetime:
    return datetime.now(UTC)


class RunLifecycle:
    def __init__(self, store: RunService, steps: Steps, *, tool_timeout: float = 300.0,
                 clock: Callable[[], datetime] = _now) -> None:
        """``tool_timeout``: seconds after which a run's step (a tool, a model turn) with
        no outcome recorded is taken to have died with its process."""
        self.store = store
        self.steps = steps
        self.tool_timeout = tool_timeout
        self.clock = clock

    # ------------------------------------------------------ callers' use cases

    def open_run(self, caller: Identity, agent_id: str, message: str, *,
                 user_id: str | None = None, session_id: str | None = None) -> Run:
        """A new run for the caller, checked and not yet saved: ``drive`` saves it and
        drives it. The run's user is the caller (a ``user_id`` naming anyone else is
        refused); without authentication, the ``user_id`` given."""
        return self.steps.new_run(agent_id, message, user_id=acting_as(caller, user_id),
                                  session_id=session_id)

    def get(self, caller: Identity, run_id: str, *, agent_id: str | None = None) -> Run:
        """The run, for a caller who may see it, settled first if a crashed process left
        it behind (an auditor only reads: it sees the run as recorded)."""
        run = self._load(caller, run_id, agent_id)
        if caller.role == Role.AUDITOR:
            return run
        return self._settle(run)

    def decide(self, caller: Identity, run_id: str, replies: list[Reply], *,
               agent_id: str | None = None, named: str | None = None,
               key: str | None = None, drive: bool = False,
               observer: Observer | None = None) -> Decided:
        """Record the decisions the replies make (``Run.decisions_for``, read against the
        run as it stands); continue the run when none is left pending. ``named``: the
        actor the request names (without authentication); ``key``: its
        ``Idempotency-Key``.

        Returns the run after the decisions are committed, not yet driven on, or with
        ``drive``, driven on until it pauses or ends (the decisions are then committed
        with the run's next durable point, one transaction fewer). If another request
        decides the same call at the same moment, exactly one wins; the loser gets
        ``ToolCallNotPending`` with the decision that stands.
        """
        run = self._load(caller, run_id, agent_id)
        decided_by = actor(caller, named)
        run = self._settle(run)
        request = IdempotencyKey(key, request_digest(replies)) if key else None
        if request and (since := replayed(run, request, decided_by)) is not None:
            return Decided(run, since)
        decisions = run.decisions_for(replies)
        check_decisions(caller, run, decisions)
        if not decisions:
            if not replies and (since := continued_since(run)) is not None:
                return Decided(run, since)  # decided elsewhere: as that left it
            _refuse_empty(run)
        if request is not None:
            self._refuse_a_repeat_on_doubt(run, decisions, request)
        for d in decisions:
            self.steps.check_decision(run, d)
            run.decide(d, decided_by=decided_by, request_key=key,
                       request_digest=request.digest if request else None)
        if not run.pending_calls() and run.status == RunStatus.PAUSED:
            run.continue_run()
        saves = 0

        def count(saved: Run, events: list[Any]) -> None:
            nonlocal saves
            saves += 1
            if observer is not None:
                observer(saved, events)

        commit = self._committer(count)
        try:
            if drive:
                return Decided(self.steps.drive(run, commit))
            commit(run)
        except Superseded as e:
            if saves:  # the decisions stand; the run went on elsewhere
                return Decided(e.run)
            return self._lost_race(e.run, decisions, request, decided_by)
        return Decided(run)

    def cancel(self, caller: Identity, run_id: str, *, agent_id: str | None = None,
               named: str | None = None, reason: str | None = None) -> Run:
        """End a run that has not ended. The caller must be one who may decide every
        call it leaves open (its agent, tools and escalation groups); a client, its own
        run. A tool already running finishes, and its outcome is recorded."""
        cancelled_by = actor(caller, named)
        for _ in range(3):
            run = self._load(caller, run_id, agent_id)
            check_calls(caller, run, [c.tool_call_id for c in run.calls_in(*OPEN)])
            run.cancel(cancelled_by=cancelled_by, reason=reason)
            try:
                self._committer(None)(run)
            except Superseded:
                continue  # changed meanwhile (a tool's outcome): check and cancel again
            return run
        raise RunBusy("the run kept changing while cancelling; try again")

    def drive(self, run: Run, observer: Observer | None = None,
              live: Live | None = None) -> Run:
        """Drive a run on until it pauses or ends, saving at its durable points (for a
        run that waits or has ended: save what it recorded), ``live`` following it. If
        another request saves the run meanwhile, driving stops, and the run as that
        request left it is returned, with this request's tool outcomes recorded on it."""
        try:
            return self.steps.drive(run, self._committer(observer), live)
        except Superseded as e:
            log.warning("run %s changed while being driven; its newer state stands", run.id)
            return e.run

    # ------------------------------------------------------- system use cases

    def expire(self, run_id: str, run: Run | None = None) -> Run:
        """Record ``DecisionExpired`` for every call of a paused run whose decision is
        past its deadline (by the clock), then go on as after decisions. A no-op for a
        run with nothing due. ``run``: as the caller loaded it.

        If a reviewer decides (or another sweeper expires) the call at the same moment,
        exactly one save wins; the loser's work is dropped (no outcome is in it) and the
        run as the winner left it is returned."""
        run = run or self.store.get_run(run_id)
        if run.status != RunStatus.PAUSED:
            return run
        now = self.clock()
        due = [c for c in run.calls_in(CallState.PENDING)
               if c.expires_at is not None and c.expires_at <= now]
        if not due:
            return run
        for call in due:
            next_deadline = (now + self.steps.escalation_window(run, call)
                             if call.on_timeout == TimeoutAction.ESCALATE else None)
            run.expire_decision(call.tool_call_id, now=now, next_deadline=next_deadline)
            log.info("decision on call %s of %s expired (%s)", call.tool_call_id,
                     call.tool_name, call.on_timeout)
        if not run.pending_calls():
            run.continue_run()
        try:  # the expiry stands even if the run cannot be driven on (its agent is gone)
            self._committer(None)(run)
        except Superseded as e:
            return e.run
        return self.drive(run)

    def settle(self, run_id: str) -> Run:
        """Settle a run a crashed process left behind (a no-op for a healthy one)."""
        return self._settle(self.store.get_run(run_id))

    # ---------------------------------------------------------------- inside

    def _load(self, caller: Identity, run_id: str, agent_id: str | None) -> Run:
        run = read_for(caller, self.store, run_id, lambda: self.store.get_run(run_id))
        if agent_id is not None and run.agent_id != agent_id:
            raise RunNotFound(f"agent {agent_id!r} has no run {run_id!r}")
        check_run(caller, run)
        return run

    def _settle(self, run: Run) -> Run:
        """A call whose deadline passed with no outcome recorded is in doubt: a person
        decides (it may have had its effect), unless its tool is idempotent, when it is
        run again. A run left ``RUNNING`` with nothing in flight for longer than the
        tool timeout is driven on. On a run that ended meanwhile (cancelled while the
        tool ran) such a call is in doubt too, and nothing runs again."""
        now = self.clock()
        running = run.calls_in(CallState.RUNNING)
        expired = [c for c in running if c.deadline is not None and c.deadline < now]
        if run.status.is_final and expired:
            for call in expired:
                run.mark_in_doubt(call.tool_call_id)
            return self.drive(run)  # saves what it recorded
        if run.status != RunStatus.RUNNING:
            return run
        idle = run.modified_on + timedelta(seconds=self.tool_timeout) < now
        if not (expired or (idle and not running)):
            return run
        for call in expired:
            if not self.steps.idempotent(run, call):
                run.mark_in_doubt(call.tool_call_id)
                log.warning("call %s of run %s is in doubt: its outcome was not recorded "
                            "by its deadline", call.tool_call_id, run.id)
        if run.pending_calls():
            run.pause()
        if run.status == RunStatus.RUNNING and not self.steps.serves(run.agent_id):
            log.warning("run %s is stale, and its agent %r is not served here", run.id,
                        run.agent_id)
            return run
        return self.drive(run)

    def _committer(self, observer: Observer | None) -> Commit:
        def commit(run: Run) -> None:
            events = list(run.pending_events)
            if not events:
                return
            try:
                self.store.save(run)
            except IntegrityError:
                raise Superseded(self._rebase(run, events, observer)) from None
            if observer is not None:
                observer(run, events)

        return commit

    def _rebase(self, run: Run, events: Iterable[Any], observer: Observer | None) -> Run:
        """Another request saved the run first. Of the refused save, only the tool
        outcomes are kept: a tool that ran had its effect, so its outcome is recorded
        on the run as the other request left it (a cancelled run records it too, and
        takes no model turn after it). The rest (decisions, model turns, starts) was
        not acted on outside, and the other request's state stands."""
        outcomes = [e for e in events if isinstance(e, Run.ToolExecuted | Run.ToolFailed)]
        for _ in range(10):
            fresh = self.store.get_run(run.id)
            for e in outcomes:
                try:
                    if isinstance(e, Run.ToolExecuted):
                        fresh.record_tool_result(e.tool_call_id, e.result)
                    else:
                        fresh.record_tool_failure(e.tool_call_id, e.error)
                except RunError as refused:  # e.g. another attempt's outcome stands
                    log.warning("outcome of call %s of run %s not recorded: %s",
                                e.tool_call_id, run.id, refused)
            pending = list(fresh.pending_events)
            if not pending:
                return fresh
            try:
                self.store.save(fresh)
            except IntegrityError:
                continue
            if observer is not None:
                observer(fresh, pending)
            return fresh
        log.error("run %s: outcomes %s could not be recorded (the run kept changing)",
                  run.id, [(e.tool_call_id, type(e).__name__) for e in outcomes])
        raise RunBusy("the run kept changing while recording a tool's outcome")

    def _refuse_a_repeat_on_doubt(self, run: Run, decisions: list[Decision],
                                  key: IdempotencyKey) -> None:
        """A request sent again with its key after its decision was recorded and the
        call then put in doubt (the tool started; its outcome was never recorded) must
        not decide the call a second time: whether to run it again is a new question,
        for a new decision with a new key. ``ToolCallNotPending`` with the decision the
        key made."""
        in_doubt = {d.tool_call_id for d in decisions
                    if run.calls[d.tool_call_id].state == CallState.IN_DOUBT}
        if not in_doubt:
            return
        for e in self.store.run_events(run.id):
            call_id = getattr(e, "tool_call_id", None)
            if call_id in in_doubt and getattr(e, "request_key", None) == key.key:
                before = self.store.get_run(run.id, version=e.originator_version)
                raise ToolCallNotPending(
                    f"call {call_id!r} was decided by an earlier request with this "
                    "Idempotency-Key, and is in doubt since (its tool started; its outcome "
                    "was never recorded): decide it again, with a new key",
                    decision=before.calls[call_id].decision)

    def _lost_race(self, fresh: Run, decisions: list[Decision], key: IdempotencyKey | None,
                   decided_by: str) -> Decided:
        """The first save of a decision request was refused: someone else saved the run
        first. An earlier attempt of this same request (same key) counts as this one;
        a call decided meanwhile is 409 with the decision that stands."""
        if key is not None and (since := replayed(fresh, key, decided_by)) is not None:
            return Decided(fresh, since)
        for d in decisions:
            call = fresh.calls[d.tool_call_id]
            if not call.waiting:
                raise ToolCallNotPending(f"call {d.tool_call_id!r} was decided by another "
                                         "request", decision=call.decision)
        raise RunBusy("the run changed while deciding; try again")


def _refuse_empty(run: Run) -> None:
    """A request that decides nothing: why, as the run stands."""
    if run.status.is_final:
        raise InvalidRunTransition(f"the run is {run.status}; there is nothing to continue")
    if not run.pending_calls():
        raise InvalidRunTransition(f"the run is {run.status} and waits for no decision")
    raise NothingDecided("the request carries no decision for any pending call")


class NothingDecided(Exception):
    """A decision request that decides nothing on a run that waits for decisions (422)."""
